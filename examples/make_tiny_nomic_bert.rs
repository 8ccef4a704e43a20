//! Writes a tiny random nomic-bert (nomic-embed-text's architecture: a BERT
//! encoder with RoPE, fused QKV and SwiGLU) with the project's GGUF writer,
//! for tests and for checking against llama.cpp:
//!
//! ```sh
//! cargo run --release --example make_tiny_nomic_bert -- OUT.gguf [f32|f16] [POOLING_TYPE] [VOCAB.gguf]
//! ```
//!
//! Embedding 64, 4 heads of 16, FFN 128, 2 layers, context 128, RoPE base
//! 1000, LayerNorm eps 1e-12; the WordPiece vocabulary (every `tokenizer.*`
//! key) is copied from VOCAB (default: tests/data/embed/tiny-bert-Q4_K_M.gguf).
//! Weights come from a fixed seed, so the file is the same on every machine;
//! norms stay F32 in the F16 file, as llama.cpp's converter keeps them.
//! `tests/embeddings.rs` includes this file for the same model.

use rusty_llm::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const N_EMBD: usize = 64;
pub const N_HEAD: usize = 4;
pub const HEAD_DIM: usize = N_EMBD / N_HEAD;
pub const N_FF: usize = 128;
pub const N_LAYER: usize = 2;
pub const ROPE_BASE: f64 = 1000.0;
pub const EPS: f64 = 1e-12;

/// xorshift64*: deterministic weights without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32, center: f32) -> Vec<f32> {
        (0..n).map(|_| center + scale * self.next()).collect()
    }
}

/// The weights of the tiny nomic-bert, by tensor name; matrices are
/// `rows × cols` row-major (ggml shape `[cols, rows]`).
pub struct NomicWeights {
    tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
}

impl NomicWeights {
    pub fn new(n_vocab: usize) -> Self {
        let mut rng = Rng(0x005E_ED0B_1EC7);
        let mut tensors = Vec::new();
        let mut add = |name: &str, shape: &[usize], scale: f32, center: f32| {
            let n = shape.iter().product();
            let values = rng.vec(n, scale, center);
            tensors.push((
                name.to_string(),
                shape.iter().map(|&d| d as u64).collect(),
                values,
            ));
        };
        let d = N_EMBD;
        add("token_embd.weight", &[d, n_vocab], 1.0, 0.0);
        add("token_types.weight", &[d, 2], 0.5, 0.0);
        add("token_embd_norm.weight", &[d], 0.1, 1.0);
        add("token_embd_norm.bias", &[d], 0.1, 0.0);
        let w = 1.0 / (d as f32).sqrt() * 1.7;
        for i in 0..N_LAYER {
            let b = |n: &str| format!("blk.{i}.{n}");
            add(&b("attn_qkv.weight"), &[d, 3 * d], w * 2.0, 0.0);
            add(&b("attn_output.weight"), &[d, d], w, 0.0);
            add(&b("attn_output_norm.weight"), &[d], 0.1, 1.0);
            add(&b("attn_output_norm.bias"), &[d], 0.1, 0.0);
            add(&b("ffn_gate.weight"), &[d, N_FF], w, 0.0);
            add(&b("ffn_up.weight"), &[d, N_FF], w, 0.0);
            add(&b("ffn_down.weight"), &[N_FF, d], w, 0.0);
            add(&b("layer_output_norm.weight"), &[d], 0.1, 1.0);
            add(&b("layer_output_norm.bias"), &[d], 0.1, 0.0);
        }
        Self { tensors }
    }

    /// The values of tensor `name`.
    pub fn get(&self, name: &str) -> &[f32] {
        &self.tensors.iter().find(|t| t.0 == name).expect(name).2
    }

    /// Writes the model as F32 (or F16) GGUF with `vocab`'s tokenizer and
    /// the metadata llama.cpp's converter writes for nomic-embed-text.
    pub fn write(
        &self,
        out: &Path,
        vocab: &GgufFile,
        ty: GgmlType,
        pooling_type: u32,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut w = GgufWriter::new();
        let arch = "nomic-bert";
        w.set("general.architecture", Value::String(arch.into()));
        w.set("general.name", Value::String("tiny nomic-bert".into()));
        let u = |v: usize| Value::U32(v as u32);
        w.set(format!("{arch}.context_length"), u(128));
        w.set(format!("{arch}.embedding_length"), u(N_EMBD));
        w.set(format!("{arch}.block_count"), u(N_LAYER));
        w.set(format!("{arch}.feed_forward_length"), u(N_FF));
        w.set(format!("{arch}.attention.head_count"), u(N_HEAD));
        w.set(
            format!("{arch}.attention.layer_norm_epsilon"),
            Value::F32(EPS as f32),
        );
        w.set(format!("{arch}.attention.causal"), Value::Bool(false));
        w.set(format!("{arch}.pooling_type"), Value::U32(pooling_type));
        w.set(
            format!("{arch}.rope.freq_base"),
            Value::F32(ROPE_BASE as f32),
        );
        for (key, value) in vocab.metadata().iter() {
            if key.starts_with("tokenizer.") {
                w.set(key, value.clone());
            }
        }
        for (name, shape, values) in &self.tensors {
            let (ty, bytes): (GgmlType, Vec<u8>) = if ty == GgmlType::F16 && shape.len() == 2 {
                let halves: Vec<half::f16> =
                    values.iter().map(|&x| half::f16::from_f32(x)).collect();
                (ty, bytemuck::cast_slice(&halves).to_vec())
            } else {
                (GgmlType::F32, bytemuck::cast_slice(values).to_vec())
            };
            w.add_tensor(name.clone(), ty, shape, bytes)?;
        }
        w.write_file(out)?;
        Ok(())
    }
}

/// The vocabulary's size (rows of its `token_embd`, or its token list).
pub fn vocab_size(vocab: &GgufFile) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(vocab
        .metadata()
        .array("tokenizer.ggml.tokens")?
        .ok_or("the vocabulary file has no tokenizer.ggml.tokens")?
        .len())
}

#[allow(dead_code)] // included by tests/embeddings.rs, which has its own main
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_tiny_nomic_bert: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(dead_code)]
fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: make_tiny_nomic_bert OUT.gguf [f32|f16] [POOLING_TYPE] [VOCAB.gguf]";
    let out = PathBuf::from(args.next().ok_or(usage)?);
    let ty = match args.next().as_deref() {
        None | Some("f32") => GgmlType::F32,
        Some("f16") => GgmlType::F16,
        Some(other) => return Err(format!("{other:?}: expected f32 or f16; {usage}").into()),
    };
    let pooling_type: u32 = match args.next() {
        None => 1,
        Some(p) => p
            .parse()
            .map_err(|_| format!("{p:?}: expected a pooling type number; {usage}"))?,
    };
    let vocab_path = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/embed/tiny-bert-Q4_K_M.gguf"),
        PathBuf::from,
    );
    let vocab = GgufFile::open(&vocab_path)?;
    NomicWeights::new(vocab_size(&vocab)?).write(&out, &vocab, ty, pooling_type)?;
    eprintln!("make_tiny_nomic_bert: wrote {}", out.display());
    Ok(())
}
