//! Every GGUF file llama.cpp produced for us parses, and what it says matches
//! what llama.cpp's tools report for it.

mod common;

use rusty_llm::gguf::{GgmlType, GgufFile};
use std::collections::BTreeMap;

#[test]
fn every_shared_tiny_model_parses_with_its_architecture() {
    let files = common::shared_ggufs(&["tiny"]);
    if common::shared().is_some() {
        assert!(
            files.len() >= 40,
            "expected the tiny models, found {}",
            files.len()
        );
    }
    for path in files {
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        // tiny-<arch>-<type>.gguf
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let arch_in_name = stem.split('-').nth(1).unwrap();
        let arch = f.metadata().required_str("general.architecture").unwrap();
        assert_eq!(arch, arch_in_name, "{}", path.display());
        assert_eq!(f.metadata().u64("general.alignment").unwrap(), None);
        assert!(!f.tensors().is_empty());
        // The architecture registry knows every family and each one's tensors.
        let support = rusty_llm::model::check_support(&f);
        assert!(support.architecture_known, "{}", path.display());
        assert_eq!(
            support.missing_tensors,
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        assert_eq!(support.unsupported_tensor_types, Vec::<String>::new());
        let embd = f.tensor("token_embd.weight").expect("token_embd.weight");
        assert_eq!(embd.info.dims[0], 256, "n_embd of {}", path.display());
        assert_eq!(embd.data.len() as u64, embd.info.size);
        // Tensors are laid out back to back with 32-byte padding, ending at EOF.
        let end = f
            .tensors()
            .iter()
            .map(|t| (t.offset + t.size).div_ceil(32) * 32)
            .max();
        assert_eq!(
            f.data_offset() + end.unwrap(),
            f.file_size(),
            "{}",
            path.display()
        );
    }
}

#[test]
fn every_shared_vocab_file_parses_as_tokenizer_only() {
    let files = common::shared_ggufs(&["vocab"]);
    if common::shared().is_some() {
        assert!(
            files.len() >= 19,
            "expected the vocab files, found {}",
            files.len()
        );
    }
    for path in files {
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(f.tensors().is_empty(), "{}", path.display());
        let tokens = f
            .metadata()
            .array("tokenizer.ggml.tokens")
            .unwrap()
            .unwrap();
        assert!(
            tokens.len() > 1000,
            "{}: {} tokens",
            path.display(),
            tokens.len()
        );
        assert!(f.metadata().str("tokenizer.ggml.model").unwrap().is_some());
    }
}

#[test]
fn default_model_matches_llama_cpp_facts() {
    let Some(path) = common::default_model() else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let m = f.metadata();
    assert_eq!(m.required_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(m.u64("gemma3.block_count").unwrap(), Some(18));
    assert_eq!(m.u64("gemma3.embedding_length").unwrap(), Some(640));
    assert_eq!(m.u64("gemma3.context_length").unwrap(), Some(32768));
    assert_eq!(
        m.array("tokenizer.ggml.tokens").unwrap().unwrap().len(),
        262144
    );
    assert!(!m.contains("tokenizer.chat_template"));
    assert_eq!(f.tensors().len(), 236);

    let mut histogram: BTreeMap<GgmlType, usize> = BTreeMap::new();
    for t in f.tensors() {
        *histogram.entry(t.ggml_type).or_default() += 1;
    }
    use GgmlType::*;
    let expected = BTreeMap::from([(F32, 109), (Q5_0, 81), (Q4_K, 27), (Q8_0, 10), (Q6_K, 9)]);
    assert_eq!(histogram, expected);

    // Shapes are in ggml order: token_embd is {n_embd, n_vocab}.
    let embd = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embd.shape(), [640, 262144]);
    assert_eq!(embd.ggml_type, Q8_0);
}

#[test]
fn in_memory_and_mapped_modes_agree() {
    let path = common::data("tiny-llama-Q4_K_M.gguf");
    let mapped = GgufFile::open(&path).unwrap();
    let owned = GgufFile::from_bytes(std::fs::read(&path).unwrap()).unwrap();
    let read = GgufFile::read(&path).unwrap();
    assert_eq!(mapped.metadata(), owned.metadata());
    assert_eq!(mapped.tensors(), owned.tensors());
    assert_eq!(mapped.tensors(), read.tensors());
    for t in mapped.tensors() {
        assert_eq!(mapped.view(t).data, owned.view(t).data, "{}", t.name);
    }
}
