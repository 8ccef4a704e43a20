//! Continuous batching: several sequences in one forward pass give each
//! sequence exactly what it gets alone (the model level, then the
//! `Scheduler` end to end), and the scheduler's slots, prefix reuse,
//! cancellation, queue and errors.

mod common;

use rusty_llm::engine::{
    Event, GenerateError, Generation, GenerationOptions, LoadOptions, Request, Runner, Scheduler,
    SchedulerOptions, SessionOptions, SlotState, SubmitError,
};
use rusty_llm::model::{ForwardScratch, KvType, Logits, Segment};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn load(path: impl AsRef<std::path::Path>) -> Arc<Runner> {
    let options = LoadOptions {
        threads: 2,
        threads_batch: 2,
        ..LoadOptions::default()
    };
    Arc::new(Runner::load(path, &options).unwrap())
}

fn tiny(name: &str) -> Option<Arc<Runner>> {
    Some(load(
        common::shared()?.join("tiny").join(format!("{name}.gguf")),
    ))
}

/// Prompts of different lengths (one longer than the prefill chunk used
/// below, so prefill chunks interleave with other sequences' decoding).
const PROMPTS: [&str; 8] = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:",
    "1, 2, 3, 4, 5,",
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep.",
    "Q: What is the boiling point of water at sea level?\nA:",
    "Roses are red,",
    "The quick brown fox",
];

/// The model level: one `forward_batch` over decode tokens and prompt
/// chunks of several sequences (each with its own cache) returns, bit for
/// bit, the logits each sequence's own `forward` returns, on several
/// families and both cache types.
#[test]
fn forward_batch_equals_each_sequence_alone() {
    for name in [
        "tiny-llama-Q4_K_M",
        "tiny-gemma3-Q8_0",
        "tiny-qwen3-Q4_K_M",
        "tiny-llama-F16",
    ] {
        let Some(runner) = tiny(name) else {
            return;
        };
        let model = runner.model();
        let pool = runner.pool();
        for kv_type in [KvType::F16, KvType::F32] {
            // (tokens already cached, tokens in this pass, logits)
            let layout = [
                (5, 1, Logits::Last),
                (0, 9, Logits::Last),
                (12, 1, Logits::Last),
                (3, 70, Logits::None),
                (0, 4, Logits::All),
                (30, 1, Logits::Last),
            ];
            let tokens: Vec<Vec<u32>> = layout
                .iter()
                .enumerate()
                .map(|(i, &(cached, n, _))| {
                    (0..cached + n)
                        .map(|t| ((t * 7919 + i * 104_729) % 250 + 3) as u32)
                        .collect()
                })
                .collect();
            let fresh_caches = || {
                layout
                    .iter()
                    .zip(&tokens)
                    .map(|(&(cached, _, _), toks)| {
                        let mut cache = model.new_cache(kv_type, 128);
                        let mut scratch = ForwardScratch::default();
                        model
                            .forward(
                                pool,
                                &mut cache,
                                &mut scratch,
                                &toks[..cached],
                                0,
                                Logits::None,
                                None,
                            )
                            .unwrap();
                        cache
                    })
                    .collect::<Vec<_>>()
            };
            let mut alone = Vec::new();
            for ((&(cached, _, logits), toks), mut cache) in
                layout.iter().zip(&tokens).zip(fresh_caches())
            {
                let mut scratch = ForwardScratch::default();
                let out = model
                    .forward(
                        pool,
                        &mut cache,
                        &mut scratch,
                        &toks[cached..],
                        cached,
                        logits,
                        None,
                    )
                    .unwrap();
                alone.push(out.to_vec());
            }
            let mut caches = fresh_caches();
            let mut segments: Vec<Segment<'_>> = caches
                .iter_mut()
                .zip(layout.iter().zip(&tokens))
                .map(|(cache, (&(cached, _, logits), toks))| Segment {
                    cache,
                    tokens: &toks[cached..],
                    pos0: cached,
                    logits,
                })
                .collect();
            let rows: Vec<usize> = segments.iter().map(Segment::logit_rows).collect();
            let mut scratch = ForwardScratch::default();
            let together = model
                .forward_batch(pool, &mut segments, &mut scratch, None)
                .unwrap();
            let n_vocab = model.config().n_vocab;
            let mut at = 0;
            for (i, (want, n_rows)) in alone.iter().zip(rows).enumerate() {
                let got = &together[at..at + n_rows * n_vocab];
                at += n_rows * n_vocab;
                assert_eq!(got.len(), want.len(), "{name} {kv_type:?} segment {i}");
                let same = got
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{name} {kv_type:?}: segment {i} {:?} differs in a batch",
                    layout[i]
                );
            }
            assert_eq!(at, together.len());
        }
    }
}

fn scheduler(runner: &Arc<Runner>, parallel: usize, ctx_size: usize, ubatch: usize) -> Scheduler {
    let options = SchedulerOptions {
        parallel,
        session: SessionOptions {
            ctx_size,
            ubatch,
            kv_type: KvType::F16,
        },
        queue_size: 16,
    };
    Scheduler::start(Arc::clone(runner), options)
}

fn request(tokens: Vec<u32>, max_tokens: usize, cache_prompt: bool) -> Request {
    let mut options = GenerationOptions::greedy(max_tokens);
    options.ignore_eos = true;
    Request {
        tokens,
        options,
        cache_prompt,
    }
}

/// The acceptance test: greedy outputs of 8 different prompts run
/// concurrently (4 slots, so some wait and reuse a slot; prompts prefilled in
/// 8-token chunks between other sequences' decode steps) are identical to
/// each prompt generated alone by a `Session`.
#[test]
fn eight_prompts_together_equal_each_alone() {
    let mut runners: Vec<(String, Arc<Runner>)> = Vec::new();
    if let Some(path) = common::default_model() {
        runners.push(("gemma-3-270m".into(), load(path)));
    }
    if let Some(r) = tiny("tiny-llama-Q4_K_M") {
        runners.push(("tiny-llama-Q4_K_M".into(), r));
    }
    for (name, runner) in runners {
        let ubatch = 8;
        let max_tokens = 24;
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| runner.tokenize_prompt(p)).collect();
        assert!(prompts.iter().any(|p| p.len() > 2 * ubatch));
        let alone: Vec<Generation> = prompts
            .iter()
            .map(|p| {
                let mut session = runner.session(SessionOptions {
                    ctx_size: 256,
                    ubatch,
                    kv_type: KvType::F16,
                });
                let options = request(p.clone(), max_tokens, false).options;
                session.generate(p, &options, |_| true).unwrap()
            })
            .collect();
        let s = scheduler(&runner, 4, 256, ubatch);
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| s.submit(request(p.clone(), max_tokens, false)).unwrap())
            .collect();
        for (i, (handle, want)) in handles.into_iter().zip(&alone).enumerate() {
            let mut streamed = String::new();
            let got = handle.wait(|t| streamed.push_str(t)).unwrap();
            assert_eq!(
                got.tokens, want.tokens,
                "{name}: prompt {i} {:?}",
                PROMPTS[i]
            );
            assert_eq!(got.text, want.text, "{name}: prompt {i}");
            assert_eq!(streamed, got.text, "{name}: prompt {i}");
            assert_eq!(got.generated_tokens, max_tokens);
            assert_eq!(got.cached_tokens, 0);
        }
        // Every slot ran a request and is free again; the metrics saw them.
        let m = s.metrics();
        assert_eq!(m.generated_tokens.get(), 8 * max_tokens as u64, "{name}");
        let prompt_total: usize = prompts.iter().map(Vec::len).sum();
        assert_eq!(m.prompt_tokens.get(), prompt_total as u64);
        let mut registry = prometheus_client::registry::Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("\ntime_to_first_token_seconds_count 8\n"),
            "{text}"
        );
        assert!(
            m.steps.get() < (8 * max_tokens) as u64,
            "{name}: {} steps for 8 sequences of {max_tokens} tokens: not batched",
            m.steps.get()
        );
    }
}

/// Waits until `check` holds for the slots (the engine publishes them after
/// each step).
fn wait_for(s: &Scheduler, what: &str, check: impl Fn(&Scheduler) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check(s) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn prefix_reuse_cancellation_queue_and_errors() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let prompt = runner.tokenize_prompt("Once upon a time there was a little robot");
    let s = scheduler(&runner, 2, 128, 512);

    // A repeated prompt reuses the slot's cached prefix (all but its last
    // token) and gives the same greedy answer; a continuation reuses the
    // prompt and the answer; cache_prompt: false prefills from scratch.
    let first = s
        .submit(request(prompt.clone(), 8, true))
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(first.cached_tokens, 0);
    let again = s
        .submit(request(prompt.clone(), 8, true))
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(again.cached_tokens, prompt.len() - 1);
    assert_eq!(again.tokens, first.tokens);
    let mut continued = prompt.clone();
    continued.extend_from_slice(&first.tokens);
    continued.extend_from_slice(&runner.tokenize_prompt(" and then")[1..]);
    let next = s
        .submit(request(continued.clone(), 4, true))
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(next.cached_tokens, prompt.len() + first.tokens.len() - 1);
    let fresh = s
        .submit(request(prompt.clone(), 8, false))
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(fresh.cached_tokens, 0);
    assert!(s.metrics().prefix_cache_hit_tokens.get() > 0);

    // Errors arrive as the request's only event.
    let mut h = s.submit(request(Vec::new(), 4, true)).unwrap();
    assert!(matches!(
        h.blocking_next(),
        Some(Event::Error(GenerateError::EmptyPrompt))
    ));
    assert!(h.blocking_next().is_none());
    let e = s
        .submit(request(vec![1; 200], 4, true))
        .unwrap()
        .wait(|_| {})
        .unwrap_err();
    assert!(
        matches!(
            e,
            GenerateError::PromptTooLong {
                prompt: 200,
                ctx_size: 128
            }
        ),
        "{e}"
    );
    let e = s
        .submit(request(prompt.clone(), 500, true))
        .unwrap()
        .wait(|_| {})
        .unwrap_err();
    assert!(matches!(e, GenerateError::WouldOverflow { .. }), "{e}");
    let e = s
        .submit(request(vec![1, 1 << 30], 4, true))
        .unwrap()
        .wait(|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");

    // Two long generations fill both slots; the slots say so, a third waits
    // in the queue; dropping the handles frees everything.
    let long = |cache| request(prompt.clone(), 100, cache);
    let a = s.submit(long(true)).unwrap();
    let b = s.submit(long(false)).unwrap();
    wait_for(&s, "two busy slots", |s| {
        s.slots().iter().all(|slot| slot.state != SlotState::Idle)
    });
    let ids: Vec<_> = s
        .slots()
        .iter()
        .filter_map(|slot| slot.request_id)
        .collect();
    assert!(ids.contains(&a.id()) && ids.contains(&b.id()), "{ids:?}");
    let c = s.submit(long(true)).unwrap();
    assert_eq!(s.queued(), 1);
    drop((a, b, c));
    wait_for(&s, "idle slots", |s| {
        s.slots().iter().all(|slot| slot.state == SlotState::Idle) && s.queued() == 0
    });
    assert_eq!(s.metrics().busy_slots.get(), 0);
}

#[test]
fn a_full_queue_refuses_and_cancelled_waiters_free_it() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let prompt = runner.tokenize_prompt("Hello");
    let options = SchedulerOptions {
        parallel: 1,
        session: SessionOptions {
            ctx_size: 2048,
            ubatch: 512,
            kv_type: KvType::F16,
        },
        queue_size: 1,
    };
    let s = Scheduler::start(Arc::clone(&runner), options);
    let running = s.submit(request(prompt.clone(), 2000, true)).unwrap();
    wait_for(&s, "the first request in its slot", |s| {
        s.queued() == 0 && s.slots()[0].request_id.is_some()
    });
    let waiting = s.submit(request(prompt.clone(), 4, true)).unwrap();
    assert_eq!(
        s.submit(request(prompt.clone(), 4, true)).unwrap_err(),
        SubmitError::Busy
    );
    // A waiter that goes away leaves room at once.
    drop(waiting);
    let waiting = s.submit(request(prompt.clone(), 4, true)).unwrap();
    drop(running);
    let g = waiting.wait(|_| {}).unwrap();
    assert_eq!(g.generated_tokens, 4);
}

/// A generation that fills its slot's context shifts it (as `Session` does)
/// when the request allows, with the same tokens as a `Session`.
#[test]
fn context_shift_in_a_slot_equals_the_session_one() {
    let Some(runner) = tiny("tiny-llama-Q8_0") else {
        return;
    };
    let prompt = runner.tokenize_prompt("Once upon a time");
    let mut options = GenerationOptions::greedy(60);
    options.ignore_eos = true;
    options.context_shift = true;
    let session_options = SessionOptions {
        ctx_size: 24,
        ubatch: 8,
        kv_type: KvType::F16,
    };
    let alone = runner
        .session(session_options)
        .generate(&prompt, &options, |_| true)
        .unwrap();
    let s = Scheduler::start(
        Arc::clone(&runner),
        SchedulerOptions {
            parallel: 2,
            session: session_options,
            queue_size: 4,
        },
    );
    let req = Request {
        tokens: prompt.clone(),
        options: options.clone(),
        cache_prompt: true,
    };
    let other = s.submit(request(prompt.clone(), 10, false)).unwrap();
    let got = s.submit(req).unwrap().wait(|_| {}).unwrap();
    assert_eq!(got.tokens, alone.tokens);
    assert_eq!(got.generated_tokens, 60);
    other.wait(|_| {}).unwrap();
}
