# The README's two commands, and a few helpers. Each target is plain shell.
MODEL := models/gemma-3-270m-q4_k_m.gguf
PROMPT ?= Once upon a time, in a land far away, there lived a dragon who

.PHONY: run test fetch bench fuzz

## Build, fetch the default model if absent, and complete a prompt with it.
run: fetch
	cargo run --release -- $(MODEL) --raw -p "$(PROMPT)" -n 64

## The whole test suite: format, lints, every test (optimized build), the parity
## tests again with the fast kernel order, and the kernel tests built for aarch64 and
## run under qemu (NEON). CI runs this.
test: fetch
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --profile test-release
	RUSTY_LLM_KERNELS=fast cargo test --profile test-release --test forward_parity --test attention_parity
	scripts/test-neon.sh

fetch:
	scripts/fetch-default-model.sh >/dev/null

bench: fetch
	cargo bench --bench gguf_open

fuzz:
	cd fuzz && cargo +nightly fuzz run gguf_reader -- -max_total_time=60
