#!/usr/bin/env python3
"""Concurrent streaming clients against rusty-llm and llama-server, side by side.

For each model, both servers are started on loopback ports with the same
slots, per-slot context and threads (rusty-llm `--serve --parallel P`,
llama-server `--parallel P` with `-c` = P x the per-slot context, as its
context is split among slots). Then, round by round, each concurrency level
(default 1, 2, 4, 8 clients) is run against each server in turn (the order
alternates, so the two see the same machine noise). A client sends its
requests one after another: streamed `/v1/completions` with a prompt of its
own, greedy, `ignore_eos`, a fixed `max_tokens`.

Measured per run: aggregate generated tokens/s (all tokens over the wall time
from the first request to the last answer), time to first token (request sent
to first text chunk) and inter-token latency (between two text chunks of one
stream), p50 and p95. Printed as a Markdown table (median of the rounds, and
min-max of the throughput); `--json FILE` keeps every run.

Bounded: a fixed number of requests, a timeout per request (`--timeout`) and
for the whole run (`--deadline`); loopback only. Python standard library only.

    scripts/bench-serve.py --reps 2 --threads 2 models/gemma-3-270m-q4_k_m.gguf
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Once upon a time, in a small village at the edge of a great forest, there lived",
    "The three most important ideas in the history of physics are",
    "Write a short poem about the sea at night:\n",
    "Q: How does a refrigerator keep food cold?\nA:",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "The recipe for a simple tomato soup starts with",
    "In 1969, the first humans landed on the Moon. The mission",
    "A good way to learn a new programming language is to",
    "Dear hiring manager, I am writing to apply for the position of",
    "The main differences between cats and dogs as pets are",
    "Photosynthesis is the process by which plants",
    "The city of Rome was founded, according to legend, by",
    "To make a paper airplane that flies far, first",
    "The weather forecast for tomorrow says that",
    "Chapter 1. The old lighthouse keeper had not seen a ship in years, until",
    "Here is a list of ten things to pack for a camping trip:\n1.",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, path, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout}s")


class Server:
    def __init__(self, name, cmd, port, ready_path, log):
        self.name, self.port = name, port
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(port, ready_path, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def stream_one(port, prompt, max_tokens, timeout):
    """One streamed completion: (ttft, [inter-token gaps], tokens) in seconds."""
    body = json.dumps({
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True},
    })
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.perf_counter()
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    arrivals, tokens = [], None
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            tokens = chunk["usage"].get("completion_tokens", tokens)
        for choice in chunk.get("choices") or []:
            if choice.get("text"):
                arrivals.append(time.perf_counter())
    c.close()
    if not arrivals:
        raise RuntimeError("no text streamed")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return arrivals[0] - start, gaps, tokens if tokens is not None else max_tokens


def run_load(port, clients, per_client, max_tokens, timeout):
    results, errors = [], []
    lock = threading.Lock()

    def client(i):
        for j in range(per_client):
            prompt = PROMPTS[(i * per_client + j) % len(PROMPTS)]
            try:
                r = stream_one(port, prompt, max_tokens, timeout)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    ttft = [r[0] for r in results]
    gaps = [g for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    return {
        "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
        "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
        "itl_p50": pct(gaps, 50), "itl_p95": pct(gaps, 95),
    }


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def find_llama_server(given):
    if given:
        return given
    for cand in [Path.home() / ".cache/llama-cpp-ref/build/bin/llama-server"]:
        if cand.is_file():
            return str(cand)
    return shutil.which("llama-server")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx-size", type=int, default=1024, help="per slot")
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300, help="per request, seconds")
    ap.add_argument("--deadline", type=float, default=3600, help="whole run, seconds")
    ap.add_argument("--rusty", default=str(ROOT / "target/release/rusty-llm"))
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--only", choices=["rusty-llm", "llama-server"], default=None)
    ap.add_argument("--json", default=None, help="append every run as a JSON line")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    llama = find_llama_server(args.llama_server)
    if args.only != "rusty-llm" and not llama:
        sys.exit("llama-server not found (build it with ../shared/tools/build-llama-cpp.sh or pass --llama-server)")
    started = time.time()
    logs = ROOT / "target/bench-serve"
    logs.mkdir(parents=True, exist_ok=True)
    out = open(args.json, "a") if args.json else None
    runs = []
    for model in args.models:
        name = Path(model).name
        servers = []
        try:
            if args.only != "llama-server":
                port = free_port()
                cmd = [args.rusty, model, "--serve", f"127.0.0.1:{port}", "--parallel", str(args.parallel),
                       "--ctx-size", str(args.ctx_size), "--threads", str(args.threads)]
                servers.append(Server("rusty-llm", cmd, port, "/ready", logs / f"rusty-{name}.log"))
            if args.only != "rusty-llm":
                port = free_port()
                cmd = [llama, "-m", model, "--host", "127.0.0.1", "--port", str(port),
                       "--parallel", str(args.parallel), "-c", str(args.ctx_size * args.parallel),
                       "-t", str(args.threads), "-tb", str(args.threads)]
                servers.append(Server("llama-server", cmd, port, "/health", logs / f"llama-{name}.log"))
            for s in servers:  # warm-up
                stream_one(s.port, PROMPTS[0], 8, args.timeout)
            for rep in range(args.reps):
                for n in clients:
                    order = servers if (rep + n) % 2 == 0 else servers[::-1]
                    for s in order:
                        if time.time() - started > args.deadline:
                            sys.exit(f"--deadline of {args.deadline}s reached")
                        r = run_load(s.port, n, args.requests_per_client, args.max_tokens, args.timeout)
                        r.update(model=name, server=s.name, clients=n, rep=rep)
                        runs.append(r)
                        print(f"{name} {s.name:12} clients={n} rep={rep}: {r['tok_s']:.1f} tok/s, "
                              f"ttft p50 {r['ttft_p50']*1e3:.0f} ms, itl p50 {r['itl_p50']*1e3:.1f} ms",
                              file=sys.stderr, flush=True)
                        if out:
                            out.write(json.dumps(r) + "\n")
                            out.flush()
        finally:
            for s in servers:
                s.stop()
    report(runs, args)


def report(runs, args):
    print(f"\n`scripts/bench-serve.py --reps {args.reps} --threads {args.threads} --parallel {args.parallel} "
          f"--ctx-size {args.ctx_size} --requests-per-client {args.requests_per_client} "
          f"--max-tokens {args.max_tokens}`: median of {args.reps} rounds (min-max for tokens/s)\n")
    print("| model | clients | server | aggregate tok/s | × 1 client | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    keys = sorted({(r["model"], r["server"]) for r in runs})
    for model in sorted({k[0] for k in keys}):
        for n in sorted({r["clients"] for r in runs}):
            for server in ("rusty-llm", "llama-server"):
                rs = [r for r in runs if r["model"] == model and r["server"] == server and r["clients"] == n]
                if not rs:
                    continue
                med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
                base = [r for r in runs if r["model"] == model and r["server"] == server and r["clients"] == 1]
                scale = med("tok_s") / statistics.median(r["tok_s"] for r in base) if base else float("nan")
                toks = [r["tok_s"] for r in rs]
                print(f"| {model} | {n} | {server} | {med('tok_s'):.1f} ({min(toks):.1f}–{max(toks):.1f}) | "
                      f"{scale:.2f}× | {med('ttft_p50')*1e3:.0f} / {med('ttft_p95')*1e3:.0f} | "
                      f"{med('itl_p50')*1e3:.1f} / {med('itl_p95')*1e3:.1f} |")


if __name__ == "__main__":
    main()
