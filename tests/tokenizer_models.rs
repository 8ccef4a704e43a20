//! Tokenizers of real models against llama.cpp's recorded tokenizations, and
//! the tricky corners of each tokenizer model.

mod common;

use rusty_llm::gguf::GgufFile;
use rusty_llm::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::Path;

fn tokenizer(path: &Path) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `tokenizer_checks` of every model in ../shared/ref: llama.cpp's
/// `llama_tokenize(add_special = true)` of three strings (for bert, of the
/// embedding texts).
#[test]
fn every_reference_model_tokenizes_like_llama_cpp() {
    let Some(shared) = common::shared() else {
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(shared.join("ref")).unwrap() {
        let ref_path = entry.unwrap().path();
        if ref_path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&ref_path).unwrap()).unwrap();
        let model_file = r["model_file"].as_str().unwrap();
        let model = if model_file.starts_with("tiny-") {
            shared.join("tiny").join(model_file)
        } else {
            match common::default_model() {
                Some(p) => p,
                None => continue,
            }
        };
        let tok = tokenizer(&model);
        let cases: Vec<(String, Vec<u32>)> = match r.get("tokenizer_checks") {
            Some(checks) => checks
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["text"].as_str().unwrap().to_string(), ids(&c["tokens"])))
                .collect(),
            None => r["embeddings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["text"].as_str().unwrap().to_string(), ids(&e["tokens"])))
                .collect(),
        };
        for (text, expected) in cases {
            assert_eq!(
                tok.encode(&text, true, false),
                expected,
                "{model_file}: {text:?}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 130,
        "only {checked} reference tokenizations checked"
    );
}

fn spm() -> Tokenizer {
    tokenizer(&common::data("vocab/ggml-vocab-llama-spm.gguf"))
}

#[test]
fn spm_whitespace_tabs_and_newlines() {
    let tok = spm();
    // Values from llama.cpp's llama-spm test vectors.
    assert_eq!(tok.encode("  ", false, false), [1678]);
    assert_eq!(tok.encode("   ", false, false), [268]);
    assert_eq!(tok.encode("\t", false, false), [29871, 12]);
    assert_eq!(tok.encode("\n\n", false, false), [29871, 13, 13]);
    for text in ["a  b\t\tc\n\nd", "  leading", "trailing  ", "\r\n"] {
        let ids = tok.encode(text, true, false);
        assert_eq!(ids[0], 1, "BOS first");
        assert_eq!(tok.decode(&ids, false), text);
    }
}

#[test]
fn spm_emoji_and_zwj_fall_back_to_bytes_and_decode_exactly() {
    let tok = spm();
    // Family emoji: four code points joined by ZWJ; none is in the 32k vocabulary.
    let text = "👨‍👩‍👧 ok";
    let ids = tok.encode(text, false, false);
    let bytes: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|&id| (3..=258).contains(&id))
        .collect();
    assert!(bytes.len() >= 10, "byte fallback for the emoji: {ids:?}");
    assert_eq!(tok.decode(&ids, false), text);
}

#[test]
fn invalid_utf8_in_byte_tokens_is_replaced_not_split() {
    let tok = spm();
    let byte = |b: u8| tok.vocab().id(&format!("<0x{b:02X}>")).unwrap();
    // "é" is C3 A9; send C3 alone, then a complete "é", then a stray A9.
    let ids = [byte(0xC3), byte(0x41), byte(0xC3), byte(0xA9), byte(0xA9)];
    assert_eq!(tok.decode(&ids, false), "\u{FFFD}Aé\u{FFFD}");
    let mut stream = tok.stream_decoder(false, false);
    assert_eq!(stream.push(ids[0]), "", "an incomplete character waits");
    assert_eq!(stream.push(ids[1]), "\u{FFFD}A");
    assert_eq!(stream.push(ids[2]), "");
    assert_eq!(stream.push(ids[3]), "é");
    assert_eq!(stream.push(ids[4]), "\u{FFFD}");
    assert_eq!(stream.push(byte(0xE2)), "");
    assert_eq!(
        stream.finish(),
        "\u{FFFD}",
        "a dangling lead byte at the end"
    );
}

#[test]
fn streaming_drops_only_the_added_leading_space() {
    let tok = spm();
    let ids = tok.encode("Hello world", true, false);
    let mut from_start = tok.stream_decoder(false, true);
    let text: String = ids.iter().map(|&id| from_start.push(id)).collect();
    assert_eq!(text, "Hello world");
    // Continuing generated text keeps the space of " world".
    let mut continuing = tok.stream_decoder(false, false);
    assert_eq!(continuing.push(*ids.last().unwrap()), " world");
}

#[test]
fn wordpiece_unknown_characters_and_punctuation() {
    let tok = tokenizer(&common::data("vocab/ggml-vocab-bert-bge.gguf"));
    let unk = tok.vocab().special.unk.unwrap();
    assert_eq!(unk, 100);
    // A character absent from the vocabulary makes its whole word [UNK].
    let ids = tok.encode("hello \u{2603}\u{2603} world", false, false);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[1], unk);
    // Accents are stripped and case folded; punctuation stands alone.
    assert_eq!(
        tok.encode("Café, CAFE!", false, false),
        tok.encode("cafe , cafe !", false, false)
    );
    // [CLS] … [SEP] with add_special.
    let ids = tok.encode("hi", true, false);
    assert_eq!((ids[0], *ids.last().unwrap()), (101, 102));
    assert_eq!(tok.decode(&ids, false), "hi");
}

#[test]
fn special_text_is_parsed_only_when_asked() {
    let Some(model) = common::default_model() else {
        return;
    };
    let tok = tokenizer(&model);
    let start = tok.vocab().id("<start_of_turn>").unwrap();
    let end = tok.vocab().id("<end_of_turn>").unwrap();
    let chat = "<start_of_turn>user\nHi<end_of_turn>";
    let parsed = tok.encode(chat, true, true);
    assert_eq!(parsed[..2], [2, start]);
    assert_eq!(*parsed.last().unwrap(), end);
    let raw = tok.encode(chat, true, false);
    assert!(!raw.contains(&start) && !raw.contains(&end), "{raw:?}");
    // End of generation: EOS and <end_of_turn>.
    assert!(tok.vocab().is_eog(1) && tok.vocab().is_eog(end));
    assert!(!tok.vocab().is_eog(start));
    // Control tokens are hidden from text unless asked for.
    assert_eq!(tok.decode(&parsed, false), "user\nHi");
    assert_eq!(
        tok.decode(&parsed, true),
        "<bos><start_of_turn>user\nHi<end_of_turn>"
    );
}
