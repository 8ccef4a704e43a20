#!/usr/bin/env bash
# Builds rusty-llm for aarch64 and runs the kernel tests under qemu-user, so the
# NEON kernels are tested on every CI run, not just written.
#
# rustup here has only the x86_64 target; Debian's rustc-web/cargo-web (1.96)
# with rust-web-src build std for aarch64 (-Zbuild-std), Debian's cross gcc
# links, and qemu-aarch64 runs the test binary.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/bin/rustc >/dev/null 2>&1 && [ -d /usr/lib/rustlib/src ] || need+=(rustc-web cargo-web rust-web-src)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-neon: installing ${need[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_DIR=target/aarch64
# Optimized like the rest of the suite, so emulation stays quick.
/usr/bin/cargo test -Zbuild-std=std,panic_abort --target aarch64-unknown-linux-gnu \
  --profile test-release --lib --test kernels -- "$@"
