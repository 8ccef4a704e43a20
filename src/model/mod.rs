//! Models: each family's traits and the typed config read from metadata, the
//! checked tensor directory, and the one generic decoder that runs them all.
//!
//! - `arch`: the families and their declarative traits;
//! - `config`: [`ModelConfig`], parsed from metadata in exactly one place;
//! - `weights`: tensors by name, checked against the config at load;
//! - `ops`: norms, RoPE, activations (ggml's rounding);
//! - `kv_cache` and `attention`: the past, and attending to it;
//! - `decoder`: [`Model::forward`];
//! - `support`: can this build run a file (`--inspect`).

mod arch;
mod attention;
mod config;
mod decoder;
mod kv_cache;
pub mod ops;
mod support;
mod weights;

pub use arch::{ArchTraits, Architecture};
pub use config::{
    Activation, FfnKind, LayerConfig, ModelConfig, NormKind, NormPlacement, Pooling, Positions,
    RopeConfig, RopeScaling, RopeStyle,
};
pub use decoder::{ActivationHook, ForwardScratch, Logits, Model, Segment};
pub use kv_cache::{KvCache, KvType};
pub use support::{SupportReport, check_support};
pub use weights::{LayerWeights, Linear, ModelWeights, Norm, QkvProjection};

use crate::kernels::KernelError;
use thiserror::Error;

/// Why a model cannot be loaded or run.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(
        "architecture {0:?} is not one rusty-llm implements (known: llama, qwen2, qwen3, phi3, gemma, gemma2, gemma3, granite, starcoder2, bert, nomic-bert)"
    )]
    UnknownArchitecture(String),
    #[error("metadata {key}: {problem}")]
    Config { key: String, problem: String },
    #[error("tensor {0:?} is required but missing from the file")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found}, expected {expected}")]
    TensorShape {
        name: String,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "context full: {needed} positions needed, the context holds {n_ctx} (raise --ctx-size)"
    )]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { token: u32, n_vocab: usize },
}
