"""Checks streamed answers against /openapi.json, which schemathesis cannot:
every item of every streaming route (the JSON in each server-sent event's
`data`, each line of Ollama's JSON lines) must validate against the item
schema the document gives for it (`contentSchema` / `x-item-schema`).

Usage: SERVER_URL=http://127.0.0.1:PORT python check-stream-schemas.py
Needs `jsonschema_rs` (schemathesis brings it).
"""
import json
import os
import sys
import urllib.request

import jsonschema_rs

URL = os.environ["SERVER_URL"]

# A valid streaming request for each streaming route. A streaming route the
# document lists but this table lacks fails the check, so new routes get one.
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2}
COMPLETION = {"prompt": "Once upon a time", "max_tokens": 4, "stream": True,
              "stream_options": {"include_usage": True}, "logprobs": 2, "echo": True}
REQUESTS = {
    "/v1/chat/completions": CHAT,
    "/api/v0/chat/completions": CHAT,
    "/v1/completions": COMPLETION,
    "/api/v0/completions": COMPLETION,
    "/v1/responses": {"input": "Hi", "instructions": "Be brief.", "max_output_tokens": 4,
                      "stream": True},
    "/api/chat": {"messages": [{"role": "user", "content": "Hi"}],
                  "options": {"num_predict": 4}},
    "/api/generate": {"prompt": "Hi", "options": {"num_predict": 4}},
}


def fetch(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers.get_content_type(), r.read().decode()


def sse_items(text):
    """The `data` of each event (multi-line data joined with newlines)."""
    for block in text.split("\n\n"):
        lines = [l[5:].removeprefix(" ") for l in block.split("\n") if l.startswith("data:")]
        if lines:
            yield "\n".join(lines)


def main():
    doc = json.loads(fetch("/openapi.json")[1])

    def validator(schema):
        # Resolve "#/components/..." against the document itself.
        return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})

    checked = 0
    failures = []
    for path, item in doc["paths"].items():
        content = item.get("post", {}).get("responses", {}).get("200", {}).get("content", {})
        if "text/event-stream" in content:
            media = "text/event-stream"
            data = content[media]["schema"]["properties"]["data"]
            # OpenAI's streams: the JSON chunks, or the closing "[DONE]".
            data = next((d for d in data.get("anyOf", []) if "contentSchema" in d), data)
            schema = data["contentSchema"]
        elif "application/x-ndjson" in content:
            media = "application/x-ndjson"
            schema = content[media]["x-item-schema"]
        else:
            continue
        if path not in REQUESTS:
            failures.append(f"{path}: streams, but this check has no request for it")
            continue
        got, text = fetch(path, REQUESTS[path])
        if got != media:
            failures.append(f"{path}: answered {got}, documented {media}")
            continue
        if media == "text/event-stream":
            items = list(sse_items(text))
            if path.startswith(("/v1/chat", "/v1/completions", "/api/v0/")):
                if items[-1:] != ["[DONE]"]:
                    failures.append(f"{path}: the stream does not end with [DONE]")
                items = items[:-1]
        else:
            items = [l for l in text.split("\n") if l]
        v = validator(schema)
        for i, raw in enumerate(items):
            for err in v.iter_errors(json.loads(raw)):
                failures.append(f"{path} item {i}: {err.message} at {list(err.instance_path)}")
        if not items:
            failures.append(f"{path}: the stream had no items")
        checked += len(items)
        print(f"{path}: {len(items)} streamed items match the schema")
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"stream schemas: {checked} items checked")


main()
