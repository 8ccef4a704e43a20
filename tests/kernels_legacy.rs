//! The 32-element dot products (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4):
//! every variant against the scalar one on long random rows, and an ignored
//! throughput measurement:
//!
//!     cargo test --release --test kernels_legacy -- --ignored --nocapture

use rusty_llm::gguf::GgmlType;
use rusty_llm::kernels::{
    Kernels, Scratch, Simd, ThreadPool, Weights, matvec, quantize_activations,
};
use rusty_llm::quant;
use std::time::{Duration, Instant};

const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::MXFP4,
];

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `rows × cols` weights: quantized where the project has a quantizer, else
/// random quants with a sane scale at the start of each block.
fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if quant::can_quantize(ty) {
        quant::quantize_row(ty, &random(rows * cols, seed), &mut out).unwrap();
        return out;
    }
    let bytes = ty.bytes_for((rows * cols) as u64).unwrap() as usize;
    out = random(bytes, seed)
        .iter()
        .map(|v| (v * 127.0) as i8 as u8)
        .collect();
    for (i, block) in out.chunks_mut(ty.block_bytes() as usize).enumerate() {
        if ty == GgmlType::MXFP4 {
            block[0] = 120 + (i % 5) as u8;
        } else {
            let d = 0.01 + 0.001 * (i % 7) as f32;
            block[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                block[2..4].copy_from_slice(&half::f16::from_f32(-0.1).to_le_bytes());
            }
        }
    }
    out
}

#[test]
fn every_variant_matches_scalar_on_random_rows() {
    let scalar = Kernels::for_simd(Simd::Scalar).unwrap();
    let pool = ThreadPool::new(1);
    for ty in TYPES {
        for (rows, cols) in [(5, 32), (3, 64), (7, 96), (4, 160), (9, 2048), (2, 32 * 67)] {
            let w = weights(ty, rows, cols, (rows * cols) as u64);
            let x = random(cols, 99 + cols as u64);
            let run = |k: &Kernels| {
                let m = Weights::new("w", ty, rows, cols, &w, k).unwrap();
                let mut out = vec![0f32; rows];
                matvec(&pool, &m, &x, &mut out, &mut Scratch::default()).unwrap();
                out
            };
            let want = run(&scalar);
            // Σ|w·x| per row, from the dequantized weights.
            let mut wf = vec![0f32; rows * cols];
            quant::dequantize_row(ty, &w, &mut wf).unwrap();
            for simd in Simd::supported() {
                let got = run(&Kernels::for_simd(simd).unwrap());
                for r in 0..rows {
                    let mag: f32 = wf[r * cols..(r + 1) * cols]
                        .iter()
                        .zip(&x)
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert!(
                        (got[r] - want[r]).abs() <= 1e-5 * mag.max(1e-30),
                        "{ty} {simd:?} {rows}x{cols} row {r}: {} vs {}",
                        got[r],
                        want[r]
                    );
                }
            }
        }
    }
}

/// GB/s of weight bytes for matrix × vector, one thread, per type and
/// variant, at 2048×2048 (beyond L2) and 640×2048 (rows × cols; fits L2).
#[test]
#[ignore]
fn throughput() {
    let pool = ThreadPool::new(1);
    let filter = std::env::var("LEGACY_TYPES").unwrap_or_default();
    for (rows, cols) in [(2048, 2048), (640, 2048)] {
        println!("--- {rows}x{cols}, 1 thread, GB/s of weights: matvec (row dots alone)");
        for ty in TYPES {
            if !filter.is_empty() && !filter.split(',').any(|f| f.eq_ignore_ascii_case(ty.name())) {
                continue;
            }
            let w = weights(ty, rows, cols, 1);
            let x = random(cols, 2);
            let mut out = vec![0f32; rows];
            let mut line = format!("{:7}", ty.name());
            for simd in Simd::supported() {
                let k = Kernels::for_simd(simd).unwrap();
                let m = Weights::new("w", ty, rows, cols, &w, &k).unwrap();
                let mut scratch = Scratch::default();
                let dot = k.dots.get(ty).unwrap();
                let mut xq = Vec::new();
                quantize_activations(ty, &x, &mut xq).unwrap();
                let row_bytes = w.len() / rows;
                let mut best = Duration::MAX;
                let mut best_dots = Duration::MAX;
                let budget = if simd == Simd::Scalar { 0.15 } else { 0.4 };
                let start = Instant::now();
                while start.elapsed().as_secs_f64() < budget {
                    let t = Instant::now();
                    matvec(&pool, &m, &x, &mut out, &mut scratch).unwrap();
                    best = best.min(t.elapsed());
                    // The row dot products alone (no activation quantizing, no pool).
                    let t = Instant::now();
                    for (o, wr) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                        *o = dot(cols, wr, &xq);
                    }
                    std::hint::black_box(&out);
                    best_dots = best_dots.min(t.elapsed());
                }
                let dots = w.len() as f64 / best_dots.as_secs_f64() / 1e9;
                let gbs = w.len() as f64 / best.as_secs_f64() / 1e9;
                line += &format!("  {}: {gbs:6.1} ({dots:5.1})", simd.name());
            }
            println!("{line}");
        }
    }
}
