#!/usr/bin/env bash
# A bounded property-based run of schemathesis (PyPI) against the server's
# /openapi.json: no request may get a 5xx, and every error body must match
# the documented error schema. Not part of `make test` (installing
# schemathesis and its run take minutes on a 2-core CI); run it by hand.
#
# Usage: scripts/test-server-schemathesis.sh [BINARY] [MODEL] [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/test-release/rusty-llm}
MODEL=${2:-../shared/tiny/tiny-llama-Q8_0.gguf}
MAX_EXAMPLES=${3:-25}
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}

if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "schemathesis==4.32.5"
fi
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A small context bounds each generated request's work.
"$BIN" "$MODEL" --serve "127.0.0.1:$PORT" --threads 1 --ctx-size 256 2>/dev/null &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break
    sleep 0.1
done
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
    --max-examples "$MAX_EXAMPLES" --checks not_a_server_error,response_schema_conformance
