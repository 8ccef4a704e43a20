//! Writes a random-weight llama with Llama-3.2-1B's shapes, for benchmarks
//! that need a real-sized model without downloading one:
//!
//! ```sh
//! cargo run --release --example make_bench_model -- models/bench/llama-1b-f16.gguf [VOCAB.gguf]
//! ```
//!
//! Embedding 2048, 16 layers, 32 query / 8 KV heads of 64, FFN 8192, tied
//! output, llama-bpe vocabulary (128256 tokens, every `tokenizer.*` key copied
//! from `../shared/vocab/ggml-vocab-llama-bpe.gguf` unless VOCAB is given).
//! Weights are F16, N(0,1)/√fan_in from a fixed seed (each tensor seeded by
//! its name, so the file is the same on every machine); norms are 1.0 in F32.
//! Tensor data is streamed, so memory stays at a few megabytes (~2.5 GB file).

use half::f16;
use rusty_llm::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use std::path::PathBuf;
use std::process::ExitCode;

const N_EMBD: u64 = 2048;
const N_LAYER: u64 = 16;
const N_HEAD: u64 = 32;
const N_HEAD_KV: u64 = 8;
const HEAD_DIM: u64 = 64;
const N_FF: u64 = 8192;
const N_VOCAB: u64 = 128256;
const SEED: u64 = 0x005E_ED1B;

/// splitmix64: tiny, fast, and good enough for weights that only need to look
/// like a trained model's magnitudes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Two N(0,1) draws (Box–Muller).
    fn normal_pair(&mut self) -> (f64, f64) {
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let t = std::f64::consts::TAU * self.uniform();
        (r * t.cos(), r * t.sin())
    }
}

/// FNV-1a of the name, mixed with the global seed.
fn tensor_seed(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325 ^ SEED, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_bench_model: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: make_bench_model OUT.gguf [VOCAB.gguf]")?,
    );
    let vocab_path = args.next().map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/vocab/ggml-vocab-llama-bpe.gguf")
        },
        PathBuf::from,
    );
    let vocab = GgufFile::open(&vocab_path)?;

    let mut w = GgufWriter::new();
    let s = |v: &str| Value::String(v.into());
    w.set("general.architecture", s("llama"));
    w.set(
        "general.name",
        s("rusty-llm bench llama 1B (random weights)"),
    );
    w.set("general.file_type", Value::U32(1)); // LLAMA_FTYPE_MOSTLY_F16
    w.set("llama.vocab_size", Value::U32(N_VOCAB as u32));
    w.set("llama.context_length", Value::U32(131072));
    w.set("llama.embedding_length", Value::U32(N_EMBD as u32));
    w.set("llama.block_count", Value::U32(N_LAYER as u32));
    w.set("llama.feed_forward_length", Value::U32(N_FF as u32));
    w.set("llama.rope.dimension_count", Value::U32(HEAD_DIM as u32));
    w.set("llama.rope.freq_base", Value::F32(500_000.0));
    w.set("llama.attention.head_count", Value::U32(N_HEAD as u32));
    w.set(
        "llama.attention.head_count_kv",
        Value::U32(N_HEAD_KV as u32),
    );
    w.set("llama.attention.key_length", Value::U32(HEAD_DIM as u32));
    w.set("llama.attention.value_length", Value::U32(HEAD_DIM as u32));
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    let mut copied = 0;
    for (key, value) in vocab.metadata().iter() {
        if key.starts_with("tokenizer.") {
            w.set(key, value.clone());
            copied += 1;
        }
    }
    let n_tokens = vocab
        .metadata()
        .array("tokenizer.ggml.tokens")?
        .map_or(0, |a| a.len());
    if n_tokens as u64 != N_VOCAB {
        return Err(format!(
            "{}: {n_tokens} tokens, expected the llama-bpe vocabulary's {N_VOCAB}",
            vocab_path.display()
        )
        .into());
    }

    // llama.cpp's tensor order; shapes in ggml order (row length first).
    let mut tensors: Vec<(String, GgmlType, Vec<u64>)> = Vec::new();
    let f16 = GgmlType::F16;
    tensors.push(("token_embd.weight".into(), f16, vec![N_EMBD, N_VOCAB]));
    for i in 0..N_LAYER {
        let b = |n: &str| format!("blk.{i}.{n}.weight");
        tensors.push((b("attn_norm"), GgmlType::F32, vec![N_EMBD]));
        tensors.push((b("attn_q"), f16, vec![N_EMBD, N_HEAD * HEAD_DIM]));
        tensors.push((b("attn_k"), f16, vec![N_EMBD, N_HEAD_KV * HEAD_DIM]));
        tensors.push((b("attn_v"), f16, vec![N_EMBD, N_HEAD_KV * HEAD_DIM]));
        tensors.push((b("attn_output"), f16, vec![N_HEAD * HEAD_DIM, N_EMBD]));
        tensors.push((b("ffn_norm"), GgmlType::F32, vec![N_EMBD]));
        tensors.push((b("ffn_gate"), f16, vec![N_EMBD, N_FF]));
        tensors.push((b("ffn_up"), f16, vec![N_EMBD, N_FF]));
        tensors.push((b("ffn_down"), f16, vec![N_FF, N_EMBD]));
    }
    tensors.push(("output_norm.weight".into(), GgmlType::F32, vec![N_EMBD]));
    for (name, ty, shape) in &tensors {
        w.declare_tensor(name, *ty, shape)?;
    }

    // A counter redrawn in place on a terminal; nothing in logs.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let mut stream = w.stream_file(&out)?;
    let mut buf = Vec::with_capacity(2 << 20);
    for (i, (name, ty, shape)) in tensors.iter().enumerate() {
        let elements: u64 = shape.iter().product();
        if *ty == GgmlType::F32 {
            // Norm weights: 1.0, the identity scale.
            let ones: Vec<u8> = (0..elements).flat_map(|_| 1.0f32.to_le_bytes()).collect();
            stream.write(&ones)?;
            continue;
        }
        let scale = 1.0 / (shape[0] as f64).sqrt();
        let mut rng = SplitMix(tensor_seed(name));
        let mut left = elements;
        while left > 0 {
            let n = left.min(1 << 20);
            buf.clear();
            for _ in 0..n / 2 {
                let (a, b) = rng.normal_pair();
                buf.extend_from_slice(&f16::from_f64(a * scale).to_le_bytes());
                buf.extend_from_slice(&f16::from_f64(b * scale).to_le_bytes());
            }
            stream.write(&buf)?;
            left -= n;
        }
        if tty {
            eprint!("\r{}/{} tensors ", i + 1, tensors.len());
        }
    }
    stream.finish()?;
    eprintln!(
        "{}wrote {} ({} tensors, {copied} tokenizer keys, {:.2} GB) in {:.1} s",
        if tty { "\r" } else { "" },
        out.display(),
        tensors.len(),
        std::fs::metadata(&out)?.len() as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
