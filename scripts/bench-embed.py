#!/usr/bin/env python3
"""Embedding throughput, rusty-llm vs llama.cpp's llama-embedding, side by side.

64 short sentences (11 to 23 tokens with the vocabularies below) are
embedded two ways by both programs, on the same model file and threads:

- batched: all in passes of up to 1024 tokens (rusty-llm --ubatch 1024;
  llama-embedding -b/-ub/-c 1024), so one pass here;
- one at a time: a pass per sentence (rusty-llm --ubatch 1, which gives each
  input a pass of its own; llama-embedding -b/-ub/-c set to the longest
  sentence's token count rounded up to even (an odd batch trips an assertion
  in its BERT graph) and -np 2 (its outputs buffer must hold n_parallel
  sequences), so no two sentences fit in one batch, which the script checks).

Each run is a whole process, so loading is measured too and subtracted:
embeddings/s = (n - 1) / (time for n sentences - time for the first one),
where n is 64 sentences × ROUNDS (the list repeated): one round for a model
the size of the default one, 32 for a model under 20 MB, where one round is
a few milliseconds, well inside the noise of process start-up.
Runs are interleaved; the rate from the median and from the fastest runs is
reported, as a markdown table. Decoders are asked for mean pooling on both
sides (llama-embedding --pooling mean), which is rusty-llm's for them.

    scripts/bench-embed.py [MODEL…] [--reps 7] [--threads 2] [--rounds N]

MODEL defaults to tests/data/embed/tiny-bert-Q4_K_M.gguf and the default
model. llama-embedding comes from $LLAMA_CPP_BIN or
../shared/tools/build-llama-cpp.sh.
"""
import argparse
import itertools
import json
import pathlib
import statistics
import subprocess
import sys

from llama_ref import llama_bin, timed

ROOT = pathlib.Path(__file__).resolve().parent.parent
BATCH = 1024

SUBJECTS = ["The old farmer", "A young teacher", "My neighbor", "The tired doctor",
            "A small child", "The new manager", "Our quiet friend", "The busy cook"]
VERBS = ["carried a heavy box", "painted the front door", "read a long letter",
         "planted some apple trees", "fixed the broken window", "cooked a warm dinner",
         "sold the blue car", "found a lost key"]
PLACES = ["near the river", "after the storm", "before the school opened", "in the early morning",
          "behind the train station", "during the long winter", "at the town market",
          "under the bright moon"]


def sentences():
    """64 distinct sentences of similar length, the same every run."""
    combos = itertools.product(range(8), range(8))
    return [f"{SUBJECTS[s]} {VERBS[(s + v) % 8]} {PLACES[(s * 3 + v) % 8]}." for s, v in combos]


def token_counts(ours, model, texts):
    """Tokens per sentence as the model embeds them (special tokens included)."""
    counts = []
    for t in texts:
        out = subprocess.run([str(ours), str(model), "--tokenize", "--prompt", t],
                             check=True, capture_output=True, text=True)
        counts.append(len(json.loads(out.stdout)))
    return counts


def agreement(ours_cmd, theirs_cmd, model):
    """The cosine similarity between the two programs' vectors of the first
    sentence (both unit length), printed as a check that they compute the
    same thing."""
    ours = [json.loads(line) for line in
            subprocess.run(ours_cmd, check=True, capture_output=True, text=True).stdout.splitlines()]
    out = subprocess.run(theirs_cmd, check=True, capture_output=True, text=True).stdout
    try:
        theirs = json.loads(out)
    except json.JSONDecodeError:
        # llama.cpp's logger can lose the end of its output at exit.
        print(f"{model.name}: llama-embedding's vectors were cut short; not compared", file=sys.stderr)
        return
    worst = min(sum(a * b for a, b in zip(x, y)) for x, y in zip(ours, theirs))
    print(f"{model.name}: cosine similarity rusty-llm vs llama-embedding {worst:.5f}", file=sys.stderr)


def is_decoder(ours, model) -> bool:
    out = subprocess.run([str(ours), str(model), "--inspect"], check=True, capture_output=True, text=True)
    return "completion" in json.loads(out.stdout).get("capabilities", [])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, help="times the 64 sentences are embedded per run "
                    "(default: 32 for models under 20 MB, else 1)")
    args = ap.parse_args()
    models = [pathlib.Path(m) for m in args.models] or [
        ROOT / "tests/data/embed/tiny-bert-Q4_K_M.gguf",
        ROOT / "models/gemma-3-270m-q4_k_m.gguf",
    ]

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    ours = ROOT / "target/release/rusty-llm"
    theirs = llama_bin() / "llama-embedding"

    texts = sentences()
    data = ROOT / "target/bench-data"
    data.mkdir(parents=True, exist_ok=True)
    first_file = data / "embed-1.txt"
    first_file.write_text(texts[0] + "\n")
    t = str(args.threads)

    rows = []
    for model in models:
        rounds = args.rounds or (32 if model.stat().st_size < 20e6 else 1)
        n = 64 * rounds
        all_file = data / f"embed-{n}.txt"
        all_file.write_text("\n".join(texts * rounds) + "\n")
        counts = token_counts(ours, model, texts)
        longest = max(counts)
        one_batch = longest + longest % 2
        if min(counts) * 2 <= one_batch:
            sys.exit(f"{model.name}: sentences of {min(counts)} tokens could share a "
                     f"one-at-a-time batch of {one_batch} in llama-embedding; make them more even")
        pooling = ["--pooling", "mean"] if is_decoder(ours, model) else []

        def ours_cmd(ubatch, file):
            return [str(ours), str(model), "--embed", "-q", "--threads", t, "--threads-batch", t,
                    "--ubatch", str(ubatch), "--prompt-file", str(file)]

        def theirs_cmd(batch, file):
            parallel = ["-np", "2"] if batch < BATCH else []
            return [str(theirs), "-m", str(model), "-f", str(file), "-t", t, "-tb", t,
                    "-b", str(batch), "-ub", str(batch), "-c", str(batch), *parallel,
                    "--no-warmup", "--embd-output-format", "array", *pooling]

        cases = {
            ("rusty-llm", "batched"): (ours_cmd, BATCH),
            ("rusty-llm", "one at a time"): (ours_cmd, 1),
            ("llama-embedding", "batched"): (theirs_cmd, BATCH),
            ("llama-embedding", "one at a time"): (theirs_cmd, one_batch),
        }
        agreement(ours_cmd(BATCH, first_file), theirs_cmd(BATCH, first_file), model)
        times = {key: ([], []) for key in cases}
        for _ in range(args.reps):
            for key, (cmd, batch) in cases.items():
                full, first = times[key]
                full.append(timed(cmd(batch, all_file)))
                first.append(timed(cmd(batch, first_file)))
        for (tool, mode), (full, first) in times.items():
            median = (n - 1) / max(1e-9, statistics.median(full) - statistics.median(first))
            best = (n - 1) / max(1e-9, min(full) - min(first))
            rows.append((model.name, f"{min(counts)}–{longest}", rounds, tool, mode, median, best))
            print(f"{model.name} {tool} {mode}: {median:.0f} embeddings/s (median), {best:.0f} (fastest)",
                  file=sys.stderr)

    print("| model | tokens per sentence | rounds of 64 | program | mode | embeddings/s (median runs) | embeddings/s (fastest runs) |")
    print("|---|---|---:|---|---|---:|---:|")
    for name, tokens, rounds, tool, mode, median, best in rows:
        print(f"| {name} | {tokens} | {rounds} | {tool} | {mode} | {median:.0f} | {best:.0f} |")
    print(f"\n64 sentences, {args.threads} threads, {args.reps} interleaved runs of each.")


if __name__ == "__main__":
    main()
