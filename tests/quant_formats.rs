//! The quantized formats against llama.cpp: dequantization and quantization
//! bit-exact with goldens from gguf-py and ggml's own reference functions
//! (tests/data/quant, remade by scripts/make-quant-goldens.py), ggml's error
//! budgets, hostile input, and every tensor of every shared tiny model.

mod common;

use rusty_llm::gguf::{GgmlType, GgufFile};
use rusty_llm::quant::{self, QuantError};
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = common::data(&format!("quant/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("golden field {key}"))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Compares bit patterns (so −0.0 ≠ 0.0 and NaNs compare), reporting the first
/// difference.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: value {i} is {} ({:#010x}), llama.cpp has {} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

const DEQUANT_TYPES: [GgmlType; 15] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];

#[test]
fn dequantization_is_bit_exact_with_gguf_py_for_every_type() {
    for ty in DEQUANT_TYPES {
        let g = golden(&format!("dequant-{}.json", ty.name()));
        assert_eq!(field(&g, "type"), ty.name());
        let bytes = unhex(field(&g, "bytes"));
        let want = f32s(&unhex(field(&g, "values")));
        let row_len = g["row_len"].as_u64().unwrap() as usize;
        let what = format!("{ty} {} {}", field(&g, "model"), field(&g, "tensor"));

        // All rows at once, then row by row from unaligned copies.
        let mut got = vec![0.0; want.len()];
        quant::dequantize_row(ty, &bytes, &mut got).unwrap();
        assert_bits_eq(&what, &got, &want);

        let row_bytes = ty.bytes_for(row_len as u64).unwrap() as usize;
        let mut shifted = vec![0u8; row_bytes + 1];
        for (r, (src, want)) in bytes
            .chunks_exact(row_bytes)
            .zip(want.chunks_exact(row_len))
            .enumerate()
        {
            shifted[1..].copy_from_slice(src);
            let mut got = vec![0.0; row_len];
            quant::dequantize_row(ty, &shifted[1..], &mut got).unwrap();
            assert_bits_eq(&format!("{what} row {r} (odd address)"), &got, want);
        }
    }
}

fn quant_input() -> (usize, Vec<f32>) {
    let g = golden("quant-input.json");
    let row_len = g["row_len"].as_u64().unwrap() as usize;
    (row_len, f32s(&unhex(field(&g, "values"))))
}

/// Quantizes the shared input rows and compares with the golden bytes (and,
/// where the golden has them, the dequantized values).
fn check_quantizer(ty: GgmlType) {
    let (row_len, x) = quant_input();
    let g = golden(&format!("quant-{}.json", ty.name()));
    assert_eq!(field(&g, "type"), ty.name());
    let want = unhex(field(&g, "bytes"));
    let row_bytes = ty.bytes_for(row_len as u64).unwrap() as usize;
    let mut got = Vec::new();
    quant::quantize_row(ty, &x, &mut got).unwrap();
    assert_eq!(got.len(), want.len(), "{ty}: byte count");
    for (r, (got, want)) in got
        .chunks(row_bytes)
        .zip(want.chunks(row_bytes))
        .enumerate()
    {
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{ty} row {r}: byte {i} is {:#04x}, {} gives {:#04x}",
                got[i],
                field(&g, "reference"),
                want[i]
            );
        }
    }
    if let Some(deq) = g["dequantized"].as_str() {
        let mut values = vec![0.0; x.len()];
        quant::dequantize_row(ty, &got, &mut values).unwrap();
        assert_bits_eq(&format!("{ty} dequantized"), &values, &f32s(&unhex(deq)));
    }
}

#[test]
fn weight_quantizers_are_bit_exact_with_llama_cpp() {
    // Q4_0: gguf-py's quantizer (checked equal to ggml's quantize_row_q4_0_ref
    // when the goldens were made); K-quants: ggml's quantize_row_*_ref.
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        check_quantizer(ty);
    }
}

#[test]
fn activation_quantizers_are_bit_exact_with_llama_cpp() {
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        check_quantizer(ty);
    }
}

#[test]
fn float_conversions_are_bit_exact_with_gguf_py() {
    for ty in [GgmlType::F16, GgmlType::BF16] {
        check_quantizer(ty);
    }
    // F32 is a plain copy.
    let (_, x) = quant_input();
    let mut bytes = Vec::new();
    quant::quantize_row(GgmlType::F32, &x, &mut bytes).unwrap();
    let mut back = vec![0.0; x.len()];
    quant::dequantize_row(GgmlType::F32, &bytes, &mut back).unwrap();
    assert_bits_eq("F32", &back, &x);
}

#[test]
fn q8_1_sum_and_q8_k_block_sums_match_their_quants() {
    let (_, x) = quant_input();
    let mut bytes = Vec::new();
    quant::quantize_row(GgmlType::Q8_K, &x[..256], &mut bytes).unwrap();
    let block: quant::BlockQ8K = bytemuck::pod_read_unaligned(&bytes);
    for (j, sum) in block.bsums.iter().enumerate() {
        let want: i32 = block.qs[16 * j..16 * j + 16]
            .iter()
            .map(|&q| i32::from(q))
            .sum();
        assert_eq!(i32::from(sum.get()), want);
    }
    // The largest-magnitude value maps to exactly ±127.
    assert_eq!(block.qs.iter().map(|q| q.unsigned_abs()).max(), Some(127));
}

/// ggml's tests/test-quantize-fns.cpp: `0.1 + 2·cos(i)` over 4096 values,
/// error `sqrt(Σ(x − x̂)²) / n` under `MAX_QUANTIZATION_TOTAL_ERROR`.
#[test]
fn round_trip_error_is_within_ggml_budget() {
    const MAX_QUANTIZATION_TOTAL_ERROR: f64 = 0.002;
    let n = 32 * 128;
    let x: Vec<f32> = (0..n)
        .map(|i| (0.1 + f64::from(2.0 * (i as f32).cos())) as f32)
        .collect();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let mut bytes = Vec::new();
        quant::quantize_row(ty, &x, &mut bytes).unwrap();
        let mut y = vec![0.0; n];
        quant::dequantize_row(ty, &bytes, &mut y).unwrap();
        let sum: f64 = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| f64::from(a - b).powi(2))
            .sum();
        let err = sum.sqrt() / n as f64;
        assert!(err < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: error {err}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let block = vec![0u8; 144];
    let mut out = vec![0.0; 256];
    // Wrong byte length, both ways.
    for bytes in [&block[..143], &[&block[..], &[0u8][..]].concat()[..]] {
        let e = quant::dequantize_row(GgmlType::Q4_K, bytes, &mut out).unwrap_err();
        assert!(
            matches!(e, QuantError::ByteLength { expected: 144, .. }),
            "{e}"
        );
    }
    // A row that is not a whole number of blocks.
    let e = quant::dequantize_row(GgmlType::Q4_K, &block, &mut out[..255]).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::RaggedRow {
                len: 255,
                block: 256,
                ..
            }
        ),
        "{e}"
    );
    let e = quant::quantize_row(GgmlType::Q8_0, &[1.0; 33], &mut Vec::new()).unwrap_err();
    assert!(matches!(e, QuantError::RaggedRow { .. }), "{e}");
    // Unsupported types, named in the message with the tensor.
    let e = quant::dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut out)
        .unwrap_err()
        .in_tensor("blk.0.ffn_up.weight");
    assert_eq!(
        e,
        QuantError::UnsupportedType {
            tensor: "blk.0.ffn_up.weight".into(),
            ty: GgmlType::IQ2_XXS,
            action: "dequantized",
        }
    );
    assert!(e.to_string().contains("blk.0.ffn_up.weight") && e.to_string().contains("IQ2_XXS"));
    let e = quant::quantize_row(GgmlType::IQ4_XS, &[0.0; 256], &mut Vec::new()).unwrap_err();
    assert!(matches!(e, QuantError::UnsupportedType { .. }), "{e}");
    assert!(!quant::is_supported(GgmlType::Q8_K) && !quant::is_supported(GgmlType::TQ1_0));
    assert!(quant::is_supported(GgmlType::MXFP4));
    // Empty rows are fine.
    quant::dequantize_row(GgmlType::Q6_K, &[], &mut []).unwrap();
}

#[test]
fn every_tensor_of_every_shared_tiny_model_dequantizes_to_finite_values() {
    let files = common::shared_ggufs(&["tiny"]);
    let mut types = std::collections::BTreeSet::new();
    for path in &files {
        let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"));
        for info in f.tensors() {
            let view = f.view(info);
            let values = quant::dequantize_tensor(&view)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(values.len() as u64, info.elements());
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                panic!(
                    "{} {}: value {i} is {}",
                    path.display(),
                    info.name,
                    values[i]
                );
            }
            types.insert(info.ggml_type);
        }
    }
    if !files.is_empty() {
        for ty in DEQUANT_TYPES {
            assert!(types.contains(&ty), "no shared tiny model holds {ty}");
        }
    }
}
