# The README's two commands, and a few helpers. Each target is plain shell.
MODEL := models/gemma-3-270m-q4_k_m.gguf

.PHONY: run test fetch bench fuzz

## Build, fetch the default model if absent, and run the main job on it.
run: fetch
	cargo run --release -- $(MODEL) --inspect

## The whole test suite: format, lints, every test (optimized build), and the kernel
## tests built for aarch64 and run under qemu (NEON). CI runs this.
test: fetch
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --profile test-release
	scripts/test-neon.sh

fetch:
	scripts/fetch-default-model.sh >/dev/null

bench: fetch
	cargo bench --bench gguf_open

fuzz:
	cd fuzz && cargo +nightly fuzz run gguf_reader -- -max_total_time=60
