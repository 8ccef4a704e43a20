#!/usr/bin/env python3
"""rusty-llm against llama.cpp on the same files, threads and machine.

    scripts/bench-compare.py [--reps 5] [--threads 2] [--pp 512] [--tg 128] [--depth 0] MODEL.gguf...

Builds rusty-llm (release), finds llama.cpp's `llama-bench` ($LLAMA_CPP_BIN, else
~/.cache/llama-cpp-ref/build/bin, else builds it with ../shared/tools/build-llama-cpp.sh),
measures the machine's read bandwidth (examples/read_bandwidth.rs), then for every
model runs `rusty-llm --bench-json` and `llama-bench -o json` alternately, one
repetition each per round, so both see the same machine state. Prints a markdown
table: model, test (ppN, tgN), tokens/s of each (median, with min–max), the ratio
of medians, and for decode the efficiency = weight bytes per token × tokens/s /
read bandwidth. With `--depth D` both programs first fill the context with D tokens
(llama-bench's `-d`), so the tests measure deep into a chat; the efficiency column is
then left out, since it counts weight bytes only and not the cache read.
The machine is noisy: compare medians, look at the spread.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_llama_bench():
    candidates = []
    if os.environ.get("LLAMA_CPP_BIN"):
        candidates.append(Path(os.environ["LLAMA_CPP_BIN"]))
    candidates.append(Path.home() / ".cache/llama-cpp-ref/build/bin")
    for d in candidates:
        if (d / "llama-bench").is_file():
            return d
    build = ROOT.parent / "shared/tools/build-llama-cpp.sh"
    if build.is_file():
        print(f"building llama.cpp with {build} ...", file=sys.stderr)
        subprocess.run(["bash", str(build)], check=True)
        d = Path.home() / ".cache/llama-cpp-ref/build/bin"
        if (d / "llama-bench").is_file():
            return d
    sys.exit("llama-bench not found: set LLAMA_CPP_BIN to the folder holding it")


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def ours(model, args):
    r = run_json([
        str(ROOT / "target/release/rusty-llm"), model, "--bench", "--bench-json",
        "--bench-runs", "1", "--bench-threads", str(args.threads),
        "--bench-prompt-tokens", str(args.pp), "--bench-gen-tokens", str(args.tg),
        "--bench-depth", str(args.depth),
    ])
    run = r["runs"][0]
    return run["prefill_tokens_per_s"], run["decode_tokens_per_s"], r["weight_bytes_per_token"]


def theirs(model, args, bin_dir):
    env = dict(os.environ, LD_LIBRARY_PATH=str(bin_dir))
    rows = run_json([
        str(bin_dir / "llama-bench"), "-m", model, "-t", str(args.threads),
        "-p", str(args.pp), "-n", str(args.tg), "-d", str(args.depth), "-r", "1", "-o", "json",
    ], env=env)
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] == args.pp and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] == args.tg and r["n_prompt"] == 0)
    return pp, tg


def spread(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pp", type=int, default=512)
    p.add_argument("--tg", type=int, default=128)
    p.add_argument("--depth", type=int, default=0)
    args = p.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "read_bandwidth"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    bin_dir = find_llama_bench()
    bandwidth = run_json([str(ROOT / "target/release/examples/read_bandwidth"), str(args.threads)])
    gbps = bandwidth["threads"][str(args.threads)]

    rows = []
    for model in args.models:
        our_pp, our_tg, their_pp, their_tg = [], [], [], []
        weight_bytes = 0
        for rep in range(args.reps):
            # Alternate which program goes first, so neither always runs warm.
            order = [0, 1] if rep % 2 == 0 else [1, 0]
            for who in order:
                if who == 0:
                    pp, tg, weight_bytes = ours(model, args)
                    our_pp.append(pp)
                    our_tg.append(tg)
                else:
                    pp, tg = theirs(model, args, bin_dir)
                    their_pp.append(pp)
                    their_tg.append(tg)
            print(f"{Path(model).name} round {rep + 1}/{args.reps}: "
                  f"pp {our_pp[-1]:.1f} vs {their_pp[-1]:.1f}, tg {our_tg[-1]:.1f} vs {their_tg[-1]:.1f}",
                  file=sys.stderr)
        at = f" @ d{args.depth}" if args.depth else ""
        for test, a, b in [(f"pp{args.pp}{at}", our_pp, their_pp), (f"tg{args.tg}{at}", our_tg, their_tg)]:
            ratio = statistics.median(a) / statistics.median(b)
            eff = ""
            if test.startswith("tg") and not args.depth:
                ours_eff = weight_bytes * statistics.median(a) / (gbps * 1e9)
                theirs_eff = weight_bytes * statistics.median(b) / (gbps * 1e9)
                eff = f"{ours_eff:.0%} / {theirs_eff:.0%}"
            rows.append((Path(model).name, test, spread(a), spread(b), f"{ratio:.2f}×", eff))

    print(f"\n{args.threads} threads, {args.reps} interleaved rounds; read bandwidth {gbps:.1f} GB/s "
          f"(examples/read_bandwidth.rs); tokens/s as median (min–max)\n")
    print("| model | test | rusty-llm | llama.cpp | ratio | decode efficiency (ours / llama.cpp) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
