//! The architectures rusty-llm knows, keyed by `general.architecture`.

use super::config::{Activation, FfnKind, NormKind, NormPlacement, Positions, RopeStyle};
use std::fmt;

/// A model family, as named by `general.architecture` in GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma,
    Gemma2,
    Gemma3,
    Granite,
    Starcoder2,
    Bert,
    /// nomic-embed-text: a BERT encoder with RoPE, fused QKV and SwiGLU.
    NomicBert,
}

/// How a block projects its attention inputs.
enum Qkv {
    /// `attn_q`, `attn_k`, `attn_v`.
    Separate,
    /// `attn_qkv`, or the separate three (phi3 and the BERTs ship both ways).
    FusedOrSeparate,
}

/// Per-block tensors a family requires, beyond the attention projections.
struct BlockTensors {
    qkv: Qkv,
    others: &'static [&'static str],
}

/// How the attention score scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionScale {
    /// `1/√head_dim`.
    InvSqrtHeadDim,
    /// `attention.scale` when present (granite, some llamas), else `1/√head_dim`.
    MetadataOrInvSqrtHeadDim,
    /// Gemma's `query_pre_attn_scalar`: `1/√head_dim`, except the 27B models
    /// (46 layers for gemma2, 62 for gemma3) use `1/√(n_embd/n_head)`.
    Gemma { big_model_layers: usize },
}

/// How token embeddings are scaled on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingScale {
    None,
    /// `√n_embd` (all gemmas).
    SqrtEmbd,
    /// `embedding_scale` from metadata (granite).
    Metadata,
}

/// Which layers use sliding-window attention when the file sets a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwaLayers {
    None,
    /// In every group of `n` layers all but the last are windowed
    /// (llama.cpp's `set_swa_pattern(n)`).
    AllButLastOf(usize),
}

/// The declarative description of a family: everything that is not a number
/// in the file. [`super::ModelConfig::from_metadata`] combines it with the
/// file's keys; the decoder never matches on the architecture.
#[derive(Debug, Clone, Copy)]
pub struct ArchTraits {
    pub norm: NormKind,
    pub rope_style: RopeStyle,
    pub ffn: FfnKind,
    pub qk_norm: bool,
    pub post_norms: bool,
    pub attention_scale: AttentionScale,
    pub embedding_scale: EmbeddingScale,
    pub swa_layers: SwaLayers,
    /// RoPE base of windowed layers when the file does not say (gemma3: 10⁴,
    /// with no frequency scaling); `None` means the global base.
    pub swa_rope_base: Option<f32>,
    /// Attention and final-logit soft-capping, with llama.cpp's defaults used
    /// when the keys are absent.
    pub softcaps: Option<(f32, f32)>,
    /// granite's `residual_scale` and `logit_scale` keys.
    pub granite_scales: bool,
    pub causal: bool,
    /// Before each branch (decoders) or after each residual add (BERT).
    pub norm_placement: NormPlacement,
    pub positions: Positions,
    /// A LayerNorm of the summed input embeddings (`token_embd_norm`, BERT).
    pub embedding_norm: bool,
    /// Whether the family has an output head (`output_norm`, logits); an
    /// encoder's final hidden states are its output.
    pub output_head: bool,
}

impl Architecture {
    /// The family's mechanisms, in one table.
    pub fn traits(self) -> ArchTraits {
        let llama = ArchTraits {
            norm: NormKind::Rms,
            rope_style: RopeStyle::Normal,
            ffn: FfnKind::Gated(Activation::Silu),
            qk_norm: false,
            post_norms: false,
            attention_scale: AttentionScale::MetadataOrInvSqrtHeadDim,
            embedding_scale: EmbeddingScale::None,
            swa_layers: SwaLayers::None,
            swa_rope_base: None,
            softcaps: None,
            granite_scales: false,
            causal: true,
            norm_placement: NormPlacement::Pre,
            positions: Positions::Rope,
            embedding_norm: false,
            output_head: true,
        };
        let neox = ArchTraits {
            rope_style: RopeStyle::Neox,
            attention_scale: AttentionScale::InvSqrtHeadDim,
            ..llama
        };
        let gemma = ArchTraits {
            ffn: FfnKind::Gated(Activation::GeluTanh),
            embedding_scale: EmbeddingScale::SqrtEmbd,
            ..neox
        };
        let encoder = ArchTraits {
            norm: NormKind::Layer,
            ffn: FfnKind::Plain(Activation::GeluTanh),
            causal: false,
            norm_placement: NormPlacement::Post,
            embedding_norm: true,
            output_head: false,
            ..neox
        };
        match self {
            Self::Llama => llama,
            Self::Granite => ArchTraits {
                embedding_scale: EmbeddingScale::Metadata,
                granite_scales: true,
                ..llama
            },
            Self::Qwen2 => neox,
            Self::Qwen3 => ArchTraits {
                qk_norm: true,
                ..neox
            },
            Self::Phi3 => ArchTraits {
                ffn: FfnKind::GatedFused(Activation::Silu),
                ..neox
            },
            Self::Gemma => gemma,
            Self::Gemma2 => ArchTraits {
                post_norms: true,
                attention_scale: AttentionScale::Gemma {
                    big_model_layers: 46,
                },
                swa_layers: SwaLayers::AllButLastOf(2),
                softcaps: Some((50.0, 30.0)),
                ..gemma
            },
            Self::Gemma3 => ArchTraits {
                qk_norm: true,
                post_norms: true,
                attention_scale: AttentionScale::Gemma {
                    big_model_layers: 62,
                },
                swa_layers: SwaLayers::AllButLastOf(6),
                swa_rope_base: Some(10_000.0),
                ..gemma
            },
            Self::Starcoder2 => ArchTraits {
                norm: NormKind::Layer,
                ffn: FfnKind::Plain(Activation::GeluTanh),
                ..neox
            },
            Self::Bert => ArchTraits {
                positions: Positions::Learned,
                ..encoder
            },
            Self::NomicBert => ArchTraits {
                ffn: FfnKind::Gated(Activation::Silu),
                ..encoder
            },
        }
    }

    pub const ALL: [Architecture; 11] = [
        Self::Llama,
        Self::Qwen2,
        Self::Qwen3,
        Self::Phi3,
        Self::Gemma,
        Self::Gemma2,
        Self::Gemma3,
        Self::Granite,
        Self::Starcoder2,
        Self::Bert,
        Self::NomicBert,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The `general.architecture` string, which also prefixes the family's keys
    /// (`gemma3.context_length`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Phi3 => "phi3",
            Self::Gemma => "gemma",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
            Self::Granite => "granite",
            Self::Starcoder2 => "starcoder2",
            Self::Bert => "bert",
            Self::NomicBert => "nomic-bert",
        }
    }

    /// Tensors outside the blocks that every file of the family must have.
    /// (`output.weight` is optional everywhere: absent means tied embeddings.)
    pub fn global_tensors(self) -> &'static [&'static str] {
        match self {
            Self::Bert => &[
                "token_embd.weight",
                "token_embd_norm.weight",
                "position_embd.weight",
            ],
            Self::NomicBert => &["token_embd.weight", "token_embd_norm.weight"],
            _ => &["token_embd.weight", "output_norm.weight"],
        }
    }

    fn block_tensors(self) -> BlockTensors {
        const LLAMA_LIKE: &[&str] = &[
            "attn_norm.weight",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ];
        let (qkv, others): (Qkv, &'static [&'static str]) = match self {
            Self::Llama | Self::Qwen2 | Self::Gemma | Self::Granite => (Qkv::Separate, LLAMA_LIKE),
            Self::Qwen3 => (
                Qkv::Separate,
                &[
                    "attn_norm.weight",
                    "attn_q_norm.weight",
                    "attn_k_norm.weight",
                    "attn_output.weight",
                    "ffn_norm.weight",
                    "ffn_gate.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                ],
            ),
            Self::Phi3 => (
                Qkv::FusedOrSeparate,
                &[
                    "attn_norm.weight",
                    "attn_output.weight",
                    "ffn_norm.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                ],
            ),
            Self::Gemma2 => (
                Qkv::Separate,
                &[
                    "attn_norm.weight",
                    "attn_output.weight",
                    "post_attention_norm.weight",
                    "ffn_norm.weight",
                    "ffn_gate.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                    "post_ffw_norm.weight",
                ],
            ),
            Self::Gemma3 => (
                Qkv::Separate,
                &[
                    "attn_norm.weight",
                    "attn_q_norm.weight",
                    "attn_k_norm.weight",
                    "attn_output.weight",
                    "post_attention_norm.weight",
                    "ffn_norm.weight",
                    "ffn_gate.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                    "post_ffw_norm.weight",
                ],
            ),
            Self::Starcoder2 => (
                Qkv::Separate,
                &[
                    "attn_norm.weight",
                    "attn_output.weight",
                    "ffn_norm.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                ],
            ),
            // Post-norm blocks: `attn_output_norm` after the attention's
            // residual add, `layer_output_norm` after the FFN's.
            Self::Bert => (
                Qkv::FusedOrSeparate,
                &[
                    "attn_output.weight",
                    "attn_output_norm.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                    "layer_output_norm.weight",
                ],
            ),
            Self::NomicBert => (
                Qkv::FusedOrSeparate,
                &[
                    "attn_output.weight",
                    "attn_output_norm.weight",
                    "ffn_gate.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                    "layer_output_norm.weight",
                ],
            ),
        };
        BlockTensors { qkv, others }
    }

    /// Names of required tensors that `has` does not know, for `n_layers` blocks.
    pub fn missing_tensors(self, n_layers: u64, has: impl Fn(&str) -> bool) -> Vec<String> {
        let mut missing: Vec<String> = self
            .global_tensors()
            .iter()
            .filter(|n| !has(n))
            .map(|n| n.to_string())
            .collect();
        let block = self.block_tensors();
        for layer in 0..n_layers {
            let name = |suffix: &str| format!("blk.{layer}.{suffix}");
            let separate = ["attn_q.weight", "attn_k.weight", "attn_v.weight"].map(name);
            let separate_ok = separate.iter().all(|n| has(n));
            match block.qkv {
                Qkv::Separate => missing.extend(separate.into_iter().filter(|n| !has(n))),
                Qkv::FusedOrSeparate => {
                    let fused = name("attn_qkv.weight");
                    if !separate_ok && !has(&fused) {
                        missing.push(fused);
                    }
                }
            }
            missing.extend(block.others.iter().map(|s| name(s)).filter(|n| !has(n)));
        }
        missing
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
