#!/usr/bin/env python3
"""Embedding throughput, rusty-llm vs llama.cpp's llama-embedding, side by side.

64 short sentences (11 to 23 tokens with the vocabularies below) are
embedded two ways by both programs, on the same model file and threads:

- batched: all in passes of up to 1024 tokens (rusty-llm --ubatch 1024;
  llama-embedding -b/-ub/-c 1024), so one pass here;
- one at a time: a pass per sentence (rusty-llm --ubatch 1, which gives each
  input a pass of its own; llama-embedding -b/-ub/-c set to the longest
  sentence's token count, so no two sentences fit in one batch, which the
  script checks).

Each run is a whole process, so loading is measured too and subtracted:
embeddings/s = 63 / (time for the 64 sentences - time for the first one).
Runs are interleaved; the rate from the median and from the fastest runs is
reported, as a markdown table. Decoders are asked for mean pooling on both
sides (llama-embedding --pooling mean), which is rusty-llm's for them.

    scripts/bench-embed.py [MODEL…] [--reps 7] [--threads 2]

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


def is_decoder(ours, model) -> bool:
    out = subprocess.run([str(ours), str(model), "--inspect"], check=True, capture_output=True, text=True)
    return "completion" in json.loads(out.stdout).get("capabilities", [])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
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
    all_file, first_file = data / "embed-64.txt", data / "embed-1.txt"
    all_file.write_text("\n".join(texts) + "\n")
    first_file.write_text(texts[0] + "\n")
    t = str(args.threads)

    rows = []
    for model in models:
        counts = token_counts(ours, model, texts)
        longest = max(counts)
        if min(counts) * 2 <= longest:
            sys.exit(f"{model.name}: sentences of {min(counts)} and {longest} tokens could share "
                     "a one-at-a-time batch of llama-embedding; make them more even")
        pooling = ["--pooling", "mean"] if is_decoder(ours, model) else []

        def ours_cmd(ubatch, file):
            return [str(ours), str(model), "--embed", "-q", "--threads", t, "--threads-batch", t,
                    "--ubatch", str(ubatch), "--prompt-file", str(file)]

        def theirs_cmd(batch, file):
            return [str(theirs), "-m", str(model), "-f", str(file), "-t", t, "-tb", t,
                    "-b", str(batch), "-ub", str(batch), "-c", str(batch), "--no-warmup",
                    "--embd-output-format", "array", *pooling]

        cases = {
            ("rusty-llm", "batched"): (ours_cmd, BATCH),
            ("rusty-llm", "one at a time"): (ours_cmd, 1),
            ("llama-embedding", "batched"): (theirs_cmd, BATCH),
            ("llama-embedding", "one at a time"): (theirs_cmd, longest),
        }
        times = {key: ([], []) for key in cases}
        for _ in range(args.reps):
            for key, (cmd, batch) in cases.items():
                full, first = times[key]
                full.append(timed(cmd(batch, all_file)))
                first.append(timed(cmd(batch, first_file)))
        for (tool, mode), (full, first) in times.items():
            median = 63 / max(1e-9, statistics.median(full) - statistics.median(first))
            best = 63 / max(1e-9, min(full) - min(first))
            rows.append((model.name, f"{min(counts)}–{longest}", tool, mode, median, best))
            print(f"{model.name} {tool} {mode}: {median:.0f} embeddings/s (median), {best:.0f} (fastest)",
                  file=sys.stderr)

    print("| model | tokens per sentence | program | mode | embeddings/s (median runs) | embeddings/s (fastest runs) |")
    print("|---|---|---|---|---:|---:|")
    for name, tokens, tool, mode, median, best in rows:
        print(f"| {name} | {tokens} | {tool} | {mode} | {median:.0f} | {best:.0f} |")
    print(f"\n64 sentences, {args.threads} threads, {args.reps} interleaved runs of each.")


if __name__ == "__main__":
    main()
