#!/usr/bin/env python3
"""Tokenizer throughput, rusty-llm vs llama.cpp's llama-tokenize, side by side.

Both programs tokenize the same 1 MB of mixed English, Rust code and
multilingual text (built from this repository's own files) with the same
vocabulary. Each run is a whole process, so the load time is measured too and
subtracted: throughput = 1 MB / (time for 1 MB - time for a 1 KB prefix).
Runs of the two programs are interleaved; the rate from the median runs and
from the fastest runs are reported.

    scripts/bench-tokenize.py [--reps 5]

llama-tokenize comes from $LLAMA_CPP_BIN or ../shared/tools/build-llama-cpp.sh.
"""
import argparse
import json
import pathlib
import statistics
import subprocess

from llama_ref import llama_bin, timed

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def corpus() -> bytes:
    english = b"".join(p.read_bytes() for p in [ROOT / "README.md", ROOT / "docs/DESIGN.md"])
    code = b"".join(p.read_bytes() for p in sorted((ROOT / "src").rglob("*.rs")))
    multilingual = b"".join(
        p.read_bytes().replace(b"__ggml_vocab_test__", b"")
        for p in sorted((ROOT / "tests/data/vocab").glob("*.inp"))
    )
    chunks = [english, code, multilingual]
    out = bytearray()
    i = 0
    while len(out) < 1 << 20:
        c = chunks[i % 3]
        start = (i * 7919) % max(1, len(c) - 8192)
        out += c[start : start + 8192]
        i += 1
    text = bytes(out[: 1 << 20])
    return text.decode("utf-8", "ignore").encode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", help="run only tokenizers whose name contains this")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    ours = ROOT / "target/release/rusty-llm"
    theirs = llama_bin() / "llama-tokenize"

    data = ROOT / "target/bench-data"
    data.mkdir(parents=True, exist_ok=True)
    big, small = data / "mixed-1mb.txt", data / "mixed-1kb.txt"
    text = corpus()
    big.write_bytes(text)
    small.write_bytes(text[:1024].decode("utf-8", "ignore").encode("utf-8"))
    mb = len(text) / 1e6

    def vocab(name):
        local = ROOT / f"tests/data/vocab/ggml-vocab-{name}.gguf"
        return local if local.exists() else SHARED / f"vocab/ggml-vocab-{name}.gguf"

    models = [
        ("llama-bpe", vocab("llama-bpe")),
        ("qwen2", vocab("qwen2")),
        ("llama-spm", vocab("llama-spm")),
        ("gemma-3 (default model)", ROOT / "models/gemma-3-270m-q4_k_m.gguf"),
    ]
    print(f"corpus: {len(text)} bytes; {args.reps} interleaved runs each\n")
    print("| tokenizer | rusty-llm MB/s (median, fastest) | llama.cpp MB/s (median, fastest) | ratio (median) | same ids |")
    print("|---|---|---|---|---|")
    for name, path in models:
        if args.only and args.only not in name:
            continue
        if not path.exists():
            print(f"| {name} | missing {path} | | |")
            continue
        cmds = {
            "ours": lambda f: [str(ours), str(path), "--tokenize", "--parse-special", "--prompt-file", str(f)],
            "theirs": lambda f: [str(theirs), "-m", str(path), "-f", str(f), "--ids", "--log-disable", "--no-escape"],
        }
        # Same ids from both, or the speed comparison means nothing.
        outs = [subprocess.run(cmds[w](big), check=True, capture_output=True, text=True).stdout for w in ("ours", "theirs")]
        same = json.loads(outs[0]) == json.loads(outs[1].strip().splitlines()[-1])
        times = {who: {"big": [], "small": []} for who in ("ours", "theirs")}
        for _ in range(args.reps):
            for who in ("ours", "theirs"):
                times[who]["small"].append(timed(cmds[who](small)))
                times[who]["big"].append(timed(cmds[who](big)))
        # Medians (and minima) of each kind of run, then the difference: robust
        # to one slow run on a noisy machine.
        def rate(who, stat):
            t = times[who]
            return mb / max(stat(t["big"]) - stat(t["small"]), 1e-6)
        med = {who: rate(who, statistics.median) for who in times}
        best = {who: rate(who, min) for who in times}
        print(
            f"| {name} | {med['ours']:.1f}, {best['ours']:.1f} | {med['theirs']:.1f}, {best['theirs']:.1f} "
            f"| {med['ours'] / med['theirs']:.2f}x | {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
