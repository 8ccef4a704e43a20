#!/usr/bin/env bash
# Builds rusty-llm for aarch64 and runs the lib unit tests and the kernel
# integration tests (tests/kernels*.rs) under qemu-user, so the NEON kernels are tested on every CI run, not just
# written. Runs them twice: on an emulated CPU with the dot-product extension
# (qemu's `max`, the `sdot` kernels) and on a Cortex-A72 without it (the plain
# NEON kernels). `QEMU_CPU=<model>` runs only that model; arguments go to the
# test binaries (e.g. a test-name filter).
#
# Needs (Debian 12, installed here with apt-get when missing; CI runs as root):
#   rustc-web cargo-web rust-web-src  rustc/cargo >= 1.95 (bookworm-security)
#                                     with std's source, to build std for
#                                     aarch64 (-Zbuild-std): rustup's toolchain
#                                     here has only the x86_64 target
#   gcc-aarch64-linux-gnu libc6-dev-arm64-cross   the linker and glibc
#   qemu-user                         qemu-aarch64, which runs the tests
# The first build takes ~3-5 minutes (std included); later ones reuse
# target/aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
{ [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src/rust/library ]; } ||
  need+=(rustc-web cargo-web rust-web-src)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && [ -d /usr/aarch64-linux-gnu/lib ] ||
  need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-neon: installing with apt-get: ${need[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "test-neon: installed ${need[*]}" >&2
fi

# rust-version in Cargo.toml: Debian's plain `rustc` package (1.85) is too old;
# rustc-web from bookworm-security is what this script is written for.
version=$(/usr/bin/rustc --version | awk '{print $2}')
min=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
if [ "$(printf '%s\n%s\n' "$min" "${version%%-*}" | sort -V | head -1)" != "$min" ]; then
  echo "test-neon: /usr/bin/rustc is $version, the crate needs >= $min (Debian: rustc-web from bookworm-security)" >&2
  exit 1
fi

export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_DIR=target/aarch64
# Optimized like the rest of the suite, so emulation stays quick.
cargo_test=(/usr/bin/cargo test -Zbuild-std=std,panic_abort --target aarch64-unknown-linux-gnu
  --profile test-release --lib)
for t in tests/kernels*.rs; do
  t=${t#tests/}
  cargo_test+=(--test "${t%.rs}")
done

start=$SECONDS
"${cargo_test[@]}" --no-run
echo "test-neon: built in $((SECONDS - start)) s" >&2

if [ -n "${QEMU_CPU:-}" ]; then
  cpus=("$QEMU_CPU")
else
  # max: every feature qemu emulates, dotprod included; cortex-a72: ARMv8.0
  # NEON without dotprod.
  cpus=(max cortex-a72)
fi
for cpu in "${cpus[@]}"; do
  echo "test-neon: running under qemu-aarch64 -cpu $cpu" >&2
  # A unit test checks the kernels saw the CPU we meant (so the sdot and the
  # plain flavours are each really run).
  case $cpu in
    max) expect=1 ;;
    cortex-a72) expect=0 ;;
    *) expect= ;;
  esac
  QEMU_CPU=$cpu RUSTY_LLM_EXPECT_DOTPROD=$expect "${cargo_test[@]}" -- "$@"
done
