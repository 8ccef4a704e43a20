//! The compatibility report behind `--inspect`: what a GGUF file holds and
//! whether this build can run it, from metadata and the tensor directory only.

use crate::gguf::{GgufFile, Value};
use crate::model::{SupportReport, check_support};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub file: Option<String>,
    pub file_size: u64,
    pub gguf_version: u32,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub parameter_count: u64,
    /// `general.file_type` as llama.cpp names it (`Q4_K_M`), or the raw number.
    pub file_type: Option<String>,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub block_count: Option<u64>,
    pub feed_forward_length: Option<Value>,
    /// A number, or an array for families with per-layer head counts.
    pub head_count: Option<Value>,
    pub head_count_kv: Option<Value>,
    pub tensor_count: usize,
    /// Tensor count and bytes per ggml type.
    pub tensor_types: BTreeMap<String, TypeUsage>,
    pub tokenizer: TokenizerSummary,
    pub chat_template: bool,
    #[serde(flatten)]
    pub support: SupportReport,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeUsage {
    pub tensors: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenizerSummary {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub vocab_size: Option<usize>,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
    pub eot_token_id: Option<u64>,
    pub unknown_token_id: Option<u64>,
    pub padding_token_id: Option<u64>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
}

/// llama.cpp's `llama_ftype` names for `general.file_type`.
pub fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// The file type label of a file: llama.cpp's name, or the number when unknown.
pub fn file_type_label(file: &GgufFile) -> Option<String> {
    let ftype = file.metadata().u64("general.file_type").ok().flatten()?;
    Some(file_type_name(ftype).map_or_else(|| ftype.to_string(), str::to_string))
}

pub fn inspect(file: &GgufFile) -> InspectReport {
    let meta = file.metadata();
    let text = |key: &str| meta.str(key).ok().flatten().map(str::to_string);
    let number = |key: &str| meta.u64(key).ok().flatten();
    let architecture = text("general.architecture");
    let arch_key = |suffix: &str| format!("{}.{suffix}", architecture.as_deref().unwrap_or(""));

    let mut tensor_types: BTreeMap<String, TypeUsage> = BTreeMap::new();
    for t in file.tensors() {
        let usage = tensor_types.entry(t.ggml_type.name().into()).or_default();
        usage.tensors += 1;
        usage.bytes += t.size;
    }

    let tokenizer = TokenizerSummary {
        model: text("tokenizer.ggml.model"),
        pre: text("tokenizer.ggml.pre"),
        vocab_size: meta
            .array("tokenizer.ggml.tokens")
            .ok()
            .flatten()
            .map(|a| a.len()),
        bos_token_id: number("tokenizer.ggml.bos_token_id"),
        eos_token_id: number("tokenizer.ggml.eos_token_id"),
        eot_token_id: number("tokenizer.ggml.eot_token_id"),
        unknown_token_id: number("tokenizer.ggml.unknown_token_id"),
        padding_token_id: number("tokenizer.ggml.padding_token_id"),
        add_bos_token: meta.bool("tokenizer.ggml.add_bos_token").ok().flatten(),
        add_eos_token: meta.bool("tokenizer.ggml.add_eos_token").ok().flatten(),
    };

    InspectReport {
        file: file.path().map(|p| p.display().to_string()),
        file_size: file.file_size(),
        gguf_version: file.version(),
        name: text("general.name"),
        parameter_count: file.tensors().iter().map(|t| t.elements()).sum(),
        file_type: file_type_label(file),
        context_length: number(&arch_key("context_length")),
        embedding_length: number(&arch_key("embedding_length")),
        block_count: number(&arch_key("block_count")),
        feed_forward_length: meta.get(&arch_key("feed_forward_length")).cloned(),
        head_count: meta.get(&arch_key("attention.head_count")).cloned(),
        head_count_kv: meta.get(&arch_key("attention.head_count_kv")).cloned(),
        tensor_count: file.tensors().len(),
        tensor_types,
        tokenizer,
        chat_template: meta.contains("tokenizer.chat_template"),
        support: check_support(file),
        architecture,
    }
}
