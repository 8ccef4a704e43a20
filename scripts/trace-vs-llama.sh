#!/usr/bin/env bash
# Trace a divergence from llama.cpp to one layer: run the same tokens through
# llama.cpp (its intermediate tensors, via scripts/llama-dump-tensors.c) and
# through rusty-llm (--dump-activations), then print, per layer, the largest
# difference relative to the RMS of llama.cpp's tensor.
#
#   scripts/trace-vs-llama.sh MODEL.gguf "prompt text"
#
# Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh (or LLAMA_CPP_DIR
# pointing at the folder holding llama_cpp_python-*/vendor/llama.cpp and build/bin).
set -euo pipefail
model=$1
prompt=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
base=${LLAMA_CPP_DIR:-$HOME/.cache/llama-cpp-ref}
src=$(ls -d "$base"/llama_cpp_python-*/vendor/llama.cpp | head -1)
bin=$base/build/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O1 -o "$work/dump" "$here/scripts/llama-dump-tensors.c" -I"$src/include" -I"$src/ggml/include" \
  -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin"
cargo build --profile test-release --quiet --bin rusty-llm --manifest-path "$here/Cargo.toml"
ours=$here/target/test-release/rusty-llm
"$ours" "$model" --raw -p "$prompt" --kv-type f32 --threads 1 --dump-activations "$work/ours.jsonl"
tokens=$("$ours" "$model" --tokenize --prompt "$prompt" | tr -d '[]' | tr ',' ' ')
LD_LIBRARY_PATH=$bin "$work/dump" "$model" "$work/ref.jsonl" f32 $tokens 2>/dev/null
python3 - "$work/ours.jsonl" "$work/ref.jsonl" <<'PY'
import array, json, math, sys
ours = {}
for line in open(sys.argv[1]):
    d = json.loads(line); ours[d["name"]] = d["values"]
ref = {}
for line in open(sys.argv[2]):
    d = json.loads(line); ref.setdefault(d["name"], d["values"])  # first tensor of each name
pairs = [("inp_embd", "inp_scaled"), ("inp_embd", "inp_embd")]
layers = sorted({int(k.split(".")[1]) for k in ours if k.startswith("blk.")})
for i in layers:
    pairs += [(f"blk.{i}.attn_norm", f"attn_norm-{i}"), (f"blk.{i}.kqv_out", f"kqv_out-{i}"),
              (f"blk.{i}.ffn_inp", f"ffn_inp-{i}"), (f"blk.{i}.ffn_inp", f"sa_out-{i}"),
              (f"blk.{i}.ffn_norm", f"ffn_norm-{i}"), (f"blk.{i}.ffn_down", f"ffn_out-{i}"),
              (f"blk.{i}.l_out", f"l_out-{i}")]
pairs += [("result_norm", "result_norm"), ("result_output", "result_output")]
for a, b in pairs:
    if a not in ours or b not in ref or len(ours[a]) != len(ref[b]):
        continue
    # Both as f32 (llama.cpp prints 9 digits), so bit-equal tensors give 0.
    x, y = array.array("f", ours[a]), array.array("f", ref[b])
    rms = math.sqrt(sum(v * v for v in y) / len(y)) or 1.0
    diff = max(abs(p - q) for p, q in zip(x, y))
    print(f"{a:24s} {b:18s} max|Δ|/rms {diff / rms:.2e}")
PY
