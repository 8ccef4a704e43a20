//! Can this build run a given GGUF file? Judged from metadata and the tensor
//! directory alone, without touching weight data.

use super::arch::Architecture;
use crate::gguf::{GgmlType, GgufFile};
use serde::Serialize;
use std::collections::BTreeSet;

/// Whether this build can run the model in a file, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct SupportReport {
    pub supported: bool,
    /// What the model can do when supported: `completion` (text generation)
    /// and `embedding` for decoders, `embedding` alone for encoders (BERT).
    pub capabilities: Vec<&'static str>,
    /// One sentence per obstacle; empty when `supported`.
    pub reasons: Vec<String>,
    pub architecture_known: bool,
    pub unsupported_tensor_types: Vec<String>,
    pub missing_tensors: Vec<String>,
}

pub fn check_support(file: &GgufFile) -> SupportReport {
    let meta = file.metadata();
    let mut reasons = Vec::new();

    let arch_name = meta.str("general.architecture").ok().flatten();
    let arch = arch_name.and_then(Architecture::from_name);
    match (arch_name, arch) {
        (None, _) => reasons.push("metadata has no general.architecture".into()),
        (Some(name), None) => reasons.push(format!(
            "architecture {name:?} is not one rusty-llm implements (known: {})",
            Architecture::ALL.map(Architecture::name).join(", ")
        )),
        (Some(_), Some(_)) => {
            // The same parse the loader does, so metadata problems show here.
            let n_vocab = file
                .tensor_info("token_embd.weight")
                .map_or(0, |t| t.rows().1 as usize);
            if let Err(e) = super::ModelConfig::from_metadata(meta, n_vocab) {
                reasons.push(e.to_string());
            }
        }
    }

    let unsupported: BTreeSet<GgmlType> = file
        .tensors()
        .iter()
        .map(|t| t.ggml_type)
        .filter(|&t| !crate::quant::is_supported(t))
        .collect();
    let unsupported_tensor_types: Vec<String> =
        unsupported.iter().map(|t| t.name().to_string()).collect();
    if !unsupported_tensor_types.is_empty() {
        reasons.push(format!(
            "tensor types without kernels: {}",
            unsupported_tensor_types.join(", ")
        ));
    }

    let mut missing_tensors = Vec::new();
    if let Some(arch) = arch {
        let layers = meta
            .u64(&format!("{}.block_count", arch.name()))
            .ok()
            .flatten();
        match layers {
            None => reasons.push(format!("metadata has no {}.block_count", arch.name())),
            Some(n) => {
                missing_tensors = arch.missing_tensors(n, |name| file.tensor_info(name).is_some());
                if !missing_tensors.is_empty() {
                    let shown: Vec<&str> =
                        missing_tensors.iter().take(5).map(String::as_str).collect();
                    reasons.push(format!(
                        "{} required tensors are missing ({}{})",
                        missing_tensors.len(),
                        shown.join(", "),
                        if missing_tensors.len() > 5 {
                            ", …"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
    }

    let capabilities = match arch {
        Some(arch) if reasons.is_empty() && arch.traits().output_head => {
            vec!["completion", "embedding"]
        }
        Some(_) if reasons.is_empty() => vec!["embedding"],
        _ => Vec::new(),
    };
    SupportReport {
        supported: reasons.is_empty(),
        capabilities,
        reasons,
        architecture_known: arch.is_some(),
        unsupported_tensor_types,
        missing_tensors,
    }
}
