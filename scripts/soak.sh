#!/usr/bin/env bash
# The server soak test at full size: REQUESTS (default 500) requests from 8
# clients over every generation route, streamed and not, clients hanging up
# mid-stream, malformed requests in between, against the default model (or
# RUSTY_LLM_SOAK_MODEL), on loopback. Then: every slot free, queue empty, no
# 5xx but deliberate 503s, the server still answering, RSS within 10% of its
# level after warm-up. Bounded: the test stops after 10 minutes at most
# (about two on the reference machine). `make test` runs a 400-request
# version on the tiny model (tests/server.rs,
# soak_mixed_routes_disconnects_and_malformed_requests).
#
#   scripts/soak.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-500}
if [[ -z ${RUSTY_LLM_SOAK_MODEL:-} ]]; then
    scripts/fetch-default-model.sh >/dev/null
    RUSTY_LLM_SOAK_MODEL=$PWD/models/gemma-3-270m-q4_k_m.gguf
fi
export RUSTY_LLM_SOAK_MODEL RUSTY_LLM_SOAK_REQUESTS=$requests
exec timeout 600 cargo test --profile test-release --test server \
    soak_mixed_routes_disconnects_and_malformed_requests -- --nocapture
