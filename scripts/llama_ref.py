"""Helpers shared by the side-by-side benchmark scripts: where llama.cpp's
tools are, and how long one whole run of a program takes."""
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def llama_bin() -> pathlib.Path:
    """llama.cpp's bin folder: $LLAMA_CPP_BIN, else ../shared/tools/build-llama-cpp.sh."""
    if os.environ.get("LLAMA_CPP_BIN"):
        return pathlib.Path(os.environ["LLAMA_CPP_BIN"])
    script = SHARED / "tools/build-llama-cpp.sh"
    if not script.exists():
        sys.exit("set LLAMA_CPP_BIN to llama.cpp's bin folder (or put ../shared beside the project)")
    out = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def timed(cmd) -> float:
    """Seconds one run of `cmd` takes, output discarded."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start
