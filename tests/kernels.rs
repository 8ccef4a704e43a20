//! Dot products and matrix products of every weight type, on every SIMD variant
//! this CPU supports: SIMD against the scalar reference (tight), everything
//! against an f64 product of the exactly dequantized weights (within the error
//! that quantizing the activations adds), and matrix × matrix against matrix ×
//! vector. Weight rows are real tensor rows from llama.cpp-quantized models
//! (tests/data/quant, see scripts/make-quant-goldens.py).

use rusty_llm::gguf::GgmlType;
use rusty_llm::kernels::{
    Kernels, Order, Scratch, Simd, ThreadPool, Weights, matmul, matmul_segments, matvec,
};
use serde_json::Value;

struct Golden {
    ty: GgmlType,
    row_len: usize,
    /// Raw block bytes of all rows, back to back.
    bytes: Vec<u8>,
    /// The exact dequantized values, row after row.
    values: Vec<f32>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn goldens() -> Vec<Golden> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quant");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("dequant-") {
            continue;
        }
        let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let ty = GgmlType::from_name(j["type"].as_str().unwrap()).unwrap();
        let values = hex(j["values"].as_str().unwrap())
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        out.push(Golden {
            ty,
            row_len: j["row_len"].as_u64().unwrap() as usize,
            bytes: hex(j["bytes"].as_str().unwrap()),
            values,
        });
    }
    out.sort_by_key(|g| g.ty.id());
    assert!(out.len() >= 15, "goldens for every weight type");
    out
}

/// Deterministic activations with a few outliers, like real hidden states.
fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if i % 97 == 0 { v * 8.0 } else { v }
        })
        .collect()
}

/// Relative error budget against the exact product, from quantizing the
/// activations to 8 bits (or f16/bf16 for those weight types).
fn budget(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::F32 => 1e-6,
        GgmlType::F16 => 2e-3,
        GgmlType::BF16 => 1e-2,
        _ => 2e-2,
    }
}

#[test]
fn every_type_on_every_variant_matches_scalar_and_the_exact_product() {
    let scalar = Kernels::for_simd(Simd::Scalar).unwrap();
    let pool = ThreadPool::new(1);
    for g in goldens() {
        let rows = g.values.len() / g.row_len;
        // Treat the golden as `rows` rows, and also as fewer, longer rows.
        for cols in [g.row_len, g.row_len * 2, g.row_len * rows] {
            let n_rows = g.values.len() / cols;
            let x = activations(cols, cols as u64);
            // Exact: f64 products of the dequantized weights with f32 inputs.
            let exact: Vec<f64> = (0..n_rows)
                .map(|r| {
                    let w = &g.values[r * cols..(r + 1) * cols];
                    w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum()
                })
                .collect();
            let scale: Vec<f64> = (0..n_rows)
                .map(|r| {
                    let w = &g.values[r * cols..(r + 1) * cols];
                    w.iter()
                        .zip(&x)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum()
                })
                .collect();
            let run = |k: &Kernels| {
                let w = Weights::new("golden", g.ty, n_rows, cols, &g.bytes, k).unwrap();
                let mut out = vec![0f32; n_rows];
                matvec(&pool, &w, &x, &mut out, &mut Scratch::default()).unwrap();
                out
            };
            let reference = run(&scalar);
            for r in 0..n_rows {
                let err = (reference[r] as f64 - exact[r]).abs() / scale[r].max(1e-12);
                assert!(
                    err < budget(g.ty),
                    "{} scalar row {r} cols {cols}: {} vs exact {} (rel {err})",
                    g.ty,
                    reference[r],
                    exact[r]
                );
            }
            for simd in Simd::supported() {
                let got = run(&Kernels::for_simd(simd).unwrap());
                for r in 0..n_rows {
                    let err = (got[r] as f64 - reference[r] as f64).abs() / scale[r].max(1e-12);
                    assert!(
                        err < 1e-5,
                        "{} {simd:?} row {r} cols {cols}: {} vs scalar {} (rel {err})",
                        g.ty,
                        got[r],
                        reference[r]
                    );
                }
            }
        }
    }
}

#[test]
fn matmul_matches_matvec_per_token_for_ragged_shapes() {
    let kernels = rusty_llm::kernels::kernels();
    for g in goldens() {
        let cols = g.row_len;
        // Rows: repeat the golden rows to get awkward counts.
        for rows in [1, 3, 8, 37] {
            let row_bytes = g.bytes.len() / (g.values.len() / cols);
            let bytes: Vec<u8> = (0..rows)
                .flat_map(|r| {
                    let src = r % (g.values.len() / cols);
                    g.bytes[src * row_bytes..(src + 1) * row_bytes].to_vec()
                })
                .collect();
            let w = Weights::new("w", g.ty, rows, cols, &bytes, kernels).unwrap();
            for threads in [1, 2, 3] {
                let pool = ThreadPool::new(threads);
                for n_tokens in [1, 2, 9, 13] {
                    let xs = activations(n_tokens * cols, (rows * 31 + n_tokens) as u64);
                    let mut batch = vec![0f32; n_tokens * rows];
                    matmul(
                        &pool,
                        &w,
                        &xs,
                        n_tokens,
                        &mut batch,
                        &mut Scratch::default(),
                    )
                    .unwrap();
                    for t in 0..n_tokens {
                        let mut one = vec![0f32; rows];
                        matvec(
                            &pool,
                            &w,
                            &xs[t * cols..(t + 1) * cols],
                            &mut one,
                            &mut Scratch::default(),
                        )
                        .unwrap();
                        // Batches of a tile or more run the tile kernels, one
                        // token the per-row dots: the same exact integer sums,
                        // f32 sums in another order.
                        for (r, (a, b)) in
                            batch[t * rows..(t + 1) * rows].iter().zip(&one).enumerate()
                        {
                            assert!(
                                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                                "{} rows {rows} tokens {n_tokens} threads {threads} row {r}: {a} vs {b}",
                                g.ty
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A continuous batch runs the tokens of several sequences through one
/// `matmul_segments`; each sequence's outputs must be bit for bit those of
/// its own `matmul` (its own batch size picks its kernels), so what else is
/// in the batch never changes a sequence's result. Every type, every variant,
/// both kernel orders, segments below and above every batch-size switch
/// (2: tinyBLAS, 4: tiles and the Q4_K gemm groups, 8: the tiled K-quants),
/// with whole and ragged tiles of single tokens (which share a tile where
/// it computes what the row dot does).
#[test]
fn matmul_segments_equal_each_segment_alone_bit_for_bit() {
    let layouts: [&[usize]; 5] = [
        &[1, 1, 1, 1, 1, 1, 1, 1, 1],
        &[2, 1, 1, 7, 1, 1, 1],
        &[1, 5, 1, 9, 2, 1],
        &[13, 1, 4, 1, 1, 8, 3],
        &[1],
    ];
    for g in goldens() {
        let cols = g.row_len;
        let row_bytes = g.bytes.len() / (g.values.len() / cols);
        // 16 rows: whole groups of 8 (the Q4_K repack) and of the 4-row tiles.
        for rows in [16, 37] {
            let bytes: Vec<u8> = (0..rows)
                .flat_map(|r| {
                    let src = r % (g.values.len() / cols);
                    g.bytes[src * row_bytes..(src + 1) * row_bytes].to_vec()
                })
                .collect();
            for simd in Simd::supported() {
                for order in [Order::Ggml, Order::Fast] {
                    let k = Kernels::for_simd_order(simd, order).unwrap();
                    let w = Weights::new("w", g.ty, rows, cols, &bytes, &k).unwrap();
                    let pool = ThreadPool::new(2);
                    for segments in layouts {
                        let n: usize = segments.iter().sum();
                        let xs = activations(n * cols, (rows * 7 + n) as u64);
                        let mut together = vec![f32::NAN; n * rows];
                        let mut scratch = Scratch::default();
                        matmul_segments(&pool, &w, &xs, segments, &mut together, &mut scratch)
                            .unwrap();
                        let mut t0 = 0;
                        for &len in segments {
                            let mut alone = vec![f32::NAN; len * rows];
                            let x = &xs[t0 * cols..(t0 + len) * cols];
                            matmul(&pool, &w, x, len, &mut alone, &mut Scratch::default()).unwrap();
                            let got = &together[t0 * rows..(t0 + len) * rows];
                            for (i, (a, b)) in got.iter().zip(&alone).enumerate() {
                                assert_eq!(
                                    a.to_bits(),
                                    b.to_bits(),
                                    "{} {simd:?} {order:?} rows {rows} segments {segments:?}: \
                                     segment at {t0} (of {len}) output {i}: {a} vs {b} alone",
                                    g.ty
                                );
                            }
                            t0 += len;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bad_shapes_and_types_are_errors_naming_the_tensor() {
    let k = rusty_llm::kernels::kernels();
    let e = Weights::new(
        "blk.0.ffn_up.weight",
        GgmlType::IQ2_XXS,
        1,
        256,
        &[0u8; 66],
        k,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("blk.0.ffn_up.weight") && e.to_string().contains("IQ2_XXS"),
        "{e}"
    );
    let e = Weights::new("t", GgmlType::Q8_0, 2, 32, &[0u8; 34], k).unwrap_err();
    assert!(e.to_string().contains("need 68 bytes"), "{e}");
    assert!(Weights::new("t", GgmlType::Q8_0, 1, 33, &[0u8; 34], k).is_err());
    let w = Weights::new("t", GgmlType::Q8_0, 1, 32, &[0u8; 34], k).unwrap();
    let pool = ThreadPool::new(1);
    let mut out = [0f32; 1];
    assert!(matvec(&pool, &w, &[0.0; 31], &mut out, &mut Scratch::default()).is_err());
}
