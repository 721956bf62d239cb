"""The PyTorch side of `cargo xtask bench`'s forward and decode figures (issue 12).

Same model (Gemma-3-270M Q4_K_M GGUF, dequantised to float32 by transformers' GGUF loader),
same inputs and the same measurement as `xtask/src/bench.rs`:
  forward: BOS then ids (i * 7919) % (vocab - 10) + 10, one sequence of N tokens, logits at every
           position, best of 3 after a warm-up;
  decode:  the first 16 of those ids as the prompt, then greedy steps with the KV cache, one
           token at a time (argmax, read back each step).
Threads: torch.set_num_threads(T), default 2 (this machine's cores).

Run beside the Rust bench, back to back on the same machine:
    /path/to/venv/bin/python scripts/bench_transformers.py [--gguf F] [--tokens 512] [--decode 16]
Prints one `name value` line per figure; nothing is written.
"""
import argparse
import os
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument(
    "--gguf",
    default=os.path.expanduser("~/.cache/hippoformer/gemma-3-270m/gemma-3-270m-q4_k_m.gguf"),
)
p.add_argument("--tokens", type=int, default=512)
p.add_argument("--decode", type=int, default=16)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa or eager")
a = p.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(a.gguf),
    gguf_file=os.path.basename(a.gguf),
    dtype=torch.float32,
    attn_implementation=a.attn,
).eval()
cfg = model.config
vocab = cfg.vocab_size
ids = [cfg.bos_token_id] + [(i * 7919) % (vocab - 10) + 10 for i in range(1, a.tokens)]
x = torch.tensor([ids], dtype=torch.long)

with torch.inference_mode():
    model(x, use_cache=False).logits.sum().item()  # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        model(x, use_cache=False).logits.sum().item()
        best = min(best, time.perf_counter() - t0)
    print(f"forward_tok_s {a.tokens / best:.1f}")

    prompt = x[:, :16]
    out = model(prompt, use_cache=True)
    past = out.past_key_values
    nxt = out.logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(a.decode):
        out = model(nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        nxt.item()
    print(f"decode_tok_s {a.decode / (time.perf_counter() - t0):.1f}")
print(f"versions torch {torch.__version__} transformers {transformers.__version__} threads {a.threads}")
