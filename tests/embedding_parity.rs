//! BERT embeddings against llama.cpp's own (../shared/ref/tiny-bert-*.json,
//! recorded by `llama-embedding` with an F32 path; see ../shared/ref/FORMAT.md):
//! the tokens, every token's final hidden state, the mean-pooled vector and
//! its normalized form. The bounds: cosine similarity above 0.9999
//! for F32/F16 weights, above 0.999 for quantized ones (both sides quantize
//! activations to 8 bits there). `EMBED_VERBOSE=1 … -- --nocapture` prints
//! the measured numbers. The Q4_K_M file and its reference are copied into
//! tests/data/embed, so that case runs without ../shared.

mod common;

use rusty_llm::engine::{EmbedOptions, cosine_similarity};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    model_file: String,
    embeddings: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    tokens: Vec<u32>,
    embedding: Vec<f32>,
    embedding_raw: Vec<f32>,
    embedding_raw_l2norm: f64,
    token_embeddings: Vec<Vec<f32>>,
}

/// The model file and its reference: from tests/data/embed when copied
/// there, else from ../shared (skipped outside CI when absent).
fn fixture(stem: &str) -> Option<(PathBuf, Reference)> {
    let local = common::data("embed").join(format!("{stem}.json"));
    let (json, dir) = if local.is_file() {
        (local, common::data("embed"))
    } else {
        let shared = common::shared()?;
        (shared.join(format!("ref/{stem}.json")), shared.join("tiny"))
    };
    let reference: Reference = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    Some((dir.join(&reference.model_file), reference))
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    f64::from(cosine_similarity(a, b).unwrap())
}

/// Checks one model; returns the worst cosine similarity seen.
fn check(stem: &str, bound: f64) -> Option<f64> {
    let (path, reference) = fixture(stem)?;
    let runner = common::runner(&path);
    let n_embd = runner.model().config().n_embd;
    let raw = EmbedOptions {
        normalize: false,
        ..EmbedOptions::new(&runner)
    };
    let mut worst = 1.0f64;
    let mut note = |what: &str, c: f64| {
        if std::env::var_os("EMBED_VERBOSE").is_some() {
            eprintln!("  {stem} {what}: cosine {c:.7}");
        }
        assert!(c > bound, "{stem} {what}: cosine {c} not above {bound}");
        worst = worst.min(c);
    };
    for (i, case) in reference.embeddings.iter().enumerate() {
        let tokens = runner.tokenize_for_embedding(i, &case.text, &raw).unwrap();
        assert_eq!(tokens, case.tokens, "{stem}: tokens of {:?}", case.text);

        // Every token's final hidden state (llama.cpp's pooling NONE).
        let model = runner.model();
        let mut cache = model.new_cache(rusty_llm::model::KvType::F32, tokens.len());
        let mut scratch = rusty_llm::model::ForwardScratch::default();
        let mut segment = [rusty_llm::model::Segment {
            cache: &mut cache,
            tokens: &tokens,
            pos0: 0,
            logits: rusty_llm::model::Logits::None,
        }];
        let hidden = model
            .forward_hidden(runner.batch_pool(), &mut segment, &mut scratch, None)
            .unwrap();
        for (t, want) in case.token_embeddings.iter().enumerate() {
            let ours = &hidden[t * n_embd..(t + 1) * n_embd];
            note(&format!("text {i} token {t}"), cos(ours, want));
        }

        // The pooled vector before and after normalization.
        let pooled = &runner.embed_batch(&[&case.text], &raw).unwrap()[0];
        assert_eq!(pooled.n_tokens, tokens.len());
        note(
            &format!("text {i} pooled"),
            cos(&pooled.vector, &case.embedding_raw),
        );
        let norm = pooled
            .vector
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let rel = (norm - case.embedding_raw_l2norm).abs() / case.embedding_raw_l2norm;
        assert!(
            rel < 1.0 - bound,
            "{stem} text {i}: norm {norm} vs {}",
            case.embedding_raw_l2norm
        );
        let unit = runner.embed(&case.text).unwrap();
        note(&format!("text {i} normalized"), cos(&unit, &case.embedding));
        let max_diff = unit
            .iter()
            .zip(&case.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 50.0 * (1.0 - bound as f32),
            "{stem} text {i}: normalized values differ by up to {max_diff}"
        );
    }
    Some(worst)
}

#[test]
fn tiny_bert_f32_matches_llama_cpp() {
    check("tiny-bert-F32", 0.9999);
}

#[test]
fn tiny_bert_f16_matches_llama_cpp() {
    check("tiny-bert-F16", 0.9999);
}

#[test]
fn tiny_bert_q8_0_matches_llama_cpp() {
    check("tiny-bert-Q8_0", 0.999);
}

#[test]
fn tiny_bert_q4_k_m_matches_llama_cpp() {
    check("tiny-bert-Q4_K_M", 0.999);
}
