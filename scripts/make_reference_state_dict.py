"""Make a reference-layout HippoFormer checkpoint with random values, for the import tests.

Makes:
  tests/fixtures/reference-checkpoint/hippoformer_ref.pt
      torch.save({'model_state_dict': sd, 'step': 1234, 'config': {...}}) where `sd` has the key
      names and shapes of the reference Python HippoFormer's `model.state_dict()`
      (github.com/Gustav-Proxi/HippoFormer, hippoformer/{model,salience/gate,memory/buffer,
      drift/calibrator}.py) over the tiny Gemma 3 fixture with peft LoRA on q_proj and v_proj:
        base_model.base_model.model.model.…            the peft-wrapped base (frozen weights,
                                                       `….base_layer.weight` and
                                                       `….lora_A.default.weight` /
                                                       `….lora_B.default.weight` on targets)
        salience_gate.local_gate.{0,3,5}.*             Sequential(Linear, GELU, Dropout,
                                                       Linear, GELU, Linear)
        salience_gate.global_{query,key,value,proj}.*  Linear
        salience_gate.temporal_smooth.{weight,bias}    Conv1d(1, 1, K, padding=K-1)
        salience_gate.{threshold,importance_lo,importance_hi,pathway_weight}  0-d Parameters
        memory_consolidator.{keys,values,priorities,ages,valid_mask,write_ptr,total_writes}
                                                       buffers
        memory_consolidator.{key,value,query,consolidation}_proj.*  Linear (all with bias)
        drift_calibrator.{anchors,anchor_initialized,affine_A,affine_b,running_mean,running_var,
                          n_updates,drift_history,drift_ptr}
        output_fusion.cross_attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}
                                                       nn.MultiheadAttention(batch_first=True)
        output_fusion.gate.{0,2}.*                     Sequential(Linear(2D, D), GELU,
                                                       Linear(D, 1), Sigmoid)
        output_fusion.norm.{weight,bias}               LayerNorm
        lm_head.weight                                 the base's (tied) head
      The frozen base weights are float16 (the reference loads its base in float16); everything
      else is float32 (bool / int64 for a few buffers).
      The modules below are stand-ins written here with the reference's parameter layout
      (same attribute names, types and shapes); the reference package itself is not needed.
  tests/fixtures/reference-checkpoint/hippoformer_ref.json
      per tensor: dtype, shape, sum (float64), the first 8 values (flattened, row-major); and
      `checks`: values computed here that the Rust import must reproduce (the LoRA delta
      B·A·alpha/r of layer 0's q_proj, the folded threshold, the reversed smoothing kernel).
  tests/fixtures/reference-checkpoint/partial_state_dict.pt
      a bare state dict (no `model_state_dict` wrapper, no step or config): the salience gate's
      tensors only, plus two keys the reference does not have (`salience_gate.extra_scale`,
      `unknown_module.weight`) — for the "unknown keys are reported" and "missing tensors are
      reported" paths.

Every trainable value is drawn from a fixed-seed generator (no init pattern such as A = I or
B = 0 survives), so a mapping mistake changes the numbers.

Deterministic. Run from the repo root:
    /work/venv/py/bin/python scripts/make_reference_state_dict.py
Needs torch, transformers and peft.
"""

import json
import os

import peft
import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "tests", "fixtures", "tiny-gemma3")
OUT = os.path.join(ROOT, "tests", "fixtures", "reference-checkpoint")

# The reference config's field names (hippoformer/config.py), tiny values.
CONFIG = {
    "base_model_name": "tests/fixtures/tiny-gemma3",
    "freeze_base": True,
    "use_lora": True,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.05,
    "lora_target_modules": ["q_proj", "v_proj"],
    "salience_n_heads": 4,
    "salience_min_duration": 2,
    "salience_threshold_init": 0.0,
    "importance_weight_range": [2.0, 5.0],
    "untagged_weight": 1.0,
    "buffer_size": 16,
    "decay_rate": 0.9,
    "max_replay_rounds": 3,
    "priority_threshold": 1.0,
    "soft_topk_temperature": 1.0,
    "n_anchors": 8,
    "drift_threshold": 0.3,
    "drift_update_momentum": 0.99,
    "fusion_n_heads": 8,
    "fusion_dropout": 0.1,
}
STEP = 1234


class SalienceGate(nn.Module):
    """Parameter layout of the reference's SalienceGate."""

    def __init__(self, d, k):
        super().__init__()
        self.local_gate = nn.Sequential(
            nn.Linear(d, d // 2), nn.GELU(), nn.Dropout(0.1),
            nn.Linear(d // 2, d // 4), nn.GELU(), nn.Linear(d // 4, 1),
        )
        self.global_query = nn.Linear(d, d)
        self.global_key = nn.Linear(d, d)
        self.global_value = nn.Linear(d, d)
        self.global_proj = nn.Linear(d, 1)
        self.attn_dropout = nn.Dropout(0.1)
        self.temporal_smooth = nn.Conv1d(1, 1, kernel_size=k, padding=k - 1, bias=True)
        self.threshold = nn.Parameter(torch.tensor(0.0))
        self.importance_lo = nn.Parameter(
            torch.tensor(CONFIG["importance_weight_range"][0]), requires_grad=False)
        self.importance_hi = nn.Parameter(
            torch.tensor(CONFIG["importance_weight_range"][1]), requires_grad=False)
        self.pathway_weight = nn.Parameter(torch.tensor(0.5))


class PriorityBuffer(nn.Module):
    """Parameter and buffer layout of the reference's DifferentiablePriorityBuffer."""

    def __init__(self, m, d):
        super().__init__()
        self.register_buffer("keys", torch.zeros(m, d))
        self.register_buffer("values", torch.zeros(m, d))
        self.register_buffer("priorities", torch.ones(m))
        self.register_buffer("ages", torch.zeros(m))
        self.register_buffer("valid_mask", torch.zeros(m, dtype=torch.bool))
        self.register_buffer("write_ptr", torch.tensor(0, dtype=torch.long))
        self.register_buffer("total_writes", torch.tensor(0, dtype=torch.long))
        self.key_proj = nn.Linear(d, d)
        self.value_proj = nn.Linear(d, d)
        self.query_proj = nn.Linear(d, d)
        self.consolidation_proj = nn.Linear(d, d)


class DriftCalibrator(nn.Module):
    """Parameter and buffer layout of the reference's EmbeddingDriftCalibrator."""

    def __init__(self, n, d):
        super().__init__()
        self.register_buffer("anchors", torch.zeros(n, d))
        self.register_buffer("anchor_initialized", torch.tensor(False))
        self.affine_A = nn.Parameter(torch.eye(d))
        self.affine_b = nn.Parameter(torch.zeros(d))
        self.register_buffer("running_mean", torch.zeros(d))
        self.register_buffer("running_var", torch.ones(d))
        self.register_buffer("n_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("drift_history", torch.zeros(100))
        self.register_buffer("drift_ptr", torch.tensor(0, dtype=torch.long))


class OutputFusion(nn.Module):
    """Parameter layout of the reference's OutputFusion."""

    def __init__(self, d, heads):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=0.1, batch_first=True)
        self.gate = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1), nn.Sigmoid())
        self.norm = nn.LayerNorm(d)


class HippoFormerLayout(nn.Module):
    """The reference HippoFormer's attribute order: base_model, salience_gate,
    memory_consolidator, drift_calibrator, output_fusion, lm_head (the base's)."""

    def __init__(self, base):
        super().__init__()
        d = base.config.hidden_size
        self.base_model = base
        self.salience_gate = SalienceGate(d, CONFIG["salience_min_duration"])
        self.memory_consolidator = PriorityBuffer(CONFIG["buffer_size"], d)
        self.drift_calibrator = DriftCalibrator(CONFIG["n_anchors"], d)
        self.output_fusion = OutputFusion(d, CONFIG["fusion_n_heads"])
        self.lm_head = base.base_model.model.lm_head


def main():
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    lora = peft.LoraConfig(
        r=CONFIG["lora_r"],
        lora_alpha=CONFIG["lora_alpha"],
        lora_dropout=CONFIG["lora_dropout"],
        target_modules=list(CONFIG["lora_target_modules"]),
        task_type=peft.TaskType.CAUSAL_LM,
    )
    model = HippoFormerLayout(peft.get_peft_model(base, lora))

    # Random values everywhere but the frozen base (kept as loaded): LoRA B included (peft
    # initialises it to zero), the drift correction away from identity, the buffers filled.
    gen = torch.Generator().manual_seed(20261125)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if name.startswith("base_model.") and "lora_" not in name:
                continue
            if name == "lm_head.weight" or t.dtype not in (torch.float32,):
                continue
            if name.endswith(("importance_lo", "importance_hi")):
                continue
            t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
        sg = model.salience_gate
        sg.temporal_smooth.weight.copy_(torch.tensor([[[0.25, 0.75]]]))
        dc = model.drift_calibrator
        dc.anchor_initialized.fill_(True)
        dc.running_var.copy_(torch.rand(dc.running_var.shape, generator=gen) + 0.5)
        dc.n_updates.fill_(57)
        dc.drift_ptr.fill_(57)
        mc = model.memory_consolidator
        mc.valid_mask[:5] = True
        mc.write_ptr.fill_(5)
        mc.total_writes.fill_(5)

    # The reference loads its base in float16 (`torch_dtype=torch.float16`); peft keeps the
    # adapters in float32. The frozen base weights are stored that way here too.
    sd = {
        k: (v.half() if (k.startswith("base_model.") or k == "lm_head.weight")
            and "lora_" not in k else v)
        for k, v in model.state_dict().items()
    }
    os.makedirs(OUT, exist_ok=True)
    torch.save(
        {"model_state_dict": sd, "step": STEP, "config": CONFIG},
        os.path.join(OUT, "hippoformer_ref.pt"),
    )

    tensors = {}
    for name, t in sd.items():
        flat = t.detach().reshape(-1)
        tensors[name] = {
            "dtype": str(t.dtype).replace("torch.", ""),
            "shape": list(t.shape),
            "sum": float(flat.double().sum()),
            "first": [float(x) for x in flat[:8].double()],
        }

    prefix = "base_model.base_model.model.model.layers.0.self_attn.q_proj."
    a = sd[prefix + "lora_A.default.weight"].double()  # [r, in]
    b = sd[prefix + "lora_B.default.weight"].double()  # [out, r]
    delta = b @ a * (CONFIG["lora_alpha"] / CONFIG["lora_r"])  # peft: [out, in]
    checks = {
        "lora_scaling": CONFIG["lora_alpha"] / CONFIG["lora_r"],
        # Burn stores a Linear weight as [in, out]: the delta there is delta.T.
        "layer0_q_delta_in_out_sum": float(delta.sum()),
        "layer0_q_delta_in_out_first_row": [float(x) for x in delta.T[0, :8]],
        "threshold_minus_conv_bias": float(
            sd["salience_gate.threshold"].double() - sd["salience_gate.temporal_smooth.bias"][0].double()),
        # Ours weighs position t - j with c_j; the causal Conv1d weighs it with w[K - 1 - j].
        "smoothing_reversed": [float(x) for x in sd["salience_gate.temporal_smooth.weight"].reshape(-1).flip(0)],
    }
    with open(os.path.join(OUT, "hippoformer_ref.json"), "w") as f:
        json.dump({"step": STEP, "config": CONFIG, "tensors": tensors, "checks": checks}, f, indent=1)
        f.write("\n")
    partial = {k: v for k, v in sd.items() if k.startswith("salience_gate.")}
    partial["salience_gate.extra_scale"] = torch.tensor(2.0)
    partial["unknown_module.weight"] = torch.randn((3, 2), generator=gen)
    torch.save(partial, os.path.join(OUT, "partial_state_dict.pt"))
    size = os.path.getsize(os.path.join(OUT, "hippoformer_ref.pt"))
    print(f"{len(sd)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
