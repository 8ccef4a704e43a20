//! The architectures rusty-llm knows, keyed by `general.architecture`.

use std::fmt;

/// A model family, as named by `general.architecture` in GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// How a block projects its attention inputs.
enum Qkv {
    /// `attn_q`, `attn_k`, `attn_v`.
    Separate,
    /// `attn_qkv`, or the separate three (phi3 ships both ways).
    FusedOrSeparate,
}

/// Per-block tensors a family requires, beyond the attention projections.
struct BlockTensors {
    qkv: Qkv,
    others: &'static [&'static str],
}

impl Architecture {
    pub const ALL: [Architecture; 10] = [
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
            Self::Bert => (
                Qkv::Separate,
                &[
                    "attn_output.weight",
                    "attn_output_norm.weight",
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
