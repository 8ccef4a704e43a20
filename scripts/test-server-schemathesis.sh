#!/usr/bin/env bash
# A bounded property-based run of schemathesis (PyPI) against the server's
# /openapi.json: no request may get a 5xx and every answer must match the
# documented schema (error bodies, JSON answers, and each server-sent event);
# then scripts/check-stream-schemas.py checks what schemathesis cannot, the
# JSON inside streamed items. `cargo test --test server` runs it (about a
# minute, most of it installing schemathesis into its venv the first time).
#
# Usage: scripts/test-server-schemathesis.sh [BINARY] [MODEL] [MAX_EXAMPLES]
# Exit code 3: the venv could not be set up.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/test-release/rusty-llm}
MODEL=${2:-../shared/tiny/tiny-llama-Q8_0.gguf}
MAX_EXAMPLES=${3:-25}
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
# Pinned so a new release cannot change what CI checks unnoticed.
SCHEMATHESIS=schemathesis==4.32.5

if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    echo "test-server-schemathesis: installing $SCHEMATHESIS into $VENV" >&2
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "$SCHEMATHESIS"; } || exit 3
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
# A fixed seed: the same cases on every run, so a failure reproduces.
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
    --max-examples "$MAX_EXAMPLES" --seed 1 --no-color \
    --checks not_a_server_error,response_schema_conformance
SERVER_URL="http://127.0.0.1:$PORT" "$VENV/bin/python" scripts/check-stream-schemas.py
echo "schemathesis and stream schema checks passed"
