#!/usr/bin/env bash
# Drives the real server with the official `openai` and `ollama` Python
# clients (scripts/test-server-clients.py) and checks that greedy answers over
# HTTP equal the CLI's for the same prompt.
#
# Usage: scripts/test-server-clients.sh [BINARY] [MODEL] [EMBED_MODEL]
#   BINARY defaults to target/test-release/rusty-llm, MODEL to the default model;
#   with EMBED_MODEL (an embedding model such as BERT) a second server on it
#   gets the embedding checks too.
# The clients go into a venv (CLIENT_VENV, default target/client-venv), made
# and filled from PyPI on first use. Exit code 3: the venv could not be set up.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/test-release/rusty-llm}
MODEL=${2:-models/gemma-3-270m-q4_k_m.gguf}
EMBED_MODEL=${3:-}
VENV=${CLIENT_VENV:-target/client-venv}
# Pinned so a new client release cannot change what CI checks unnoticed.
CLIENTS=(openai==3.57.0 ollama==0.6.3)

if ! "$VENV/bin/python" -c "import openai, ollama" 2>/dev/null; then
    echo "test-server-clients: installing ${CLIENTS[*]} into $VENV" >&2
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "${CLIENTS[@]}"; } || exit 3
fi

PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp)
# --no-prompt-cache: each answer is computed from scratch, as the CLI computes
# it; reusing the previous request's prefix rounds differently and can flip
# a near-tie greedy pick (tests/server.rs checks prefix reuse itself).
"$BIN" "$MODEL" --serve "127.0.0.1:$PORT" --threads 2 --no-prompt-cache 2>"$LOG" &
SERVER=$!
EMBED_SERVER=
trap 'kill $SERVER $EMBED_SERVER 2>/dev/null; wait $SERVER $EMBED_SERVER 2>/dev/null; rm -f "$LOG"' EXIT
if [ -n "$EMBED_MODEL" ]; then
    EMBED_PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$BIN" "$EMBED_MODEL" --serve "127.0.0.1:$EMBED_PORT" --threads 2 2>>"$LOG" &
    EMBED_SERVER=$!
    export EMBED_SERVER_URL="http://127.0.0.1:$EMBED_PORT" EMBED_MODEL
fi

export SERVER_URL="http://127.0.0.1:$PORT" RUSTY_LLM_BIN="$BIN" MODEL
if ! "$VENV/bin/python" scripts/test-server-clients.py; then
    echo "--- server log ---" >&2
    cat "$LOG" >&2
    exit 1
fi
