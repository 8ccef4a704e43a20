#!/usr/bin/env bash
# Builds the benchmark models into models/bench/ (git-ignored):
#   llama-1b-f16.gguf    random-weight llama with Llama-3.2-1B shapes (examples/make_bench_model.rs)
#   llama-1b-q8_0.gguf   rusty-llm quantize … Q8_0
#   llama-1b-q4_0.gguf   rusty-llm quantize … Q4_0
#   llama-1b-q4_k.gguf   rusty-llm quantize … Q4_K (= Q4_K_M, as in llama-quantize)
# Idempotent: files already there are kept (each is written to a temporary file
# and renamed, so an interrupted run leaves nothing half-written). Needs
# ../shared/vocab/ggml-vocab-llama-bpe.gguf for the vocabulary (or VOCAB=path).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${RUSTY_LLM_MODELS:-$root/models}/bench
mkdir -p "$dir"
cd "$root"
cargo build --release --quiet --example make_bench_model --bin rusty-llm
bin=$root/target/release

base=$dir/llama-1b-f16.gguf
if [[ -f $base ]]; then
    echo "have $base"
else
    "$bin/examples/make_bench_model" "$base" ${VOCAB:+"$VOCAB"}
fi

for type in q8_0 q4_0 q4_k; do
    out=$dir/llama-1b-$type.gguf
    if [[ -f $out ]]; then
        echo "have $out"
    else
        "$bin/rusty-llm" quantize "$base" "$out" "${type^^}"
    fi
done
