"""The server as the official OpenAI and Ollama Python clients see it.

Run by scripts/test-server-clients.sh, which starts the server and sets
SERVER_URL, RUSTY_LLM_BIN and MODEL. Every check asserts on content: greedy
answers over HTTP must equal the CLI's greedy answer for the same prompt.
"""

import os
import subprocess
import sys
import time
import urllib.request

import ollama
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


def wait_ready():
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{BASE}/ready", timeout=5) as r:
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

print("all client checks passed")
