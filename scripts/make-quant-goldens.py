#!/usr/bin/env python3
"""Remake the quantization goldens in tests/data/quant/ from llama.cpp's own code.

    pip install gguf numpy
    python3 scripts/make-quant-goldens.py [--shared ../shared] [--ggml-lib PATH]

Two references, both llama.cpp's:

- gguf-py (PyPI `gguf`, llama.cpp's Python library): `gguf.quants.dequantize`
  for every type in the tiny models, and `gguf.quants.quantize` for the types it
  can quantize (Q4_0, Q8_0, BF16, F16 here).
- ggml itself, when `libggml-base.so` is at hand (built by
  ../shared/tools/build-llama-cpp.sh into ~/.cache/llama-cpp-ref/build/bin, or
  given with --ggml-lib / $GGML_BASE_LIB): its `quantize_row_*_ref` for the
  quantizers gguf-py lacks (Q8_1, Q8_K, Q4_K, Q5_K, Q6_K), and a cross-check
  that gguf-py's results equal ggml's `dequantize_row_*` / `quantize_row_*_ref`
  bit for bit. Without the library those goldens are left as they are.

Files written (JSON; byte strings and f32 arrays as lowercase hex of their
little-endian bytes, so the tests compare bit patterns):

- dequant-<TYPE>.json: rows of one tensor of a tiny model: its raw block bytes
  and the dequantized values.
- quant-input.json: f32 rows (real weights from tiny-llama-F32 plus synthetic
  edge cases) that every quantization golden starts from.
- quant-<TYPE>.json: those rows quantized, and (where a dequantizer exists)
  dequantized again.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "quant"
ROWS_PER_GOLDEN = 8
ROW_LEN = 256  # a whole number of blocks of every type

# The tiny models that hold each quantized type, in the order they are searched.
MODELS = [
    "tiny-llama-F16.gguf",
    "tiny-llama-BF16.gguf",
    "tiny-llama-Q4_0.gguf",
    "tiny-llama-Q4_1.gguf",
    "tiny-llama-Q5_0.gguf",
    "tiny-llama-Q5_1.gguf",
    "tiny-llama-Q8_0.gguf",
    "tiny-llama-Q2_K.gguf",
    "tiny-llama-Q3_K_M.gguf",
    "tiny-llama-Q4_K_M.gguf",
    "tiny-llama-Q5_K_M.gguf",
    "tiny-llama-Q6_K.gguf",
    "tiny-llama-IQ4_NL.gguf",
    "tiny-llama-IQ4_XS.gguf",
    "tiny-llama-MXFP4.gguf",
]

# Quantizers: type -> (gguf-py can do it, ggml reference function).
QUANTIZERS = {
    T.F16: (True, None),
    T.BF16: (True, None),
    T.Q4_0: (True, "quantize_row_q4_0_ref"),
    T.Q8_0: (True, "quantize_row_q8_0_ref"),
    T.Q8_1: (False, "quantize_row_q8_1_ref"),
    T.Q8_K: (False, "quantize_row_q8_K_ref"),
    T.Q4_K: (False, "quantize_row_q4_K_ref"),
    T.Q5_K: (False, "quantize_row_q5_K_ref"),
    T.Q6_K: (False, "quantize_row_q6_K_ref"),
}

# ggml's row dequantizers, for the cross-check (F16/BF16 have no such symbol).
GGML_DEQUANT = {
    T.Q4_0: "dequantize_row_q4_0",
    T.Q4_1: "dequantize_row_q4_1",
    T.Q5_0: "dequantize_row_q5_0",
    T.Q5_1: "dequantize_row_q5_1",
    T.Q8_0: "dequantize_row_q8_0",
    T.Q2_K: "dequantize_row_q2_K",
    T.Q3_K: "dequantize_row_q3_K",
    T.Q4_K: "dequantize_row_q4_K",
    T.Q5_K: "dequantize_row_q5_K",
    T.Q6_K: "dequantize_row_q6_K",
    T.Q8_K: "dequantize_row_q8_K",
    T.IQ4_NL: "dequantize_row_iq4_nl",
    T.IQ4_XS: "dequantize_row_iq4_xs",
    T.MXFP4: "dequantize_row_mxfp4",
}


def hexs(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).tobytes().hex()


def write(name: str, obj: dict) -> None:
    path = OUT / name
    path.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


class Ggml:
    """ctypes access to libggml-base's reference (de)quantizers."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.path = path

    def quantize(self, fn: str, qtype: T, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        # ggml's own row size: gguf-py's table says 40 bytes for Q8_1, whose
        # block is 36 bytes since ggml switched its d and s to f16.
        row_size = self.lib.ggml_row_size
        row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        row_size.restype = ctypes.c_size_t
        out = ctypes.create_string_buffer(row_size(int(qtype), x.size))  # zeroed
        f = getattr(self.lib, fn)
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        f.restype = None
        f(x.ctypes.data, out, x.size)
        return np.frombuffer(out.raw, dtype=np.uint8).copy()

    def dequantize(self, fn: str, data: np.ndarray, n: int) -> np.ndarray:
        data = np.ascontiguousarray(data, dtype=np.uint8)
        out = np.zeros(n, dtype=np.float32)
        f = getattr(self.lib, fn)
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        f.restype = None
        f(data.ctypes.data, out.ctypes.data, n)
        return out


def find_ggml(arg: str | None) -> Ggml | None:
    candidates = [arg, os.environ.get("GGML_BASE_LIB"),
                  str(Path.home() / ".cache/llama-cpp-ref/build/bin/libggml-base.so")]
    for c in candidates:
        if c and Path(c).is_file():
            print(f"ggml reference: {c}")
            return Ggml(Path(c))
    print("warning: libggml-base.so not found; ggml-only goldens are left as they are",
          file=sys.stderr)
    return None


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def dequant_goldens(tiny: Path, ggml: Ggml | None) -> None:
    done: set[T] = set()
    for model in MODELS:
        reader = gguf.GGUFReader(tiny / model)
        for t in reader.tensors:
            qtype = t.tensor_type
            if qtype in done or qtype == T.F32 or len(t.shape) < 2:
                continue
            row_len = int(t.shape[0])
            n_rows = int(np.prod(t.shape[1:]))
            rows = np.linspace(0, n_rows - 1, ROWS_PER_GOLDEN).round().astype(int)
            data = np.asarray(t.data).reshape(n_rows, -1).view(np.uint8)
            picked = data[rows]
            values = gguf.quants.dequantize(picked, qtype).astype(np.float32).reshape(-1)
            if ggml and qtype in GGML_DEQUANT:
                ref = ggml.dequantize(GGML_DEQUANT[qtype], picked, values.size)
                assert same_bits(ref, values), f"gguf-py and ggml disagree on {qtype.name}"
            write(f"dequant-{qtype.name}.json", {
                "model": model,
                "tensor": t.name,
                "type": qtype.name,
                "row_len": row_len,
                "rows": [int(r) for r in rows],
                "reference": f"gguf-py {gguf_version()} gguf.quants.dequantize"
                + (" (equal to ggml's dequantize_row)" if ggml and qtype in GGML_DEQUANT else ""),
                "bytes": hexs(picked),
                "values": hexs(values),
            })
            done.add(qtype)


def quant_inputs(tiny: Path) -> np.ndarray:
    """Real weights plus rows that reach the quantizers' edge cases."""
    reader = gguf.GGUFReader(tiny / "tiny-llama-F32.gguf")
    weights = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    real = np.asarray(weights.data, dtype=np.float32).reshape(-1, ROW_LEN)[:6]
    ffn = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    real2 = np.asarray(ffn.data, dtype=np.float32).reshape(-1, ROW_LEN)[:2]

    rng = np.random.default_rng(20240601)
    i = np.arange(ROW_LEN, dtype=np.float32)
    acts = rng.standard_normal(ROW_LEN).astype(np.float32)
    acts[[3, 77, 200]] = [41.0, -63.5, 17.25]  # activation outliers
    mixed = rng.standard_normal(ROW_LEN).astype(np.float32) * 0.02
    mixed[32:64] = 0.0  # a zero sub-block inside a non-zero block
    mixed[64:96] = 0.013  # a constant sub-block
    synthetic = [
        np.zeros(ROW_LEN, np.float32),  # all zeros
        np.full(ROW_LEN, -0.75, np.float32),  # constant negative
        np.abs(rng.standard_normal(ROW_LEN)).astype(np.float32) + 0.5,  # all positive
        (0.1 + 2.0 * np.cos(i)).astype(np.float32),  # test-quantize-fns data
        acts,
        mixed,
        ((i - 128.0) / 8.0).astype(np.float32),  # many exact ties
        rng.standard_normal(ROW_LEN).astype(np.float32) * np.float32(1e-3),
    ]
    # Random rows of assorted shapes and scales, to exercise every branch of
    # the scale searches (make_qkx2_quants, make_qx_quants).
    for k in range(4):
        scale = np.float32(10.0 ** (k - 2))
        synthetic += [
            rng.standard_normal(ROW_LEN).astype(np.float32) * scale,
            rng.uniform(-1, 1, ROW_LEN).astype(np.float32) * scale + scale / 3,
            rng.laplace(0, 1, ROW_LEN).astype(np.float32) * scale,
            rng.standard_t(2, ROW_LEN).astype(np.float32) * scale
            * (rng.uniform(0, 1, ROW_LEN) < 0.5),  # heavy tails, half zeros
        ]
    return np.concatenate([real, real2, np.stack(synthetic)]).astype(np.float32)


def quant_goldens(tiny: Path, ggml: Ggml | None) -> None:
    x = quant_inputs(tiny)
    write("quant-input.json", {
        "source": "tiny-llama-F32.gguf blk.0.attn_q.weight rows 0..6, "
                  "blk.1.ffn_down.weight rows 0..2, then 24 synthetic rows",
        "row_len": ROW_LEN,
        "values": hexs(x),
    })
    for qtype, (gguf_py, ggml_fn) in QUANTIZERS.items():
        if gguf_py:
            q = np.asarray(gguf.quants.quantize(x, qtype)).view(np.uint8).reshape(-1)
            reference = f"gguf-py {gguf_version()} gguf.quants.quantize"
            if ggml and ggml_fn:
                ref = ggml.quantize(ggml_fn, qtype, x)
                assert same_bits(ref, q), f"gguf-py and ggml disagree on quantizing {qtype.name}"
                reference += f" (equal to ggml's {ggml_fn})"
        elif ggml and ggml_fn:
            q = ggml.quantize(ggml_fn, qtype, x)
            reference = f"ggml {ggml_fn} ({ggml.path.name} from llama-cpp-python 0.3.36)"
        else:
            print(f"skipping quant-{qtype.name}.json: needs libggml-base", file=sys.stderr)
            continue
        golden = {"type": qtype.name, "reference": reference, "bytes": hexs(q)}
        if ggml and qtype in GGML_DEQUANT:
            golden["dequantized"] = hexs(ggml.dequantize(GGML_DEQUANT[qtype], q, x.size))
        elif qtype in (T.F16, T.BF16):
            golden["dequantized"] = hexs(gguf.quants.dequantize(q, qtype).astype(np.float32))
        write(f"quant-{qtype.name}.json", golden)


def gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--ggml-lib", default=None)
    args = ap.parse_args()
    tiny = Path(args.shared) / "tiny"
    OUT.mkdir(parents=True, exist_ok=True)
    ggml = find_ggml(args.ggml_lib)
    dequant_goldens(tiny, ggml)
    quant_goldens(tiny, ggml)


if __name__ == "__main__":
    main()
