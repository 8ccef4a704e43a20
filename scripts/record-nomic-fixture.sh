#!/usr/bin/env bash
# Records llama.cpp's embeddings of four texts for the tiny nomic-bert that
# examples/make_tiny_nomic_bert.rs writes (F32, mean pooling), as
# tests/data/embed/tiny-nomic-bert-F32.json for tests/embeddings.rs. They come
# from `llama-server --embeddings -fa off` (f32 attention, the path the other
# references were recorded with) over /v1/embeddings: llama-embedding's
# asynchronous logger can drop the end of its output at exit.
#
#   scripts/record-nomic-fixture.sh
#
# Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh (or LLAMA_CPP_BIN).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${LLAMA_CPP_BIN:-$HOME/.cache/llama-cpp-ref/build/bin}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
cargo run --release --quiet --manifest-path "$here/Cargo.toml" --example make_tiny_nomic_bert -- \
  "$work/tiny-nomic-bert-F32.gguf" f32 1
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/llama-server" -m "$work/tiny-nomic-bert-F32.gguf" --embeddings -fa off -t 2 -c 128 \
  --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
server=$!
python3 - "$port" "$here/tests/data/embed/tiny-nomic-bert-F32.json" <<'PY'
import json, sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
texts = ["Hello world", "The quick brown fox jumps over the lazy dog.",
         "llama.cpp computes sentence embeddings: 42 tokens, 3.14 pi!", "A cat sat on the mat."]
body = json.dumps({"input": texts}).encode()
for _ in range(100):
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", body,
                                     {"Content-Type": "application/json"})
        data = json.load(urllib.request.urlopen(req, timeout=10))["data"]
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("llama-server did not answer")
vectors = [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]
json.dump({"source": "llama-server --embeddings -fa off (llama-cpp-python 0.3.36's llama.cpp), /v1/embeddings",
           "model": "examples/make_tiny_nomic_bert.rs OUT f32 1", "texts": texts,
           "embeddings": [[float(f"{v:.7g}") for v in vec] for vec in vectors]}, open(out, "w"))
print(f"wrote {out}")
PY
