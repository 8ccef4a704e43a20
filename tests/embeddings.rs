//! Embeddings beyond the llama.cpp parity of `embedding_parity.rs`: inputs
//! batched into one pass do not see each other, long inputs fail or are
//! truncated on request, decoders mean-pool their final norm, the pooling
//! kinds, and nomic-bert — a tiny random one written with the GGUF writer
//! (examples/make_tiny_nomic_bert.rs), checked against llama.cpp's vectors
//! for it (recorded by scripts/record-nomic-fixture.sh), against a plain f64
//! computation of the architecture, and for invariants (unit length, order
//! and company in a batch do not matter).

mod common;

use rusty_llm::engine::{EmbedError, EmbedOptions, Runner, cosine_similarity, l2_normalize};
use rusty_llm::gguf::{GgmlType, GgufFile};
use rusty_llm::model::{ForwardScratch, KvType, Logits};

const TEXTS: [&str; 4] = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "llama.cpp computes sentence embeddings: 42 tokens, 3.14 pi!",
    "A cat sat on the mat.",
];

fn tiny_bert() -> Runner {
    common::runner(&common::data("embed/tiny-bert-Q4_K_M.gguf"))
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    cosine_similarity(a, b).unwrap()
}

/// Each input's vector when it has a pass to itself.
fn one_at_a_time(runner: &Runner, texts: &[&str]) -> Vec<Vec<f32>> {
    let options = EmbedOptions {
        batch_tokens: 1,
        ..EmbedOptions::new(runner)
    };
    let out = runner.embed_batch(texts, &options).unwrap();
    out.into_iter().map(|e| e.vector).collect()
}

/// Batched and single passes round differently (the matrix kernels depend
/// on the batch size), so equal means equal to f32 rounding; an input that
/// saw another would be far off.
fn assert_same(a: &[f32], b: &[f32], what: &str) {
    let c = cos(a, b);
    assert!(c > 0.99999, "{what}: cosine {c}");
}

#[test]
fn batched_inputs_equal_single_ones_and_do_not_see_each_other() {
    let runner = tiny_bert();
    let alone = one_at_a_time(&runner, &TEXTS);
    let options = EmbedOptions::new(&runner);
    let batched = runner.embed_batch(&TEXTS, &options).unwrap();
    assert_eq!(batched.len(), TEXTS.len());
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        assert_same(&b.vector, a, &format!("text {i} batched vs alone"));
        let norm: f32 = b.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "text {i}: |v| = {norm}");
    }
    // The same text in other company, and in another place of the batch.
    let reordered = runner
        .embed_batch(&[TEXTS[3], TEXTS[1], TEXTS[0]], &options)
        .unwrap();
    assert_same(&reordered[1].vector, &alone[1], "text 1 among others");
    assert_same(&reordered[2].vector, &alone[0], "text 0 last");
    // Different texts stay different (a leak would pull them together).
    assert!(cos(&batched[0].vector, &batched[1].vector) < 0.99);
}

#[test]
fn any_pass_size_gives_the_same_vectors() {
    let runner = tiny_bert();
    let alone = one_at_a_time(&runner, &TEXTS);
    // 5 + 16 + 34 + 10 tokens: passes of one, two or three inputs.
    for batch_tokens in [21, 40, 64] {
        let options = EmbedOptions {
            batch_tokens,
            ..EmbedOptions::new(&runner)
        };
        let out = runner.embed_batch(&TEXTS, &options).unwrap();
        let counts: Vec<usize> = out.iter().map(|e| e.n_tokens).collect();
        assert_eq!(counts, [5, 16, 34, 10]);
        for (i, e) in out.iter().enumerate() {
            assert_same(
                &e.vector,
                &alone[i],
                &format!("batch {batch_tokens} text {i}"),
            );
        }
    }
}

#[test]
fn long_inputs_are_refused_naming_both_lengths_or_truncated_on_request() {
    let runner = tiny_bert();
    let strict = EmbedOptions {
        ctx_size: 8,
        ..EmbedOptions::new(&runner)
    };
    let err = runner.embed_batch(&TEXTS, &strict).unwrap_err();
    assert!(
        matches!(
            err,
            EmbedError::InputTooLong {
                index: 1,
                tokens: 16,
                ctx_size: 8
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("16") && message.contains('8'), "{message}");

    let cut = EmbedOptions {
        truncate: true,
        ..strict
    };
    let tokens = runner.tokenize_for_embedding(1, TEXTS[1], &cut).unwrap();
    let full = runner.tokenizer().encode(TEXTS[1], true, false);
    // The first 7 tokens, then [SEP] kept last.
    assert_eq!(tokens.len(), 8);
    assert_eq!(tokens[..7], full[..7]);
    assert_eq!(tokens[7], *full.last().unwrap());
    let truncated = runner.embed_batch(&[TEXTS[1]], &cut).unwrap();
    assert_eq!(truncated[0].n_tokens, 8);
    let direct = runner
        .embed_tokens(&[tokens], &EmbedOptions::new(&runner))
        .unwrap();
    assert_same(&truncated[0].vector, &direct[0].vector, "truncated");

    // The model's own limit: the learned position table (256 rows).
    let long = "word ".repeat(300);
    let err = runner.embed(&long).unwrap_err().to_string();
    assert!(err.contains("302") && err.contains("256"), "{err}");
}

#[test]
fn decoders_embed_by_mean_pooling_their_final_norm() {
    let runner = common::runner(&common::data("tiny-llama-Q4_K_M.gguf"));
    let model = runner.model();
    let n_embd = model.config().n_embd;
    let texts = ["Hello world", "Once upon a time there was a dragon"];
    let batched = runner
        .embed_batch(&texts, &EmbedOptions::new(&runner))
        .unwrap();
    for (i, text) in texts.iter().enumerate() {
        // The generation path, with a hook on the normalized last layer.
        let tokens = runner.tokenize_prompt(text);
        let mut rows = Vec::new();
        let mut hook = |name: &str, values: &[f32]| {
            if name == "result_norm" {
                rows = values.to_vec();
            }
        };
        let mut cache = model.new_cache(KvType::F32, tokens.len());
        model
            .forward(
                runner.batch_pool(),
                &mut cache,
                &mut ForwardScratch::default(),
                &tokens,
                0,
                Logits::All,
                Some(&mut hook),
            )
            .unwrap();
        assert_eq!(rows.len(), tokens.len() * n_embd);
        let mut mean = vec![0.0f32; n_embd];
        for row in rows.chunks_exact(n_embd) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x / tokens.len() as f32;
            }
        }
        l2_normalize(&mut mean);
        assert_eq!(batched[i].n_tokens, tokens.len());
        assert_same(&batched[i].vector, &mean, &format!("decoder text {i}"));
    }
}

// ---- nomic-bert: a tiny random model and a plain computation of it ----

#[path = "../examples/make_tiny_nomic_bert.rs"]
mod tiny_nomic;
use tiny_nomic::{EPS, HEAD_DIM, N_EMBD, N_HEAD, N_LAYER, NomicWeights, ROPE_BASE};

/// The tiny nomic-bert's weights and the vocabulary its files take
/// (tiny-bert's).
fn tiny_nomic() -> (NomicWeights, GgufFile) {
    let vocab = GgufFile::open(common::data("embed/tiny-bert-Q4_K_M.gguf")).unwrap();
    let weights = NomicWeights::new(tiny_nomic::vocab_size(&vocab).unwrap());
    (weights, vocab)
}

fn layer_norm(x: &[f64], w: &[f32], b: &[f32]) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + EPS).sqrt();
    x.iter()
        .zip(w.iter().zip(b))
        .map(|(v, (&w, &b))| (v - mean) * inv * f64::from(w) + f64::from(b))
        .collect()
}

/// `W x` for `W` of `rows × x.len()`.
fn matvec(w: &[f32], x: &[f64]) -> Vec<f64> {
    w.chunks_exact(x.len())
        .map(|row| row.iter().zip(x).map(|(&w, &x)| f64::from(w) * x).sum())
        .collect()
}

/// nomic-bert written out plainly in f64 (after llama.cpp's `bert.cpp` graph
/// for this architecture): embeddings + token type 0, LayerNorm; per layer
/// fused QKV, NEOX RoPE, bidirectional softmax attention, output projection,
/// residual + LayerNorm, SwiGLU FFN, residual + LayerNorm. Returns each
/// token's final hidden state.
fn plain_nomic_bert(w: &NomicWeights, tokens: &[u32]) -> Vec<Vec<f64>> {
    let d = N_EMBD;
    let emb = w.get("token_embd.weight");
    let type0 = &w.get("token_types.weight")[..d];
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            let row = &emb[t as usize * d..][..d];
            let sum: Vec<f64> = row
                .iter()
                .zip(type0)
                .map(|(&a, &b)| f64::from(a) + f64::from(b))
                .collect();
            layer_norm(
                &sum,
                w.get("token_embd_norm.weight"),
                w.get("token_embd_norm.bias"),
            )
        })
        .collect();
    let rope = |v: &mut [f64], pos: usize| {
        let half = HEAD_DIM / 2;
        for head in v.chunks_exact_mut(HEAD_DIM) {
            for i in 0..half {
                let theta = pos as f64 * ROPE_BASE.powf(-2.0 * i as f64 / HEAD_DIM as f64);
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * theta.cos() - b * theta.sin();
                head[i + half] = a * theta.sin() + b * theta.cos();
            }
        }
    };
    for il in 0..N_LAYER {
        let p = |n: &str| format!("blk.{il}.{n}");
        let mut q = Vec::new();
        let mut k = Vec::new();
        let mut v = Vec::new();
        for (pos, xt) in x.iter().enumerate() {
            let qkv = matvec(w.get(&p("attn_qkv.weight")), xt);
            let (mut qt, mut kt) = (qkv[..d].to_vec(), qkv[d..2 * d].to_vec());
            rope(&mut qt, pos);
            rope(&mut kt, pos);
            q.push(qt);
            k.push(kt);
            v.push(qkv[2 * d..].to_vec());
        }
        let scale = 1.0 / (HEAD_DIM as f64).sqrt();
        for t in 0..x.len() {
            let mut attn = vec![0.0; d];
            for h in 0..N_HEAD {
                let hs = h * HEAD_DIM..(h + 1) * HEAD_DIM;
                let scores: Vec<f64> = k
                    .iter()
                    .map(|kj| {
                        let dot: f64 = q[t][hs.clone()]
                            .iter()
                            .zip(&kj[hs.clone()])
                            .map(|(a, b)| a * b)
                            .sum();
                        dot * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for (a, vv) in attn[hs.clone()].iter_mut().zip(&v[j][hs.clone()]) {
                        *a += ej / sum * vv;
                    }
                }
            }
            let o = matvec(w.get(&p("attn_output.weight")), &attn);
            let res: Vec<f64> = x[t].iter().zip(&o).map(|(a, b)| a + b).collect();
            let ffn_inp = layer_norm(
                &res,
                w.get(&p("attn_output_norm.weight")),
                w.get(&p("attn_output_norm.bias")),
            );
            let gate = matvec(w.get(&p("ffn_gate.weight")), &ffn_inp);
            let up = matvec(w.get(&p("ffn_up.weight")), &ffn_inp);
            let hidden: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(w.get(&p("ffn_down.weight")), &hidden);
            let res: Vec<f64> = ffn_inp.iter().zip(&down).map(|(a, b)| a + b).collect();
            x[t] = layer_norm(
                &res,
                w.get(&p("layer_output_norm.weight")),
                w.get(&p("layer_output_norm.bias")),
            );
        }
        // (Attention read the keys and values computed before this loop,
        // so every token saw the layer's input although `x` changed.)
    }
    x
}

fn unit(v: Vec<f64>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / norm) as f32).collect()
}

#[test]
fn nomic_bert_matches_a_plain_computation_for_each_pooling() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, vocab) = tiny_nomic();
    // pooling_type 1 mean, 2 CLS, 3 last; F32 and F16 weights.
    for (ty, bound) in [(GgmlType::F32, 0.99999), (GgmlType::F16, 0.9999)] {
        for pooling_type in [1u32, 2, 3] {
            let path = dir.path().join(format!("nomic-{ty}-{pooling_type}.gguf"));
            weights.write(&path, &vocab, ty, pooling_type).unwrap();
            let runner = common::runner(&path);
            assert_eq!(runner.model().config().arch.name(), "nomic-bert");
            let batched = runner
                .embed_batch(&TEXTS, &EmbedOptions::new(&runner))
                .unwrap();
            for (i, text) in TEXTS.iter().enumerate() {
                let tokens = runner.tokenizer().encode(text, true, false);
                let hidden = plain_nomic_bert(&weights, &tokens);
                let pooled: Vec<f64> = match pooling_type {
                    1 => (0..N_EMBD)
                        .map(|j| hidden.iter().map(|h| h[j]).sum::<f64>() / hidden.len() as f64)
                        .collect(),
                    2 => hidden[0].clone(),
                    _ => hidden.last().unwrap().clone(),
                };
                let c = cos(&batched[i].vector, &unit(pooled));
                assert!(
                    c > bound,
                    "{ty} pooling {pooling_type} text {i}: cosine {c}"
                );
            }
        }
    }
}

#[test]
fn nomic_bert_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, vocab) = tiny_nomic();
    let path = dir.path().join("nomic.gguf");
    weights.write(&path, &vocab, GgmlType::F32, 1).unwrap();
    let runner = common::runner(&path);
    let options = EmbedOptions::new(&runner);
    let alone = one_at_a_time(&runner, &TEXTS);

    // Unit length; the same in any order and company; duplicates agree.
    let reversed: Vec<&str> = TEXTS.iter().rev().copied().collect();
    let out = runner.embed_batch(&reversed, &options).unwrap();
    for (i, e) in out.iter().enumerate() {
        let norm: f64 = e.vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((norm.sqrt() - 1.0).abs() < 1e-5);
        assert_same(&e.vector, &alone[TEXTS.len() - 1 - i], "reversed batch");
    }
    let twice = runner.embed_batch(&[TEXTS[2], TEXTS[2]], &options).unwrap();
    assert_same(&twice[0].vector, &twice[1].vector, "duplicates");

    // RoPE makes order matter: the same words in another order differ.
    let a = runner.embed("dog bites man").unwrap();
    let b = runner.embed("man bites dog").unwrap();
    let c = cos(&a, &b);
    assert!(c < 0.9999, "word order ignored: cosine {c}");

    // Raw (unnormalized) vectors point the same way as the unit ones.
    let raw = EmbedOptions {
        normalize: false,
        ..options
    };
    let raw = runner.embed_batch(&[TEXTS[0]], &raw).unwrap();
    assert_same(&raw[0].vector, &alone[0], "raw vs unit");
}

/// llama.cpp's vectors for the tiny nomic-bert (F32, mean pooling), recorded
/// from `llama-server --embeddings -fa off` by scripts/record-nomic-fixture.sh.
#[test]
fn nomic_bert_matches_llama_cpp() {
    #[derive(serde::Deserialize)]
    struct Fixture {
        texts: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    }
    let fixture: Fixture = serde_json::from_slice(
        &std::fs::read(common::data("embed/tiny-nomic-bert-F32.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (weights, vocab) = tiny_nomic();
    let path = dir.path().join("tiny-nomic-bert-F32.gguf");
    weights.write(&path, &vocab, GgmlType::F32, 1).unwrap();
    let runner = common::runner(&path);
    let ours = runner
        .embed_batch(&fixture.texts, &EmbedOptions::new(&runner))
        .unwrap();
    assert_eq!(ours.len(), fixture.embeddings.len());
    for (i, (e, want)) in ours.iter().zip(&fixture.embeddings).enumerate() {
        let c = cos(&e.vector, want);
        assert!(c > 0.9999, "text {i}: cosine {c} with llama.cpp's");
    }
}
