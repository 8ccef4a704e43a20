#!/usr/bin/env bash
# Records llama.cpp's layer-0 attention output (`kqv_out-0`, head 0) for a
# 130-token prompt of the default model on llama.cpp's default path (F16
# cache, flash attention: ggml's tiled form, since the batch has ≥ 64
# queries), as tests/data/gemma3-270m-kqv0-f16fa.json for
# tests/attention_parity.rs.
#
#   scripts/record-attention-fixture.sh [MODEL]
#
# Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh (or LLAMA_CPP_DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$here/models/gemma-3-270m-q4_k_m.gguf}
base=${LLAMA_CPP_DIR:-$HOME/.cache/llama-cpp-ref}
src=$(ls -d "$base"/llama_cpp_python-*/vendor/llama.cpp | head -1)
bin=$base/build/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O1 -o "$work/dump" "$here/scripts/llama-dump-tensors.c" -I"$src/include" -I"$src/ggml/include" \
  -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin"
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
prompt=$(printf 'Once upon a time, in a land far away, there lived a dragon who %.0s' 1 2 3 4 5 6 7 8)
tokens=$("$here/target/release/rusty-llm" "$model" --tokenize --prompt "$prompt" | tr -d '[]' | tr ',' ' ')
LD_LIBRARY_PATH=$bin "$work/dump" "$model" "$work/ref.jsonl" f16 $tokens 2>/dev/null
python3 - "$work/ref.jsonl" "$here/tests/data/gemma3-270m-kqv0-f16fa.json" "$tokens" <<'PY'
import json, sys
ref = None
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["name"] == "kqv_out-0":
        ref = d["values"]
        break
tokens = [int(t) for t in sys.argv[3].split()]
width = len(ref) // len(tokens)  # n_head * head_dim, token-major
head_dim = 256
head0 = [float(f"{v:.7g}") for t in range(len(tokens)) for v in ref[t * width:t * width + head_dim]]
json.dump({"source": "llama.cpp (llama-cpp-python 0.3.36), default context: F16 cache, flash attention",
           "tensor": "kqv_out-0, head 0", "head_dim": head_dim, "tokens": tokens, "values": head0},
          open(sys.argv[2], "w"))
PY
echo "wrote tests/data/gemma3-270m-kqv0-f16fa.json"
