//! rusty-llm: a local LLM inference runtime for GGUF models.
//!
//! The modules follow the data path from file bytes to text (see
//! `docs/DESIGN.md`):
//!
//! - [`gguf`]: the file format — reading (memory-mapped, hardened) and writing;
//! - [`tokenizer`]: text ↔ token ids, from GGUF metadata, matching llama.cpp;
//! - [`chat`]: chat templates, conversation → prompt text (Jinja or builtin);
//! - [`quant`]: quantized block formats, scalar reference;
//! - [`kernels`]: SIMD dot products, matrix products, the worker pool;
//! - [`model`]: architecture traits, the typed config, the generic decoder
//!   (`Model::forward`), KV cache and attention;
//! - [`engine`]: from tokens to text: `Runner` and `Session` (the library
//!   API), the generation loop, sampling, stop strings;
//! - [`inspect`]: the compatibility report;
//! - [`profile`]: `RUSTY_LLM_PROFILE=1`, time per operation;
//! - [`discovery`]: finding model files on disk;
//! - [`server`]: the HTTP server (OpenAI-compatible and native routes);
//! - [`cli`]: the command-line surface.

pub mod chat;
pub mod cli;
pub mod discovery;
pub mod engine;
pub mod gguf;
pub mod inspect;
pub mod kernels;
pub mod model;
pub mod profile;
pub mod quant;
pub mod server;
pub mod tokenizer;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
