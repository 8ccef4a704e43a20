//! llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf.inp/.out`, encoded
//! without BOS and without parsing special text): every case of every
//! vocabulary must give llama.cpp's ids. One test per vocabulary.
//!
//! The vocabularies and vectors are llama.cpp's (MIT). Those under ~2.5 MB are
//! copied into tests/data/vocab; the larger ones are read from ../shared/vocab.

mod common;

use rusty_llm::gguf::GgufFile;
use rusty_llm::tokenizer::Tokenizer;

fn tokenizer(path: &std::path::Path) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

/// Encodes every case and fails listing each mismatch with both id lists.
fn check_vocab(name: &str) {
    let Some((path, cases)) = common::vocab_cases(name) else {
        return;
    };
    let tok = tokenizer(&path);
    let mut failures = Vec::new();
    for case in &cases {
        let got = tok.encode(&case.text, false, false);
        if got != case.ids {
            failures.push(format!(
                "text {:?}\n  expected {:?}\n  got      {:?}",
                case.text, case.ids, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ from llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{name}: all {} cases match llama.cpp", cases.len());
}

/// decode(encode(text)) == text, and streaming decode equals full decode.
fn check_round_trip(name: &str, lossless: impl Fn(&str) -> bool) {
    let Some((path, cases)) = common::vocab_cases(name) else {
        return;
    };
    let tok = tokenizer(&path);
    for case in &cases {
        let ids = tok.encode(&case.text, true, false);
        let full = tok.decode(&ids, false);
        let mut stream = tok.stream_decoder(false, true);
        let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(
            streamed, full,
            "{name}: streaming differs for {:?}",
            case.text
        );
        if lossless(&case.text) {
            assert_eq!(
                full, case.text,
                "{name}: round trip of {:?} via {ids:?}",
                case.text
            );
        }
    }
}

#[test]
fn llama_spm_vectors() {
    check_vocab("llama-spm");
}

#[test]
fn phi_3_vectors() {
    check_vocab("phi-3");
}

#[test]
fn bert_bge_vectors() {
    check_vocab("bert-bge");
}

#[test]
fn llama_bpe_vectors() {
    check_vocab("llama-bpe");
}

#[test]
fn qwen2_vectors() {
    check_vocab("qwen2");
}

#[test]
fn qwen35_vectors() {
    check_vocab("qwen35");
}

#[test]
fn deepseek_llm_vectors() {
    check_vocab("deepseek-llm");
}

#[test]
fn deepseek_coder_vectors() {
    check_vocab("deepseek-coder");
}

#[test]
fn falcon_vectors() {
    check_vocab("falcon");
}

#[test]
fn starcoder_vectors() {
    check_vocab("starcoder");
}

#[test]
fn refact_vectors() {
    check_vocab("refact");
}

#[test]
fn mpt_vectors() {
    check_vocab("mpt");
}

#[test]
fn command_r_vectors() {
    check_vocab("command-r");
}

#[test]
fn gpt_2_vectors() {
    check_vocab("gpt-2");
}

#[test]
fn gemma_4_vectors() {
    check_vocab("gemma-4");
}

#[test]
fn bpe_round_trips() {
    // Byte-level BPE is lossless on valid UTF-8.
    for name in [
        "llama-bpe",
        "qwen2",
        "gpt-2",
        "starcoder",
        "falcon",
        "deepseek-coder",
    ] {
        check_round_trip(name, |_| true);
    }
    check_round_trip("gemma-4", |_| true);
}

#[test]
fn spm_round_trips() {
    // SentencePiece with byte fallback is lossless except that the text's own
    // leading space merges with the added prefix space.
    check_round_trip("llama-spm", |t| !t.starts_with(' '));
    check_round_trip("phi-3", |t| !t.starts_with(' '));
}

#[test]
fn wordpiece_streams_like_full_decode() {
    // WordPiece lower-cases and drops accents: not lossless.
    check_round_trip("bert-bge", |_| false);
}
