#!/usr/bin/env python3
"""Start-up latency and peak memory, rusty-llm against llama.cpp, same file and threads.

    scripts/bench-startup.py [--reps 3] [--threads 2] MODEL.gguf

- Time to first token: wall time of a whole process that loads the model,
  prefills a 16-token prompt and generates one token, warm (file in the page
  cache) and cold (page cache dropped before each run; needs root). llama.cpp
  runs `llama-completion -n 1 --no-warmup -no-cnv` (its warm-up run skipped,
  which only helps it).
- Peak RSS of a 512-token prompt + 128 generated tokens (context 640), from
  the kernel's accounting of each child (`wait4`), beside the goal: model file
  size + F16 KV cache + 100 MB.

The two programs alternate within every repetition so both see the same
machine. Prints a markdown table of min / median per measurement.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from importlib import import_module  # noqa: E402

find_llama_bench = import_module("bench-compare").find_llama_bench

PROMPT16 = "The old lighthouse keeper climbed the stairs every night to light the lamp"


def run(cmd):
    """Runs cmd; returns (wall seconds, peak RSS bytes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}")
    return wall, usage.ru_maxrss * 1024


def drop_caches():
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def kv_bytes(ours, model, ctx):
    """F16 KV cache bytes for ctx positions: every layer's K and V projection
    widths (the rows of attn_k / attn_v), 2 bytes each."""
    width = 0
    for line in subprocess.check_output([ours, model, "--list-tensors"]).decode().splitlines():
        parts = line.split()
        if parts and (parts[0].endswith(".attn_k.weight") or parts[0].endswith(".attn_v.weight")):
            width += int(parts[4])  # "cols x rows": rows
    return width * ctx * 2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    ours = str(ROOT / "target/release/rusty-llm")
    llama = str(find_llama_bench() / "llama-completion")
    t = str(args.threads)
    first_token = {
        "rusty-llm": [ours, args.model, "--raw", "-p", PROMPT16, "-n", "1", "--temp", "0",
                      "--threads", t, "-q"],
        "llama.cpp": [llama, "-m", args.model, "-p", PROMPT16, "-n", "1", "--temp", "0",
                      "-t", t, "--no-warmup", "-no-cnv"],
    }
    words = " ".join(["lighthouse keeper stairs lamp sea night"] * 60)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(words)
        prompt_file = f.name
    n_prompt = len(subprocess.check_output([ours, args.model, "--tokenize", "--prompt-file",
                                            prompt_file]).decode().split(","))
    # Trim to 512 tokens' worth of text by word count (close enough: ~1 token per word).
    keep = words.split()[: max(1, len(words.split()) * 512 // max(n_prompt, 1))]
    Path(prompt_file).write_text(" ".join(keep))
    long_run = {
        "rusty-llm": [ours, args.model, "--raw", "--prompt-file", prompt_file, "-n", "128",
                      "--ignore-eos", "--temp", "0", "-c", "640", "--threads", t, "-q"],
        "llama.cpp": [llama, "-m", args.model, "-f", prompt_file, "-n", "128", "--ignore-eos",
                      "--temp", "0", "-c", "640", "-t", t, "--no-warmup", "-no-cnv"],
    }
    results = {}
    can_drop = drop_caches()
    for rep in range(args.reps):
        for name in ("rusty-llm", "llama.cpp"):
            run(first_token[name])  # warm the page cache
            results.setdefault(("first token, warm (s)", name), []).append(run(first_token[name])[0])
            if can_drop:
                drop_caches()
                results.setdefault(("first token, cold (s)", name), []).append(
                    run(first_token[name])[0])
            results.setdefault(("peak RSS, pp512+tg128 (MB)", name), []).append(
                run(long_run[name])[1] / 1e6)
        print(f"round {rep + 1}/{args.reps} done", file=sys.stderr)
    os.unlink(prompt_file)
    size = os.path.getsize(args.model)
    kv = kv_bytes(ours, args.model, 640)
    print(f"\n{args.threads} threads, {args.reps} interleaved rounds; min / median"
          + ("" if can_drop else "; cold runs skipped (cannot drop the page cache)"))
    print("\n| measurement | rusty-llm | llama.cpp |\n|---|---:|---:|")
    for what in dict.fromkeys(k[0] for k in results):
        cells = []
        for name in ("rusty-llm", "llama.cpp"):
            v = results[(what, name)]
            cells.append(f"{min(v):.3f} / {statistics.median(v):.3f}" if "(s)" in what
                         else f"{min(v):.0f} / {statistics.median(v):.0f}")
        print(f"| {what} | {cells[0]} | {cells[1]} |")
    goal = (size + kv) / 1e6 + 100
    print(f"\nRSS goal: file {size / 1e6:.0f} MB + KV {kv / 1e6:.1f} MB + 100 MB = {goal:.0f} MB")


if __name__ == "__main__":
    main()
