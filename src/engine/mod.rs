//! The engine: what turns a model's logits into generated text.
//!
//! - `sampling.rs`: logits → one token id, as a chain of stages in llama.cpp's
//!   `common_sampler` order (logit bias, penalties, top-k, top-p, min-p,
//!   temperature, draw) with an explicit seeded RNG;
//! - `stop.rs`: stop strings over streamed text, holding back what could still
//!   become a stop string;
//! - `session.rs`: one sequence's KV cache, reused across turns (only tokens
//!   after the cached prefix are prefilled, in `ubatch` batches);
//! - `generate.rs`: the loop — sample, stop checks, stream text, decode;
//! - `logprobs.rs`: log-softmax of the raw logits for reported log-probabilities;
//! - `embed.rs`: embeddings — several inputs per batched pass, pooled and
//!   normalized — and cosine similarity;
//! - `runner.rs`: [`Runner`], a loaded model with tokenizer, chat template and
//!   threads: the library's entry point;
//! - `scheduler.rs`: [`Scheduler`], many generations at once on one runner
//!   (continuous batching over sequence slots, prompt-prefix reuse), what
//!   the server runs on; `metrics.rs`: what it counts.

mod embed;
mod generate;
pub mod logprobs;
mod metrics;
mod runner;
pub mod sampling;
mod scheduler;
mod session;
pub mod stop;

pub use embed::{
    EmbedError, EmbedOptions, Embedding, SimilarityError, cosine_similarity, l2_normalize,
};
pub use generate::{GenerateError, Generation, GenerationOptions, Piece, StopReason};
pub use logprobs::{TokenLogprob, token_logprob};
pub use metrics::SchedulerMetrics;
pub use runner::{LoadOptions, Runner, RunnerError};
pub use sampling::{Pick, Sampler, SamplerConfig, SamplingError, Stage};
pub use scheduler::{
    EmbedJob, Event, Handle, Request, Scheduler, SchedulerOptions, SlotState, SlotStatus,
    SubmitError,
};
pub use session::{Session, SessionOptions};
pub use stop::{StopOutput, StopStrings};
