//! Throughput of the K-quant and IQ4_XS matrix × vector kernels per SIMD
//! variant, in GB/s of weight bytes, one thread. Not a correctness test
//! (tests/kernels.rs is): run by hand with
//! `cargo test --release --test kernels_kquants -- --ignored --nocapture`.
//!
//! 2048×8192 cycles through enough copies of the matrix (≥ 128 MiB) that every
//! call streams its weights from memory; 640×2048 (under 1 MiB) repeats one
//! matrix, so it runs from cache.

use rusty_llm::gguf::GgmlType;
use rusty_llm::kernels::{Kernels, Scratch, Simd, ThreadPool, Weights, matvec};
use std::time::Instant;

/// Deterministic bytes (splitmix64).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z >> 56) as u8
        })
        .collect()
}

/// Weight type, block bytes, offsets of its f16 factors.
const TYPES: [(GgmlType, usize, &[usize]); 6] = [
    (GgmlType::Q2_K, 84, &[80, 82]),
    (GgmlType::Q3_K, 110, &[108]),
    (GgmlType::Q4_K, 144, &[0, 2]),
    (GgmlType::Q5_K, 176, &[0, 2]),
    (GgmlType::Q6_K, 210, &[208]),
    (GgmlType::IQ4_XS, 136, &[0]),
];

/// Random quants with small finite f16 factors.
fn matrix(size: usize, halves: &[usize], blocks: usize, seed: u64) -> Vec<u8> {
    let mut w = bytes(size * blocks, seed);
    let h = half::f16::from_f32(0.01).to_le_bytes();
    for b in w.chunks_exact_mut(size) {
        for &off in halves {
            b[off..off + 2].copy_from_slice(&h);
        }
    }
    w
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn kquant_matvec_throughput() {
    let pool = ThreadPool::new(1);
    let only = std::env::var("KQ_TYPES").unwrap_or_default();
    for (rows, cols, cold) in [(2048usize, 8192usize, true), (640, 2048, false)] {
        println!(
            "\n{rows}x{cols} ({}), GB/s of weights, 1 thread",
            if cold { "from memory" } else { "from cache" }
        );
        println!(
            "{:<8} {:>9} {:>9} {:>9}",
            "type", "scalar", "avx2", "avx512"
        );
        let x: Vec<f32> = bytes(cols, 5)
            .iter()
            .map(|&b| f32::from(b) / 128.0 - 1.0)
            .collect();
        for (ty, size, halves) in TYPES {
            if !only.is_empty() && !only.split(',').any(|t| t.eq_ignore_ascii_case(ty.name())) {
                continue;
            }
            let mat_bytes = rows * cols / 256 * size;
            let copies = if cold { (128 << 20) / mat_bytes + 1 } else { 1 };
            let mats: Vec<Vec<u8>> = (0..copies)
                .map(|c| matrix(size, halves, rows * cols / 256, c as u64))
                .collect();
            let mut line = format!("{:<8}", ty.name());
            for simd in [Simd::Scalar, Simd::Avx2, Simd::Avx512] {
                if !simd.is_supported() {
                    line += &format!(" {:>9}", "-");
                    continue;
                }
                let k = Kernels::for_simd(simd).unwrap();
                let ws: Vec<Weights> = mats
                    .iter()
                    .map(|m| Weights::new("w", ty, rows, cols, m, &k).unwrap())
                    .collect();
                let mut out = vec![0f32; rows];
                let mut scratch = Scratch::default();
                // Warm up, then time for ~0.5 s (fewer rounds for scalar).
                let budget = if simd == Simd::Scalar { 0.3 } else { 0.6 };
                for w in &ws {
                    matvec(&pool, w, &x, &mut out, &mut scratch).unwrap();
                }
                let (mut calls, t0) = (0usize, Instant::now());
                while t0.elapsed().as_secs_f64() < budget {
                    for w in &ws {
                        matvec(&pool, w, &x, &mut out, &mut scratch).unwrap();
                        calls += 1;
                    }
                }
                let gbs = (calls * mat_bytes) as f64 / t0.elapsed().as_secs_f64() / 1e9;
                line += &format!(" {gbs:>9.2}");
            }
            println!("{line}");
        }
    }
}
