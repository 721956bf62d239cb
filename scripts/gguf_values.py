"""Generate GGUF dequantisation reference values for the Gemma-3-270M Q4_K_M file.

Makes:
  tests/fixtures/gemma-3-270m/gguf_values.json   - per tensor-type representative tensors:
      name, ggml type, row-major shape, first 8 dequantised values, float64 sum and sum|x|,
      plus a count of tensors per ggml type.
  tests/fixtures/gemma-3-270m/gguf_metadata.json - every GGUF metadata key/value (arrays are
      summarised as their length and first 5 items).

From: /tmp/assets/gemma-3-270m-q4_k_m.gguf (sha256 a5fd3b62...6818), read with the Python
`gguf` package (GGUFReader + gguf.quants.dequantize).

Fully deterministic (no randomness). Run from the repo root:
    /work/venv/py/bin/python scripts/gguf_values.py
The outputs are committed; Rust tests and CI never need Python.
"""
import hashlib
import json
import os
from collections import Counter, OrderedDict

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

GGUF_PATH = os.environ.get("GEMMA3_270M_GGUF", "/tmp/assets/gemma-3-270m-q4_k_m.gguf")
OUT_DIR = "tests/fixtures/gemma-3-270m"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def field_value(field):
    """Return python value(s) of a ReaderField."""
    vtype = field.types[0]
    if vtype == GGUFValueType.ARRAY:
        sub = field.types[-1]
        vals = []
        for idx in field.data:
            p = field.parts[idx]
            if sub == GGUFValueType.STRING:
                vals.append(bytes(p).decode("utf-8", errors="replace"))
            else:
                vals.append(p.tolist()[0] if len(p) == 1 else p.tolist())
        return vals
    p = field.parts[field.data[0]]
    if vtype == GGUFValueType.STRING:
        return bytes(p).decode("utf-8", errors="replace")
    v = p.tolist()[0]
    if vtype == GGUFValueType.BOOL:
        v = bool(v)
    return v


def main():
    reader = GGUFReader(GGUF_PATH)

    # ---- metadata ----
    meta = OrderedDict()
    for key, field in reader.fields.items():
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            vals = field_value(field)
            meta[key] = {
                "type": "ARRAY",
                "item_type": field.types[-1].name,
                "length": len(vals),
                "first5": vals[:5],
            }
        else:
            v = field_value(field)
            if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
                v = float(v)
            meta[key] = {"type": vtype.name, "value": v}
    with open(os.path.join(OUT_DIR, "gguf_metadata.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")

    # ---- tensors ----
    counts = Counter(t.tensor_type.name for t in reader.tensors)
    by_name = {t.name: t for t in reader.tensors}
    chosen = []
    for name in ("token_embd.weight", "blk.0.attn_q.weight"):
        if name in by_name:
            chosen.append(by_name[name])
    covered = {t.tensor_type.name for t in chosen}
    for ttype in sorted(counts):
        if ttype in covered:
            continue
        cand = [t for t in reader.tensors if t.tensor_type.name == ttype and t.name.startswith("blk.0.")]
        if not cand:
            cand = [t for t in reader.tensors if t.tensor_type.name == ttype]
        chosen.append(cand[0])
        covered.add(ttype)

    reps = []
    for t in chosen:
        shape_gguf = [int(x) for x in t.shape]  # innermost-first (ne0, ne1, ...)
        shape_rm = list(reversed(shape_gguf))
        deq = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape_rm)
        flat = deq.reshape(-1)
        reps.append(OrderedDict(
            name=t.name,
            ggml_type=t.tensor_type.name,
            ggml_type_id=int(t.tensor_type),
            shape=shape_rm,
            shape_gguf_ne=shape_gguf,
            n_elements=int(flat.size),
            data_offset=int(t.data_offset),
            n_bytes=int(t.n_bytes),
            first8=[float(x) for x in flat[:8]],
            row1_first8=[float(x) for x in deq.reshape(shape_rm[0], -1)[1, :8]] if len(shape_rm) > 1 else None,
            sum=float(flat.sum()),
            sum_abs=float(np.abs(flat).sum()),
        ))
        print(f"{t.name:32s} {t.tensor_type.name:5s} {shape_rm} sum={flat.sum():.6f} sum_abs={np.abs(flat).sum():.6f}")

    out = OrderedDict(
        gguf_file=os.path.basename(GGUF_PATH),
        gguf_sha256=sha256(GGUF_PATH),
        gguf_python_package_version=getattr(gguf, "__version__", None) or _pkg_version("gguf"),
        tensor_count=len(reader.tensors),
        tensor_type_counts=dict(sorted(counts.items())),
        note=("shape is row-major (outermost first) = reversed GGUF ne[]; first8 are the first 8 "
              "values in memory order (row 0). Values are the raw GGUF-stored values: Gemma norm "
              "weights in llama.cpp GGUFs already include the +1 (i.e. stored as 1+w)."),
        tensors=reps,
    )
    with open(os.path.join(OUT_DIR, "gguf_values.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(dict(counts))


def _pkg_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    main()
