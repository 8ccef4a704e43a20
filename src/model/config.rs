//! The typed hyperparameters of a model, read from GGUF metadata in exactly one
//! place. Everything the decoder does differently per family is decided here,
//! from the family's [`ArchTraits`] and the file's keys, so the forward pass
//! only ever looks at this struct.

use super::ModelError;
use super::arch::{ArchTraits, Architecture, AttentionScale, EmbeddingScale, SwaLayers};
use crate::gguf::Metadata;
use serde::Serialize;

/// RMSNorm (`x / rms(x) · w`) or LayerNorm (`(x − mean) / sd · w + b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormKind {
    Rms,
    Layer,
}

/// Which elements RoPE rotates together (ggml's `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` — llama, granite.
    Normal,
    /// Half-split pairs `(x[i], x[i + n_rot/2])` — GPT-NeoX, qwen, phi3, gemma.
    Neox,
}

/// The nonlinearity of a feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    /// `x · sigmoid(x)`.
    Silu,
    /// The tanh approximation of GELU, through ggml's f16 table (see `ops::gelu`).
    GeluTanh,
}

/// How a block's feed-forward network combines its projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FfnKind {
    /// `down(act(gate(x)) · up(x))` with separate `ffn_gate` and `ffn_up`.
    Gated(Activation),
    /// `ffn_up` holds `[gate; up]` stacked: `down(act(first half) · second half)` (phi3).
    GatedFused(Activation),
    /// `down(act(up(x)))` (starcoder2, bert).
    Plain(Activation),
}

/// Where a block's two norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormPlacement {
    /// On each branch's input: `x + attn(norm(x))` (decoders).
    Pre,
    /// On each residual sum: `norm(x + attn(x))` (BERT).
    Post,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Positions {
    /// Queries and keys are rotated (see [`RopeConfig`]).
    Rope,
    /// A learned row per position (`position_embd`) is added to the input
    /// embeddings (BERT); the context cannot exceed the table.
    Learned,
}

/// How an embedding is made from a sequence's final hidden states
/// (`{arch}.pooling_type`, llama.cpp's `llama_pooling_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The average over all tokens.
    Mean,
    /// The first token's (BERT's `[CLS]`).
    Cls,
    /// The last token's.
    Last,
}

impl Pooling {
    /// The pooling a file asks for: `pooling_type` 1 mean, 2 CLS, 3 last.
    /// Absent or 0 ("none": per-token vectors) pools by mean, which is how
    /// decoder models embed; 4 ("rank") is a reranker's scoring head.
    fn from_metadata(value: Option<usize>) -> Result<Self, String> {
        match value {
            None | Some(0 | 1) => Ok(Self::Mean),
            Some(2) => Ok(Self::Cls),
            Some(3) => Ok(Self::Last),
            Some(4) => {
                Err("4 (rank) is a reranker's scoring head, which rusty-llm does not run".into())
            }
            Some(other) => Err(format!(
                "{other} is not a pooling type (0 none, 1 mean, 2 cls, 3 last, 4 rank)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Last => "last",
        }
    }

    /// One vector of width `n_embd` from a sequence's hidden states (`rows`,
    /// `n_tokens × n_embd`, at least one token). The mean weighs every token
    /// by `1/n` and sums in f64, as close as f32 allows to llama.cpp's
    /// product with its averaging matrix.
    pub fn pool(self, rows: &[f32], n_embd: usize) -> Vec<f32> {
        let n_tokens = rows.len() / n_embd;
        match self {
            Self::Cls => rows[..n_embd].to_vec(),
            Self::Last => rows[(n_tokens - 1) * n_embd..][..n_embd].to_vec(),
            Self::Mean => {
                let weight = 1.0 / n_tokens as f32;
                let mut sums = vec![0.0f64; n_embd];
                for row in rows.chunks_exact(n_embd) {
                    for (s, &x) in sums.iter_mut().zip(row) {
                        *s += f64::from(x * weight);
                    }
                }
                sums.into_iter().map(|s| s as f32).collect()
            }
        }
    }
}

/// Frequency scaling applied by RoPE beyond the base.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum RopeScaling {
    None,
    /// Positions are multiplied by `freq_scale` (= 1 / factor).
    Linear,
    /// YaRN: interpolation blended with extrapolation per dimension, and a
    /// magnitude correction (ggml's `rope_yarn`).
    Yarn {
        ext_factor: f32,
        beta_fast: f32,
        beta_slow: f32,
    },
}

/// RoPE settings shared by all layers (per-layer bases are in [`LayerConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RopeConfig {
    pub style: RopeStyle,
    /// Leading dimensions of each head that are rotated.
    pub n_rot: usize,
    pub scaling: RopeScaling,
    /// The training context that YaRN's correction ranges are computed from.
    pub n_ctx_orig: usize,
    /// Magnitude multiplier for cos/sin (`rope.scaling.attn_factor`, usually 1).
    pub attn_factor: f32,
}

/// What differs from layer to layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerConfig {
    /// Keys further back than this many positions (query included) are
    /// masked; `None` is global attention.
    pub sliding_window: Option<usize>,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
}

/// Everything the generic decoder needs to know about a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub n_layers: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    /// The context the model was trained for.
    pub context_length: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub rope: RopeConfig,
    pub layers: Vec<LayerConfig>,
    pub ffn: FfnKind,
    /// RMSNorm of each query and key head before RoPE (qwen3, gemma3).
    pub qk_norm: bool,
    /// RMSNorm of the attention and FFN outputs before the residual add (gemma2/3).
    pub post_norms: bool,
    /// Multiplier of `q·k` before softcap and softmax.
    pub attn_scale: f32,
    /// llama.cpp applies `attn_scale` to the roped queries (`ggml_scale` on
    /// `Qcur`, gemma*) instead of to the scores; it matters where the query
    /// is rounded to f16 (flash attention over an F16 cache).
    pub attn_scale_on_q: bool,
    /// `cap · tanh(score / cap)` on attention scores (gemma2).
    pub attn_softcap: Option<f32>,
    /// `cap · tanh(logit / cap)` on output logits (gemma2).
    pub final_softcap: Option<f32>,
    /// Multiplier of the token embeddings (gemma: √n_embd; granite: metadata).
    pub embedding_scale: Option<f32>,
    /// Multiplier of each branch output before the residual add (granite).
    pub residual_scale: Option<f32>,
    /// Divisor of the output logits (granite's `logit_scale`).
    pub logit_divisor: Option<f32>,
    /// Whether attention is causal (decoders) or bidirectional (encoders).
    pub causal: bool,
    pub norm_placement: NormPlacement,
    pub positions: Positions,
    /// LayerNorm of the input embeddings (`token_embd_norm`).
    pub embedding_norm: bool,
    /// Rows of `token_types` (`tokenizer.ggml.token_type_count`) when the
    /// file says; BERT adds row 0 (segment A) to every token.
    pub n_token_types: Option<usize>,
    /// Whether the model ends in an output norm and logits; encoders end in
    /// their hidden states.
    pub output_head: bool,
    /// How embeddings pool the final hidden states.
    pub pooling: Pooling,
}

/// Reads `{arch}.…` keys with the family prefix and names the key in errors.
struct Keys<'m> {
    meta: &'m Metadata,
    prefix: &'static str,
}

impl Keys<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    fn bad(&self, suffix: &str, problem: impl std::fmt::Display) -> ModelError {
        ModelError::Config {
            key: self.key(suffix),
            problem: problem.to_string(),
        }
    }

    fn usize_opt(&self, suffix: &str) -> Result<Option<usize>, ModelError> {
        let key = self.key(suffix);
        match self.meta.get(&key) {
            // Some files store per-layer counts as arrays; we accept them when
            // every layer agrees, which covers every family we run.
            Some(crate::gguf::Value::Array(items)) => {
                let values = items
                    .to_u64s()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| self.bad(suffix, "expected integers"))?;
                if values.iter().any(|&v| v != values[0]) {
                    return Err(self.bad(
                        suffix,
                        "differs between layers, which rusty-llm does not support",
                    ));
                }
                Ok(Some(values[0] as usize))
            }
            _ => Ok(self
                .meta
                .u64(&key)
                .map_err(|e| self.bad(suffix, e))?
                .map(|v| v as usize)),
        }
    }

    fn usize(&self, suffix: &str) -> Result<usize, ModelError> {
        match self.usize_opt(suffix)? {
            Some(0) => Err(self.bad(suffix, "must be positive")),
            Some(v) => Ok(v),
            None => Err(self.bad(suffix, "missing")),
        }
    }

    fn f32_opt(&self, suffix: &str) -> Result<Option<f32>, ModelError> {
        let v = self
            .meta
            .f64(&self.key(suffix))
            .map_err(|e| self.bad(suffix, e))?;
        match v {
            Some(v) if !v.is_finite() => Err(self.bad(suffix, format!("{v} is not finite"))),
            v => Ok(v.map(|v| v as f32)),
        }
    }

    /// A positive float, treating 0 as absent (llama.cpp's convention for scales).
    fn positive_f32_opt(&self, suffix: &str) -> Result<Option<f32>, ModelError> {
        match self.f32_opt(suffix)? {
            Some(v) if v < 0.0 => Err(self.bad(suffix, format!("{v} is negative"))),
            Some(0.0) => Ok(None),
            v => Ok(v),
        }
    }
}

impl ModelConfig {
    /// Reads the configuration of a decoder (or encoder) from `meta`.
    /// `n_vocab` is the row count of `token_embd`, the one number that the
    /// tensor directory states more reliably than metadata.
    pub fn from_metadata(meta: &Metadata, n_vocab: usize) -> Result<Self, ModelError> {
        let arch_name =
            meta.required_str("general.architecture")
                .map_err(|e| ModelError::Config {
                    key: "general.architecture".into(),
                    problem: e.to_string(),
                })?;
        let arch = Architecture::from_name(arch_name)
            .ok_or_else(|| ModelError::UnknownArchitecture(arch_name.into()))?;
        let traits: ArchTraits = arch.traits();
        let k = Keys {
            meta,
            prefix: arch.name(),
        };

        let n_layers = k.usize("block_count")?;
        let n_embd = k.usize("embedding_length")?;
        let n_head = k.usize("attention.head_count")?;
        let n_head_kv = k.usize_opt("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(k.bad(
                "attention.head_count_kv",
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let default_head_dim = n_embd / n_head;
        let head_dim_k = k
            .usize_opt("attention.key_length")?
            .unwrap_or(default_head_dim);
        let head_dim_v = k
            .usize_opt("attention.value_length")?
            .unwrap_or(default_head_dim);
        if head_dim_k == 0 || head_dim_v == 0 {
            return Err(k.bad("attention.key_length", "head dimension must be positive"));
        }
        let n_ff = k.usize("feed_forward_length")?;
        let context_length = k.usize("context_length")?;

        let (norm_key, norm_default) = match traits.norm {
            NormKind::Rms => ("attention.layer_norm_rms_epsilon", 1e-6),
            NormKind::Layer => ("attention.layer_norm_epsilon", 1e-5),
        };
        let norm_eps = k.f32_opt(norm_key)?.unwrap_or(norm_default);
        if norm_eps <= 0.0 {
            return Err(k.bad(norm_key, format!("{norm_eps} must be positive")));
        }

        let n_rot = k.usize_opt("rope.dimension_count")?.unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(k.bad(
                "rope.dimension_count",
                format!("{n_rot} must be even and at most the head dimension {head_dim_k}"),
            ));
        }
        let rope_base = k.positive_f32_opt("rope.freq_base")?.unwrap_or(10_000.0);
        let factor = k.positive_f32_opt("rope.scaling.factor")?;
        let scaling_type = meta
            .str(&k.key("rope.scaling.type"))
            .map_err(|e| k.bad("rope.scaling.type", e))?;
        let freq_scale = factor.map_or(1.0, |f| 1.0 / f);
        let scaling = match (scaling_type, factor) {
            (None | Some("none"), _) | (_, None) => RopeScaling::None,
            (Some("linear"), Some(_)) => RopeScaling::Linear,
            (Some("yarn"), Some(_)) => RopeScaling::Yarn {
                ext_factor: 1.0,
                beta_fast: k
                    .positive_f32_opt("rope.scaling.yarn_beta_fast")?
                    .unwrap_or(32.0),
                beta_slow: k
                    .positive_f32_opt("rope.scaling.yarn_beta_slow")?
                    .unwrap_or(1.0),
            },
            (Some(other), Some(_)) => {
                return Err(k.bad(
                    "rope.scaling.type",
                    format!("{other:?} is not supported (none, linear, yarn)"),
                ));
            }
        };
        let freq_scale = if scaling == RopeScaling::None {
            1.0
        } else {
            freq_scale
        };
        let n_ctx_orig = k
            .usize_opt("rope.scaling.original_context_length")?
            .unwrap_or(context_length);
        let attn_factor = k
            .positive_f32_opt("rope.scaling.attn_factor")?
            .unwrap_or(1.0);

        let sliding_window = k.usize_opt("attention.sliding_window")?.filter(|&w| w > 0);
        let swa_base = k
            .positive_f32_opt("rope.freq_base_swa")?
            .or(traits.swa_rope_base)
            .unwrap_or(rope_base);
        let layers = (0..n_layers)
            .map(|il| {
                let is_swa = match (traits.swa_layers, sliding_window) {
                    (SwaLayers::None, _) | (_, None) => false,
                    // llama.cpp's `set_swa_pattern(n)`: in every group of n
                    // layers, all but the last use the window.
                    (SwaLayers::AllButLastOf(n), Some(_)) => il % n < n - 1,
                };
                if is_swa {
                    LayerConfig {
                        sliding_window,
                        rope_base: swa_base,
                        rope_freq_scale: if traits.swa_rope_base.is_some() {
                            1.0
                        } else {
                            freq_scale
                        },
                    }
                } else {
                    LayerConfig {
                        sliding_window: None,
                        rope_base,
                        rope_freq_scale: freq_scale,
                    }
                }
            })
            .collect();

        let attn_scale = match traits.attention_scale {
            AttentionScale::InvSqrtHeadDim => 1.0 / (head_dim_k as f32).sqrt(),
            AttentionScale::MetadataOrInvSqrtHeadDim => k
                .positive_f32_opt("attention.scale")?
                .unwrap_or(1.0 / (head_dim_k as f32).sqrt()),
            AttentionScale::Gemma { big_model_layers } if n_layers == big_model_layers => {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            }
            AttentionScale::Gemma { .. } => 1.0 / (head_dim_k as f32).sqrt(),
        };
        let attn_scale_on_q = matches!(traits.attention_scale, AttentionScale::Gemma { .. });
        let embedding_scale = match traits.embedding_scale {
            EmbeddingScale::None => None,
            EmbeddingScale::SqrtEmbd => Some((n_embd as f32).sqrt()),
            EmbeddingScale::Metadata => k.positive_f32_opt("embedding_scale")?,
        };
        let causal = k
            .meta
            .bool(&k.key("attention.causal"))
            .ok()
            .flatten()
            .unwrap_or(traits.causal);
        let pooling = Pooling::from_metadata(k.usize_opt("pooling_type")?)
            .map_err(|problem| k.bad("pooling_type", problem))?;

        Ok(Self {
            arch,
            n_layers,
            n_embd,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff,
            n_vocab,
            context_length,
            norm: traits.norm,
            norm_eps,
            rope: RopeConfig {
                style: traits.rope_style,
                n_rot,
                scaling,
                n_ctx_orig,
                attn_factor,
            },
            layers,
            ffn: traits.ffn,
            qk_norm: traits.qk_norm,
            post_norms: traits.post_norms,
            attn_scale,
            attn_scale_on_q,
            attn_softcap: match traits.softcaps {
                Some((attn, _)) => Some(
                    k.positive_f32_opt("attn_logit_softcapping")?
                        .unwrap_or(attn),
                ),
                None => None,
            },
            final_softcap: match traits.softcaps {
                Some((_, last)) => Some(
                    k.positive_f32_opt("final_logit_softcapping")?
                        .unwrap_or(last),
                ),
                None => None,
            },
            embedding_scale,
            residual_scale: if traits.granite_scales {
                k.positive_f32_opt("residual_scale")?
            } else {
                None
            },
            logit_divisor: if traits.granite_scales {
                k.positive_f32_opt("logit_scale")?
            } else {
                None
            },
            causal,
            norm_placement: traits.norm_placement,
            positions: traits.positions,
            embedding_norm: traits.embedding_norm,
            n_token_types: meta
                .u64("tokenizer.ggml.token_type_count")
                .map_err(|e| ModelError::Config {
                    key: "tokenizer.ggml.token_type_count".into(),
                    problem: e.to_string(),
                })?
                .filter(|&n| n > 0)
                .map(|n| n as usize),
            output_head: traits.output_head,
            pooling,
        })
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    /// Width of all key heads together.
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Width of all value heads together.
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}
