//! The engine: what turns a model's logits into generated text.
//!
//! - `sampling.rs`: logits → one token id, as a chain of stages in llama.cpp's
//!   `common_sampler` order (logit bias, penalties, top-k, top-p, min-p,
//!   temperature, draw) with an explicit seeded RNG;
//! - `stop.rs`: stop strings over streamed text, holding back what could still
//!   become a stop string.

pub mod sampling;
pub mod stop;

pub use sampling::{Pick, Sampler, SamplerConfig, SamplingError, Stage};
pub use stop::{StopOutput, StopStrings};
