"""Generate tiny random Gemma 1 / 2 / 3 checkpoints plus transformers reference outputs.

Makes:
  tests/fixtures/tiny-gemma1/  config.json, model.safetensors (float32, single file),
                               config.v4.json, reference.json
  tests/fixtures/tiny-gemma2/  config.json, model.safetensors (float32, single file),
                               config.v4.json, reference.json
  tests/fixtures/tiny-gemma3/  config.json, model-0000N-of-0000M.safetensors (bfloat16, sharded),
                               model.safetensors.index.json, config.v4.json, config.v5.json,
                               reference.json
  tests/fixtures/tiny-gemma1-gelu-legacy/
                               config.json (4.x gemma-2b layout, legacy hidden_act="gelu"),
                               model.safetensors (bfloat16, single file), config.v5.json,
                               reference.json

From: nothing but transformers model classes (GemmaForCausalLM, Gemma2ForCausalLM,
Gemma3ForCausalLM + Gemma3TextConfig) built from small configs in code, with weights drawn from a
fixed-seed torch.Generator (no downloads).

config.json is whatever the installed transformers' save_pretrained writes (5.x form when
transformers is 5.x: `rope_parameters`, `layer_types`, `dtype`). config.v4.json is a hand-converted
transformers-4.x form of the same model (top-level `rope_theta` / `rope_local_base_freq` /
`sliding_window_pattern` / `torch_dtype`, no `rope_parameters` / `layer_types`); config.v5.json
(Gemma3 only) is the 5.x form. The script asserts that every form loads back into an identical
config.

tiny-gemma1-gelu-legacy pins the legacy activation key of the official gemma-2b/7b configs: its
config.json is the 4.x layout with `"hidden_act": "gelu"` and `"hidden_activation": null`, which
transformers runs as the tanh approximation, not exact GELU (5.x: GemmaConfig.__post_init__ rewrites
the legacy "gelu"; 4.x before PR #35235, e.g. 4.46: GemmaMLP read only `hidden_activation`, None ->
tanh; 4.x after it, e.g. 4.57, ran `hidden_act` literally, the regression 5.x fixed); config.v5.json
is what 5.x save_pretrained writes for the same model (`"hidden_act": "gelu_pytorch_tanh"`). Its "ablations"
hold the NLLs with exact GELU forced (what a loader reading the legacy "gelu" literally computes):
the worst per-token NLL moves by several times the 1e-4 the Rust tests allow.

reference.json: per-token NLL for two random sequences (each starts with BOS=2), computed in
float32 with attn_implementation="eager" on the checkpoint loaded back from disk (for the bf16 ones
the weights are upcast to float32 at load, like the Rust loader does). Each sequence is run
on its own (batch 1, no padding). nll[i][t] = -log p(input_ids[i][t+1] | input_ids[i][..=t]).
"ablations" holds mean NLLs with a feature switched off, proving softcaps / sliding windows bite.

Deterministic (seeded). Run from the repo root (optionally naming the fixtures to rebuild):
    /work/venv/py/bin/python scripts/gen_tiny_gemma.py [tiny-gemma1 ...]
Outputs are committed; Rust tests and CI never need Python.
"""
import copy
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
)

OUT = "tests/fixtures"
VOCAB = 256
BOS, EOS, PAD = 2, 1, 0
SEQ_LENS = (21, 24)


def common(**kw):
    base = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        rms_norm_eps=1e-6,
        max_position_embeddings=128,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=True,
        attention_bias=False,
    )
    base.update(kw)
    return base


def make_configs():
    g1 = GemmaConfig(**common(
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,          # multi-query attention
        head_dim=24,                    # != hidden/heads (16)
        hidden_act="gelu_pytorch_tanh",
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ))
    g2 = Gemma2Config(**common(
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,          # GQA
        head_dim=16,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=24,       # != head_dim
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ))
    g3 = Gemma3TextConfig(**common(
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,          # GQA
        head_dim=32,                    # != hidden/heads (16)
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=24,       # != head_dim
        sliding_window=4,
        sliding_window_pattern=2,       # -> layers 1 and 3 full, 0 and 2 sliding
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    ))
    # Same shape as g1; saved as bf16 (like gemma-2b) and rewritten to the gemma-2b config layout.
    g1_legacy = copy.deepcopy(g1)
    return g1, g2, g3, g1_legacy


def randomize(model, seed):
    """Overwrite every parameter with seeded, non-trivial values.

    Linear weights ~ N(0, 1/fan_in), q_proj/k_proj ~ N(0, (2.5^2)/fan_in) so attention scores are large
    enough for the Gemma2 attention softcap to bite; embeddings ~ N(0, 0.25^2) so that tied-head logits
    have a spread of a few units; every RMSNorm weight ~ N(0, 0.3^2) so the Gemma (1 + w) scaling
    matters.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(remove_duplicate=True), key=lambda kv: kv[0]):
            if "norm" in name:
                std = 0.3
            elif "embed_tokens" in name:
                std = 0.25
            elif "q_proj" in name or "k_proj" in name:
                std = 2.5 * p.shape[-1] ** -0.5
            else:
                std = p.shape[-1] ** -0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)


def make_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for n in SEQ_LENS:
        body = torch.randint(3, VOCAB, (n - 1,), generator=g).tolist()
        seqs.append([BOS] + body)
    return seqs


def nll_for(model, ids):
    with torch.no_grad():
        x = torch.tensor([ids], dtype=torch.long)
        logits = model(input_ids=x, use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits[:-1].double(), dim=-1)
        nll = -logp.gather(1, x[0, 1:, None])[:, 0]
    return nll.tolist(), logits


def load(cls, path, **cfg_overrides):
    cfg = cls.config_class.from_pretrained(path)
    for k, v in cfg_overrides.items():
        setattr(cfg, k, v)
    m = cls.from_pretrained(path, config=cfg, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def mean(xs):
    return sum(xs) / len(xs)


def run_all(model, seqs):
    nlls, last = [], None
    for i, s in enumerate(seqs):
        nll, logits = nll_for(model, s)
        nlls.append(nll)
        if i == 0:
            last = logits
    return nlls, last


def to_v4(cfg_dict, model_type):
    """Hand-convert a transformers-5.x config dict to the 4.x layout."""
    d = copy.deepcopy(cfg_dict)
    rp = d.pop("rope_parameters", None)
    if model_type == "gemma3_text":
        d["rope_theta"] = rp["full_attention"]["rope_theta"]
        d["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        d["sliding_window_pattern"] = d.pop("_sliding_window_pattern")
    else:
        d["rope_theta"] = rp["rope_theta"]
    d["rope_scaling"] = None
    d.pop("layer_types", None)
    if "dtype" in d:
        d["torch_dtype"] = d.pop("dtype")
    d["transformers_version"] = "4.x (hand-converted by scripts/gen_tiny_gemma.py)"
    return d


def to_gemma2b_layout(cfg_dict):
    """The 4.x layout of the official gemma-2b/7b config.json: legacy `hidden_act: "gelu"` (meant as
    the tanh approximation) beside `hidden_activation: null`."""
    assert cfg_dict["model_type"] == "gemma" and cfg_dict["hidden_act"] == "gelu_pytorch_tanh"
    d = to_v4(cfg_dict, "gemma")
    d["hidden_act"] = "gelu"
    d["hidden_activation"] = None
    d.pop("use_bidirectional_attention", None)  # a later key, not in gemma-2b's config
    d["transformers_version"] = "4.x gemma-2b layout (hand-converted by scripts/gen_tiny_gemma.py)"
    return d


def check_same_config(cls, d_a, d_b):
    a = cls.config_class.from_dict(copy.deepcopy(d_a)).to_dict()
    b = cls.config_class.from_dict(copy.deepcopy(d_b)).to_dict()
    # hidden_activation: a key GemmaConfig (5.x) does not have; kept as an extra attribute, unread
    for k in ("transformers_version", "dtype", "torch_dtype", "hidden_activation"):
        a.pop(k, None)
        b.pop(k, None)
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def build(name, cls, cfg, seed, dtype_saved, shard=None, legacy_gelu=False):
    out = os.path.join(OUT, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    torch.manual_seed(seed)
    model = cls(cfg)
    randomize(model, seed)
    model.eval()
    if dtype_saved == "bfloat16":
        model = model.to(torch.bfloat16)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, safe_serialization=True, **kw)
    # save_pretrained may write generation_config.json; not needed by the Rust side
    gc = os.path.join(out, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)

    with open(os.path.join(out, "config.json")) as f:
        cfg_json = json.load(f)
    model_type = cfg_json["model_type"]
    if legacy_gelu:
        # config.json becomes the gemma-2b layout; the 5.x form save_pretrained wrote is config.v5.json
        legacy = to_gemma2b_layout(cfg_json)
        for fname, d in (("config.json", legacy), ("config.v5.json", cfg_json)):
            with open(os.path.join(out, fname), "w") as f:
                json.dump(d, f, indent=2, sort_keys=True)
                f.write("\n")
        check_same_config(cls, cfg_json, legacy)
        loaded = cls.config_class.from_pretrained(out)
        assert loaded.hidden_act == "gelu_pytorch_tanh", loaded.hidden_act
    else:
        v4 = to_v4(cfg_json, model_type)
        with open(os.path.join(out, "config.v4.json"), "w") as f:
            json.dump(v4, f, indent=2, sort_keys=True)
            f.write("\n")
        check_same_config(cls, cfg_json, v4)
    if model_type == "gemma3_text":
        # installed transformers is 5.x -> config.json already is the 5.x form
        assert int(transformers.__version__.split(".")[0]) >= 5, "add a hand-written 5.x converter"
        with open(os.path.join(out, "config.v5.json"), "w") as f:
            json.dump(cfg_json, f, indent=2, sort_keys=True)
            f.write("\n")

    # ---- reference computation on the checkpoint as saved (bf16 -> f32 upcast for Gemma3) ----
    seqs = make_inputs(seed + 1000)
    ref_model = load(cls, out)
    nlls, last = run_all(ref_model, seqs)
    ablations = {"mean_nll": mean([mean(n) for n in nlls])}
    if model_type in ("gemma2", "gemma3_text"):
        m = load(cls, out, sliding_window=10_000)
        ablations["mean_nll_no_sliding_window"] = mean([mean(n) for n in run_all(m, seqs)[0]])
    if model_type == "gemma2":
        m = load(cls, out, attn_logit_softcapping=None)
        ablations["mean_nll_no_attn_softcap"] = mean([mean(n) for n in run_all(m, seqs)[0]])
        m = load(cls, out, final_logit_softcapping=None)
        n_nocap, last_nocap = run_all(m, seqs)
        ablations["mean_nll_no_final_softcap"] = mean([mean(n) for n in n_nocap])
        ablations["max_abs_logit_seq0_before_final_softcap"] = float(last_nocap.abs().max())
    if legacy_gelu:
        # what a loader mapping the legacy "gelu" to exact GELU computes
        m = load(cls, out, hidden_act="gelu")
        assert isinstance(m.model.layers[0].mlp.act_fn, transformers.activations.GELUActivation)
        n_exact = run_all(m, seqs)[0]
        ablations["mean_nll_exact_gelu"] = mean([mean(n) for n in n_exact])
        ablations["max_abs_dnll_exact_gelu"] = max(
            abs(a - b) for ns, ne in zip(nlls, n_exact) for a, b in zip(ns, ne)
        )
        assert ablations["max_abs_dnll_exact_gelu"] > 5e-4, ablations
    ablations["max_abs_logit_seq0"] = float(last.abs().max())
    for k, v in ablations.items():
        if k.startswith("mean_nll_no"):
            assert abs(v - ablations["mean_nll"]) > 1e-3, f"{name}: {k} does not change the result"

    ref = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model_type": model_type,
        "dtype_saved": dtype_saved,
        "compute": "float32 (saved weights upcast), attn_implementation=eager, each sequence alone (batch 1), CPU",
        "nll_definition": "nll[i][t] = -log p(input_ids[i][t+1] | input_ids[i][0..=t]); log_softmax in float64 of float32 logits",
        "sliding_window_semantics": "transformers: query q attends key k iff q-W < k <= q (W keys incl. itself)",
        "input_ids": seqs,
        "nll": nlls,
        "mean_nll_per_seq": [mean(n) for n in nlls],
        "logits_last": last[-1, :8].tolist(),
        "ablations": ablations,
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    files = sorted(os.listdir(out))
    print(f"{name}: {model_type} mean_nll={ablations['mean_nll']:.4f} ablations={ablations} files={files}")


def main():
    torch.use_deterministic_algorithms(True)
    g1, g2, g3, g1_legacy = make_configs()
    builds = {
        "tiny-gemma1": lambda n: build(n, GemmaForCausalLM, g1, seed=1, dtype_saved="float32"),
        "tiny-gemma2": lambda n: build(n, Gemma2ForCausalLM, g2, seed=2, dtype_saved="float32"),
        "tiny-gemma3": lambda n: build(
            n, Gemma3ForCausalLM, g3, seed=3, dtype_saved="bfloat16", shard="150KB"
        ),
        "tiny-gemma1-gelu-legacy": lambda n: build(
            n, GemmaForCausalLM, g1_legacy, seed=4, dtype_saved="bfloat16", legacy_gelu=True
        ),
    }
    names = sys.argv[1:] or list(builds)
    for n in names:
        builds[n](n)


if __name__ == "__main__":
    main()
