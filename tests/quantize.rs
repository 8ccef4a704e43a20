//! `quantize_file` against llama.cpp: the tiny llama's F32 weights quantized
//! to every target give the tensor types llama-quantize chooses, bytes
//! identical to llama-quantize's files (../shared/tiny, made from the same
//! F32 file), errors within each type's budget, and a model that still runs.

mod common;

use rusty_llm::engine::{GenerationOptions, LoadOptions, Runner};
use rusty_llm::gguf::{GgmlType, GgufFile, Value};
use rusty_llm::quant::convert::{Progress, QuantTarget, QuantizeOptions, quantize_file};
use rusty_llm::quant::dequantize_tensor;
use std::path::{Path, PathBuf};

fn tiny(name: &str) -> Option<PathBuf> {
    Some(common::shared()?.join("tiny").join(name))
}

fn quantize(input: &Path, target: QuantTarget, threads: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{target}.gguf"));
    let mut options = QuantizeOptions::new(target);
    options.threads = threads;
    let mut advanced = 0;
    let report = quantize_file(input, &out, &options, |p| {
        if let Progress::Advance(n) = p {
            advanced += n;
        }
    })
    .unwrap_or_else(|e| panic!("{target}: {e}"));
    let file = GgufFile::open(input).unwrap();
    let tensor_bytes: u64 = file.tensors().iter().map(|t| t.size).sum();
    assert_eq!(
        advanced, tensor_bytes,
        "{target}: progress covers every byte"
    );
    assert_eq!(report.output_bytes, std::fs::metadata(&out).unwrap().len());
    (dir, out)
}

/// Normalized RMS error: ‖a − b‖ / ‖a‖.
fn nrmse(reference: &[f32], got: &[f32]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&r, &g) in reference.iter().zip(got) {
        err += f64::from(r - g).powi(2);
        norm += f64::from(r).powi(2);
    }
    (err / norm).sqrt()
}

/// Per type: the largest normalized RMS error allowed for any tensor. The
/// worst tensors of this model (N(0,1)/√fan_in weights, 256-wide rows)
/// measure 0.0002 (F16), 0.0017 (BF16), 0.0054 (Q8_0), 0.018 (Q6_K),
/// 0.036 (Q5_K), 0.072 (Q4_K), 0.086 (Q4_0) — the same as llama-quantize's
/// files, since the bytes are identical; the budgets leave about 25 % room.
fn budget(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::F32 => 1e-12,
        GgmlType::F16 => 0.0005,
        GgmlType::BF16 => 0.003,
        GgmlType::Q8_0 => 0.007,
        GgmlType::Q6_K => 0.025,
        GgmlType::Q5_K => 0.045,
        GgmlType::Q4_K => 0.09,
        GgmlType::Q4_0 => 0.11,
        other => panic!("no budget for {other}"),
    }
}

/// llama-quantize's file for each target, made from tiny-llama-F32.gguf.
const LLAMA_CPP_FILES: [(QuantTarget, &str); 5] = [
    (QuantTarget::Q8_0, "tiny-llama-Q8_0.gguf"),
    (QuantTarget::Q4_0, "tiny-llama-Q4_0.gguf"),
    (QuantTarget::Q4_K_M, "tiny-llama-Q4_K_M.gguf"),
    (QuantTarget::Q5_K_M, "tiny-llama-Q5_K_M.gguf"),
    (QuantTarget::Q6_K, "tiny-llama-Q6_K.gguf"),
];

#[test]
fn every_target_keeps_norms_and_stays_within_error_budget() {
    let Some(input) = tiny("tiny-llama-F32.gguf") else {
        return;
    };
    let source = GgufFile::open(&input).unwrap();
    for target in QuantTarget::ALL {
        let (_dir, out) = quantize(&input, target, 2);
        let file = GgufFile::open(&out).unwrap();
        let meta = file.metadata();
        assert_eq!(
            meta.u32("general.file_type").unwrap(),
            Some(target.file_type())
        );
        assert_eq!(meta.u32("general.quantization_version").unwrap(), Some(2));
        assert_eq!(
            meta.str("tokenizer.ggml.model").unwrap(),
            source.metadata().str("tokenizer.ggml.model").unwrap(),
            "metadata is copied"
        );
        assert_eq!(file.tensors().len(), source.tensors().len());
        for (t, s) in file.tensors().iter().zip(source.tensors()) {
            assert_eq!((&t.name, t.shape()), (&s.name, s.shape()));
            if t.n_dims == 1 {
                assert_eq!(t.ggml_type, GgmlType::F32, "{target}: {}", t.name);
                assert_eq!(file.view(t).data, source.view(s).data, "{}", t.name);
                continue;
            }
            if t.name == "output.weight" {
                let want = match target {
                    QuantTarget::Q8_0 => GgmlType::Q8_0,
                    QuantTarget::F32 | QuantTarget::F16 | QuantTarget::BF16 => {
                        target.default_type()
                    }
                    // llama-quant.cpp: the output projection of every other
                    // quantized target (Q4_0 included) is Q6_K.
                    _ => GgmlType::Q6_K,
                };
                assert_eq!(t.ggml_type, want, "{target}: output.weight");
            }
            let reference = dequantize_tensor(&source.view(s)).unwrap();
            let got = dequantize_tensor(&file.view(t)).unwrap();
            let e = nrmse(&reference, &got);
            assert!(
                e < budget(t.ggml_type),
                "{target}: {} ({}) error {e:.4}",
                t.name,
                t.ggml_type
            );
        }
    }
}

/// Our quantizers are ggml's reference ones and our type rules are
/// llama-quant.cpp's, so every tensor matches llama-quantize's, byte for byte.
#[test]
fn matches_llama_quantize_byte_for_byte() {
    let Some(input) = tiny("tiny-llama-F32.gguf") else {
        return;
    };
    for (target, name) in LLAMA_CPP_FILES {
        let reference = GgufFile::open(tiny(name).unwrap()).unwrap();
        // One thread and two must agree: rows are independent.
        for threads in [1, 2] {
            let (_dir, out) = quantize(&input, target, threads);
            let ours = GgufFile::open(&out).unwrap();
            for r in reference.tensors() {
                let o = ours.tensor_info(&r.name).unwrap();
                assert_eq!(o.ggml_type, r.ggml_type, "{target}: {} type", r.name);
                assert!(
                    ours.view(o).data == reference.view(r).data,
                    "{target}: {} ({}) bytes differ from llama-quantize's",
                    r.name,
                    r.ggml_type
                );
            }
            assert_eq!(
                ours.metadata().u32("general.file_type").unwrap(),
                reference.metadata().u32("general.file_type").unwrap(),
                "{target}"
            );
        }
    }
}

/// The tied case: without output.weight, token_embd takes the output rule.
#[test]
fn tied_embeddings_get_the_output_type() {
    let Some(input) = tiny("tiny-qwen2-F16.gguf") else {
        return;
    };
    let (_dir, out) = quantize(&input, QuantTarget::Q4_K_M, 2);
    let file = GgufFile::open(&out).unwrap();
    assert!(file.tensor_info("output.weight").is_none());
    assert_eq!(
        file.tensor_info("token_embd.weight").unwrap().ggml_type,
        GgmlType::Q6_K
    );
    // Biases (1-D) stay as they were.
    assert_eq!(
        file.tensor_info("blk.0.attn_q.bias").unwrap().ggml_type,
        GgufFile::open(&input)
            .unwrap()
            .tensor_info("blk.0.attn_q.bias")
            .unwrap()
            .ggml_type
    );
}

#[test]
fn quantized_models_still_generate() {
    let Some(input) = tiny("tiny-llama-F32.gguf") else {
        return;
    };
    for target in [QuantTarget::Q8_0, QuantTarget::Q4_0, QuantTarget::Q4_K_M] {
        let (_dir, out) = quantize(&input, target, 2);
        let runner = Runner::load(&out, &LoadOptions::default()).unwrap();
        let generated = runner
            .generate("Once upon a time", &GenerationOptions::greedy(4))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(generated.generated_tokens, 4, "{target}");
    }
}

#[test]
fn requantizing_warns_and_errors_name_the_problem() {
    let Some(q8) = tiny("tiny-llama-Q8_0.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = QuantizeOptions::new(QuantTarget::Q4_0);
    let mut warnings = Vec::new();
    quantize_file(&q8, &dir.path().join("rq.gguf"), &options, |p| {
        if let Progress::Warning(w) = p {
            warnings.push(w);
        }
    })
    .unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].contains("Q8_0"),
        "{warnings:?}"
    );

    let missing = dir.path().join("missing.gguf");
    let e = quantize_file(&missing, &dir.path().join("o.gguf"), &options, |_| {}).unwrap_err();
    assert!(e.to_string().contains("missing.gguf"), "{e}");
    let e = quantize_file(&q8, &dir.path().join("no/dir/o.gguf"), &options, |_| {}).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = quantize_file(&q8, &q8, &options, |_| {}).unwrap_err();
    assert!(e.to_string().contains("overwrite the input"), "{e}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial files"
    );
}

#[test]
fn cli_quantizes_and_reports() {
    let Some(input) = tiny("tiny-llama-F32.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let bin = env!("CARGO_BIN_EXE_rusty-llm");
    let run =
        |args: &[&std::ffi::OsStr]| std::process::Command::new(bin).args(args).output().unwrap();
    let o = run(&[
        "quantize".as_ref(),
        input.as_os_str(),
        out.as_os_str(),
        "q8_0".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("MiB") && stderr.contains("Q8_0"),
        "{stderr}"
    );
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(
        file.metadata().get("general.file_type"),
        Some(&Value::U32(7))
    );

    let o = run(&[
        "quantize".as_ref(),
        input.as_os_str(),
        out.as_os_str(),
        "Q3_K".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("Q4_K_M") && stderr.lines().count() == 1,
        "{stderr}"
    );

    let o = run(&["quantize".as_ref(), "--help".as_ref()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("rusty-llm quantize"));
}
