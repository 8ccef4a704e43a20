"""The server as the official OpenAI and Ollama Python clients see it.

Run by scripts/test-server-clients.sh, which starts the server and sets
SERVER_URL, RUSTY_LLM_BIN and MODEL (and EMBED_SERVER_URL, EMBED_MODEL for a
second server on an embedding model). Every check asserts on content: greedy
answers over HTTP must equal the CLI's greedy answer for the same prompt, and
embeddings the CLI's --embed vectors for the same texts.
"""

import json
import math
import os
import subprocess
import sys
import time
import urllib.request

import ollama
import openai
from openai import OpenAI

BASE = os.environ["SERVER_URL"]
BIN = os.environ["RUSTY_LLM_BIN"]
MODEL = os.environ["MODEL"]
MODEL_ID = os.path.splitext(os.path.basename(MODEL))[0]
N = 12  # tokens per answer: enough to compare, short for a 2-core CI
CHAT_PROMPT = "Name three colors."
RAW_PROMPT = "Once upon a time"


def cli(prompt, chat):
    """The CLI's greedy answer (it ends its output with one newline): a
    one-shot plain completion, or one turn of --repl through the chat
    template (this model ships none, so one-shot would not use it)."""
    args = [BIN, MODEL, "-n", str(N), "--temp", "0", "--threads", "2"]
    if chat:
        run = subprocess.run(args + ["--repl"], input=prompt + "\n", capture_output=True, text=True, check=True)
    else:
        run = subprocess.run(args + ["--raw", "--quiet", "-p", prompt], capture_output=True, text=True, check=True)
    assert run.stdout.endswith("\n"), repr(run.stdout)
    return run.stdout[:-1]


def same(what, got, want):
    if got != want:
        sys.exit(f"FAIL {what}: got {got!r}, want {want!r}")
    print(f"ok   {what}")


def wait_ready(base=BASE):
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("FAIL the server did not become ready")
        time.sleep(0.1)


wait_ready()
chat_answer = cli(CHAT_PROMPT, chat=True)
raw_answer = cli(RAW_PROMPT, chat=False)
assert chat_answer and raw_answer
messages = [{"role": "user", "content": CHAT_PROMPT}]
greedy = {"temperature": 0, "max_tokens": N}

# ---- openai ----
client = OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0, timeout=120)

same("models.list", [m.id for m in client.models.list()], [MODEL_ID])

r = client.chat.completions.create(model="gpt-4o", messages=messages, **greedy)
same("chat.completions (non-stream) = CLI --repl", r.choices[0].message.content, chat_answer)
same("chat.completions model", r.model, MODEL_ID)
same("chat usage adds up", r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
    model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}, **greedy
):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
same("chat.completions (stream) = CLI", text, chat_answer)
same("chat stream usage", usage.completion_tokens, r.usage.completion_tokens)
same("chat stream finish_reason", finish, r.choices[0].finish_reason)

r = client.chat.completions.create(model="x", messages=messages, logprobs=True, top_logprobs=2, **greedy)
lp = r.choices[0].logprobs.content
same("logprobs spell the answer", "".join(t.token for t in lp), chat_answer)
same("greedy tokens are the most likely", [t.token for t in lp], [t.top_logprobs[0].token for t in lp])
same("logprobs are log-probabilities", all(t.logprob <= 0 for t in lp), True)

c = client.completions.create(model="x", prompt=RAW_PROMPT, **greedy)
same("completions = CLI --raw", c.choices[0].text, raw_answer)

resp = client.responses.create(model="x", input=CHAT_PROMPT, max_output_tokens=N, temperature=0)
same("responses (non-stream) = CLI", resp.output_text, chat_answer)

with client.responses.stream(model="x", input=CHAT_PROMPT, max_output_tokens=N, temperature=0) as stream:
    kinds, deltas = [], ""
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas += event.delta
    final = stream.get_final_response()
same("responses.stream deltas = CLI", deltas, chat_answer)
same("responses.stream final text", final.output_text, chat_answer)
same("responses.stream usage", final.usage.output_tokens, resp.usage.output_tokens)
same("responses.stream first and last events", (kinds[0], kinds[-1]), ("response.created", "response.completed"))

# ---- ollama ----
oc = ollama.Client(host=BASE, timeout=120)
options = {"temperature": 0, "num_predict": N}

# The model file ships no chat template, so /api/generate completes the
# prompt as is (as Ollama and the CLI's one-shot mode do for such models).
g = oc.generate(model="gemma3", prompt=RAW_PROMPT, options=options)
same("ollama generate = CLI one-shot", g.response, raw_answer)
same("ollama generate done", (g.done, g.eval_count, g.prompt_eval_count > 0), (True, N, True))
parts = list(oc.generate(model="gemma3", prompt=RAW_PROMPT, options=options, stream=True))
same("ollama generate (stream) = CLI", "".join(p.response for p in parts), raw_answer)
same("ollama generate stream ends done", (parts[-1].done, parts[-1].done_reason), (True, "length"))
g = oc.generate(model="gemma3", prompt=RAW_PROMPT, raw=True, options=options)
same("ollama generate raw = CLI --raw", g.response, raw_answer)

m = oc.chat(model="gemma3", messages=messages, options=options)
same("ollama chat = CLI", m.message.content, chat_answer)
parts = list(oc.chat(model="gemma3", messages=messages, options=options, stream=True))
same("ollama chat (stream) = CLI", "".join(p.message.content or "" for p in parts), chat_answer)
same("ollama chat stream ends done", (parts[-1].done, parts[-1].done_reason in ("stop", "length")), (True, True))

listed = oc.list().models
same("ollama list", [x.model for x in listed], [MODEL_ID])
same("ollama list details", (listed[0].details.format, listed[0].details.quantization_level), ("gguf", "Q4_K_M"))
same("ollama list digest is a sha256", len(listed[0].digest), 64)
same("ollama list size", listed[0].size, os.path.getsize(MODEL))
shown = oc.show("gemma3")
same("ollama show", shown.modelinfo["general.architecture"], "gemma3")
same("ollama show details", shown.details.family, "gemma3")

try:
    oc.chat(model="gemma3", messages=messages, options={"num_ctx": 10_000_000})
    sys.exit("FAIL ollama: num_ctx beyond the context was accepted")
except ollama.ResponseError as e:
    same("ollama error status", e.status_code, 400)
    same("ollama error names num_ctx", "num_ctx" in e.error, True)


# ---- embeddings: this model, and the embedding model when one is given ----
def cli_embed(model, texts):
    """The CLI's vectors for `texts` (one --embed run, one JSON array per line)."""
    args = [BIN, model, "--embed", "-q", "--threads", "2"]
    for t in texts:
        args += ["-p", t]
    run = subprocess.run(args, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in run.stdout.splitlines()]


def close(what, got, want):
    worst = max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w))
    if len(got) != len(want) or any(len(g) != len(w) for g, w in zip(got, want)) or worst > 1e-5:
        sys.exit(f"FAIL {what}: shapes {[len(g) for g in got]} vs {[len(w) for w in want]}, worst {worst}")
    print(f"ok   {what}")


def check_embeddings(base, model, kind):
    texts = ["The cat sat on the mat.", "A dog barked at the mailman.", "Stock markets fell sharply today."]
    # Batched and single passes round differently (the matrix kernels depend
    # on the batch size): lists compare with the CLI's list, one input with
    # the CLI's run of that input alone.
    want = cli_embed(model, texts)
    alone = [cli_embed(model, [t])[0] for t in texts]
    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    # The client asks for base64 unless told otherwise, and decodes it.
    r = client.embeddings.create(model="text-embedding-3-small", input=texts)
    close(f"{kind}: openai embeddings (base64) = CLI --embed", [d.embedding for d in r.data], want)
    same(f"{kind}: openai embeddings order", [d.index for d in r.data], [0, 1, 2])
    same(f"{kind}: openai embeddings usage", (r.usage.prompt_tokens > 3, r.usage.total_tokens), (True, r.usage.prompt_tokens))
    list_tokens = r.usage.prompt_tokens
    r = client.embeddings.create(model="x", input=texts[0], encoding_format="float")
    close(f"{kind}: openai embeddings (float, one input)", [r.data[0].embedding], alone[:1])
    try:
        client.embeddings.create(model="x", input=texts[0], dimensions=7)
        sys.exit(f"FAIL {kind}: dimensions=7 was accepted")
    except openai.BadRequestError as e:
        same(f"{kind}: openai dimensions refused", (e.status_code, "dimensions" in str(e)), (400, True))

    oc = ollama.Client(host=base, timeout=120)
    e = oc.embed(model="nomic-embed-text", input=texts)
    close(f"{kind}: ollama embed = CLI --embed", e.embeddings, want)
    same(f"{kind}: ollama embed prompt_eval_count", e.prompt_eval_count, list_tokens)
    e = oc.embed(model="nomic-embed-text", input=texts[1])
    close(f"{kind}: ollama embed (one input)", e.embeddings, alone[1:2])
    raw = oc.embeddings(model="nomic-embed-text", prompt=texts[2]).embedding
    norm = math.sqrt(sum(x * x for x in raw))
    close(f"{kind}: ollama embeddings (raw) normalized = CLI", [[x / norm for x in raw]], alone[2:])


check_embeddings(BASE, MODEL, "chat model")
if os.environ.get("EMBED_SERVER_URL"):
    wait_ready(os.environ["EMBED_SERVER_URL"])
    check_embeddings(os.environ["EMBED_SERVER_URL"], os.environ["EMBED_MODEL"], "embedding model")

print("all client checks passed")
