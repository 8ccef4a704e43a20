//! Matrix × vector throughput at real model shapes, in GB/s of weight bytes
//! streamed, beside a plain read-bandwidth measurement (f32 weights, which one
//! FMA per 4 bytes cannot slow down) that bounds what any kernel can reach.
//!
//!     cargo bench --bench kernels                 # everything
//!     cargo bench --bench kernels -- 'Q4_K'       # one type
//!
//! Shapes: Gemma 3 270M (640→2048, 2048→640, 640→1024, 640→256, and the
//! 640×262144 output projection) and a Llama-3.2-1B-sized model (2048→8192,
//! 8192→2048, 2048×128256). Threads: 1 and 2.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rusty_llm::gguf::GgmlType;
use rusty_llm::kernels::{Scratch, ThreadPool, Weights, kernels, matvec};
use rusty_llm::quant;
use std::time::Duration;

/// (name, rows = outputs, cols = inputs)
const SHAPES: &[(&str, usize, usize)] = &[
    ("gemma 640->2048", 2048, 640),
    ("gemma 2048->640", 640, 2048),
    ("gemma 640->1024", 1024, 640),
    ("gemma 640->256", 256, 640),
    ("gemma output 640x262144", 262144, 640),
    ("1B 2048->8192", 8192, 2048),
    ("1B 8192->2048", 2048, 8192),
    ("1B output 2048x128256", 128256, 2048),
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

/// `rows × cols` weights of type `ty`: quantized from random values where the
/// project has a quantizer, else random blocks with a sane f16 scale up front.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let values = random(cols * 64, rows as u64);
    let mut block_rows = Vec::new();
    for r in 0..64 {
        let src = &values[r * cols..(r + 1) * cols];
        if quant::can_quantize(ty) {
            quant::quantize_row(ty, src, &mut block_rows).unwrap();
        } else {
            let bytes = ty.bytes_for(cols as u64).unwrap() as usize;
            let mut row: Vec<u8> = random(bytes, r as u64)
                .iter()
                .map(|v| (v * 127.0) as i8 as u8)
                .collect();
            let per_block = ty.block_bytes() as usize;
            for block in row.chunks_mut(per_block) {
                block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
            block_rows.extend_from_slice(&row);
        }
    }
    // Repeat the 64 distinct rows: the bytes streamed are what matters.
    let row_bytes = block_rows.len() / 64;
    let mut out = Vec::with_capacity(rows * row_bytes);
    while out.len() < rows * row_bytes {
        let take = (rows * row_bytes - out.len()).min(block_rows.len());
        out.extend_from_slice(&block_rows[..take]);
    }
    out
}

fn bench(c: &mut Criterion) {
    let k = kernels();
    eprintln!("kernels: {}", k.simd.name());
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let types = [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for ty in types {
        let mut group = c.benchmark_group(format!("matvec {ty}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for &(shape, rows, cols) in SHAPES {
            // F32 is the bandwidth reference: measured on the large shapes only.
            if ty == GgmlType::F32 && rows < 8192 {
                continue;
            }
            let data = weights(ty, rows, cols);
            let w = Weights::new("bench", ty, rows, cols, &data, k).unwrap();
            let x = random(cols, 7);
            let mut out = vec![0f32; rows];
            let mut scratch = Scratch::default();
            group.throughput(Throughput::Bytes(data.len() as u64));
            for pool in &pools {
                group.bench_with_input(
                    BenchmarkId::new(shape, format!("{} threads", pool.threads())),
                    &(),
                    |b, _| b.iter(|| matvec(pool, &w, &x, &mut out, &mut scratch).unwrap()),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
