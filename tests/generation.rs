//! The library API: `Runner`, `Session` and the generation loop, on the tiny
//! llama model (greedy output checked against llama.cpp's continuation).

mod common;

use rusty_llm::engine::{
    GenerateError, GenerationOptions, LoadOptions, Runner, SamplerConfig, Session, SessionOptions,
    StopReason,
};
use rusty_llm::model::KvType;
use serde::Deserialize;

fn tiny(name: &str) -> Option<Runner> {
    let path = common::shared()?.join("tiny").join(format!("{name}.gguf"));
    let options = LoadOptions {
        threads: 2,
        threads_batch: 2,
        ..LoadOptions::default()
    };
    Some(Runner::load(path, &options).unwrap())
}

fn f32_session(runner: &Runner, ctx_size: usize, ubatch: usize) -> Session<'_> {
    runner.session(SessionOptions {
        ctx_size,
        ubatch,
        kv_type: KvType::F32,
    })
}

#[derive(Deserialize)]
struct Reference {
    sequences: Vec<Sequence>,
}

#[derive(Deserialize)]
struct Sequence {
    tokens: Vec<u32>,
    greedy_continuation: Vec<u32>,
    greedy_margin: Vec<f32>,
}

#[test]
fn greedy_generation_matches_llama_cpp() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let shared = common::shared().unwrap();
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(shared.join("ref/tiny-llama-Q8_0.json")).unwrap())
            .unwrap();
    for seq in &reference.sequences {
        let mut options = GenerationOptions::greedy(24);
        options.ignore_eos = true; // llama.cpp's reference run does not stop at EOS
        let mut session = f32_session(&runner, 256, 512);
        let g = session.generate(&seq.tokens, &options, |_| true).unwrap();
        // Compare up to the first near-tie (margin below 0.1 of a typical sd of 4).
        let sure = seq.greedy_margin.iter().take_while(|&&m| m >= 0.4).count();
        assert_eq!(
            g.tokens[..sure],
            seq.greedy_continuation[..sure],
            "prompt {:?}",
            seq.tokens
        );
        assert_eq!(g.generated_tokens, 24);
        assert_eq!(g.stop_reason, StopReason::MaxTokens);
        assert_eq!(g.text, runner.tokenizer().decode(&g.tokens, false));
    }
}

#[test]
fn batched_prefill_and_cache_reuse_give_the_same_logits() {
    let Some(runner) = tiny("tiny-qwen2-F16") else {
        return;
    };
    let prompt: Vec<u32> = (0..40).map(|i| 3 + (i * 37) % 1000).collect();
    let (one_batch, _) = f32_session(&runner, 64, 512).prefill(&prompt).unwrap();
    let (small_batches, _) = f32_session(&runner, 64, 7).prefill(&prompt).unwrap();
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(max_diff(&one_batch, &small_batches) < 1e-4);

    // A second prompt extending the first reuses its cache.
    let mut session = f32_session(&runner, 64, 512);
    session.prefill(&prompt[..25]).unwrap();
    let (reused_logits, reused) = session.prefill(&prompt).unwrap();
    assert_eq!(reused, 25);
    assert!(max_diff(&one_batch, &reused_logits) < 1e-4);
    // A prompt that diverges early recomputes from the divergence.
    let mut other = prompt.clone();
    other[10] = 5;
    let (_, reused) = session.prefill(&other).unwrap();
    assert_eq!(reused, 10);
    assert_eq!(session.tokens(), &other[..]);
}

#[test]
fn context_overflow_is_an_error_before_any_work() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let mut session = f32_session(&runner, 16, 512);
    let prompt: Vec<u32> = (3..13).collect();
    let e = session
        .generate(&prompt, &GenerationOptions::greedy(10), |_| true)
        .unwrap_err();
    assert!(
        matches!(
            e,
            GenerateError::WouldOverflow {
                prompt: 10,
                max_tokens: 10,
                ctx_size: 16
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--ctx-size"));
    assert!(session.tokens().is_empty(), "nothing was computed");

    let long: Vec<u32> = (3..30).collect();
    let e = session.prefill(&long).unwrap_err();
    assert!(
        matches!(
            e,
            GenerateError::PromptTooLong {
                prompt: 27,
                ctx_size: 16
            }
        ),
        "{e}"
    );

    // With context shifting the same request completes.
    let mut options = GenerationOptions::greedy(30);
    options.context_shift = true;
    options.ignore_eos = true;
    let g = session.generate(&prompt, &options, |_| true).unwrap();
    assert_eq!(g.generated_tokens, 30);
    assert!(session.tokens().len() <= 16);
}

#[test]
fn stop_strings_cancel_and_seeds() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let prompt = runner.tokenize_prompt("Hello");
    let mut options = GenerationOptions::greedy(24);
    options.ignore_eos = true;
    let full = f32_session(&runner, 256, 512)
        .generate(&prompt, &options, |_| true)
        .unwrap();
    assert!(full.text.chars().count() > 4, "{:?}", full.text);

    // Stop at a piece of the greedy text: it is cut there and never shown.
    let cut = full
        .text
        .char_indices()
        .nth(full.text.chars().count() / 2)
        .unwrap()
        .0;
    let stop: String = full.text[cut..].chars().take(2).collect();
    let before = &full.text[..full.text.find(&stop).unwrap()];
    options.stop = vec![stop.clone()];
    let mut streamed = String::new();
    let g = f32_session(&runner, 256, 512)
        .generate(&prompt, &options, |piece| {
            streamed.push_str(piece);
            true
        })
        .unwrap();
    assert_eq!(g.stop_reason, StopReason::StopString);
    assert_eq!(g.text, before);
    assert_eq!(streamed, before);

    // The callback can cancel.
    let mut calls = 0;
    let g = f32_session(&runner, 256, 512)
        .generate(&prompt, &GenerationOptions::greedy(24), |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
    assert_eq!(g.stop_reason, StopReason::Cancelled);

    // Sampling: the same seed gives the same text.
    let sampled = |seed| {
        let options = GenerationOptions {
            max_tokens: 16,
            ignore_eos: true,
            sampler: SamplerConfig {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..SamplerConfig::default()
            },
            ..GenerationOptions::default()
        };
        runner.generate("Hello", &options).unwrap().tokens
    };
    assert_eq!(sampled(7), sampled(7));
    assert_ne!(sampled(7), sampled(8));
}

/// A tiny model from ../shared rewritten by [`common::rewritten`].
fn rewritten(
    name: &str,
    edit: impl Fn(&mut rusty_llm::gguf::GgufWriter<'_>, &str) -> bool,
    set: &[(&str, rusty_llm::gguf::Value)],
) -> Option<tempfile::TempPath> {
    let path = common::shared()?.join("tiny").join(format!("{name}.gguf"));
    Some(common::rewritten(&path, edit, set))
}

#[test]
fn broken_models_fail_at_load_naming_the_cause() {
    use rusty_llm::gguf::Value;
    let load = |p: &std::path::Path| {
        Runner::load(p, &LoadOptions::default())
            .unwrap_err()
            .to_string()
    };

    let Some(p) = rewritten("tiny-llama-Q8_0", |_, n| n != "blk.1.ffn_up.weight", &[]) else {
        return;
    };
    assert!(load(&p).contains("blk.1.ffn_up.weight"), "{}", load(&p));

    let p = rewritten(
        "tiny-llama-Q8_0",
        |_, _| true,
        &[("general.architecture", Value::String("mamba".into()))],
    )
    .unwrap();
    assert!(load(&p).contains("mamba"), "{}", load(&p));

    let p = rewritten(
        "tiny-llama-Q8_0",
        |_, _| true,
        &[("llama.attention.head_count_kv", Value::U32(3))],
    )
    .unwrap();
    let e = load(&p);
    assert!(e.contains("llama.attention.head_count_kv"), "{e}");

    let p = rewritten(
        "tiny-llama-Q8_0",
        |_, _| true,
        &[("llama.feed_forward_length", Value::U32(384))],
    )
    .unwrap();
    let e = load(&p);
    assert!(
        e.contains("has shape") && e.contains("ffn_gate.weight"),
        "{e}"
    );
}

#[test]
fn token_ids_outside_the_vocabulary_are_errors() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let e = f32_session(&runner, 32, 512)
        .prefill(&[1, 5000])
        .unwrap_err();
    assert!(e.to_string().contains("5000"), "{e}");
}

#[test]
fn log_probabilities_come_with_the_pieces_they_belong_to() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let mut session = f32_session(&runner, 256, 64);
    let prompt = runner.tokenize_prompt("Once upon a time");
    let options = GenerationOptions {
        top_logprobs: Some(3),
        // A stop string holds text back, so pieces and tokens do not line up.
        stop: vec!["\u{1}never".into()],
        ignore_eos: true,
        ..GenerationOptions::greedy(10)
    };
    let (mut text, mut delivered) = (String::new(), Vec::new());
    let g = session
        .generate_pieces(&prompt, &options, |piece| {
            text.push_str(piece.text);
            delivered.extend_from_slice(piece.logprobs);
            true
        })
        .unwrap();
    assert_eq!(text, g.text);
    // Every token's entry is handed over exactly once, in order.
    assert_eq!(delivered, g.logprobs);
    let ids: Vec<u32> = g.logprobs.iter().map(|l| l.token).collect();
    assert_eq!(ids, g.tokens);
    for l in &g.logprobs {
        // Greedy: the sampled token is the most likely one.
        assert_eq!(l.top.len(), 3);
        assert_eq!(l.top[0], (l.token, l.logprob));
        assert!(l.logprob <= 0.0 && l.top[1].1 <= l.top[0].1);
    }
    // Off by default: no extra pass over the vocabulary.
    let plain = session
        .generate(&prompt, &GenerationOptions::greedy(4), |_| true)
        .unwrap();
    assert!(plain.logprobs.is_empty());
}
