//! The engine: what turns a model's logits into generated text.
//!
//! - `sampling.rs`: logits → one token id, as a chain of stages in llama.cpp's
//!   `common_sampler` order (logit bias, penalties, top-k, top-p, min-p,
//!   temperature, draw) with an explicit seeded RNG.

pub mod sampling;

pub use sampling::{Pick, Sampler, SamplerConfig, SamplingError, Stage};
