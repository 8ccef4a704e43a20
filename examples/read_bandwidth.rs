//! The machine's read bandwidth, as seen by our kernels: an F32 matrix ×
//! vector over a 256 MiB matrix (one FMA per 4 bytes cannot be the
//! bottleneck), with 1 and 2 threads. `scripts/bench-compare.py` divides
//! weight bytes per token × tokens/s by this to report decode efficiency.
//!
//!     cargo run --release --example read_bandwidth -- [threads...]
//!
//! Prints one JSON object: `{"threads": {"1": GB/s, "2": GB/s}}` (best of 9).

use rusty_llm::gguf::GgmlType;
use rusty_llm::kernels::{Scratch, ThreadPool, Weights, kernels, matvec};
use std::time::Instant;

fn main() {
    let threads: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let threads = if threads.is_empty() {
        vec![1, 2]
    } else {
        threads
    };
    let (rows, cols) = (32768, 2048); // 256 MiB of f32: far beyond every cache
    let data: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 * 0.01).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let w = Weights::new("bandwidth", GgmlType::F32, rows, cols, bytes, kernels()).unwrap();
    let x = vec![1.0f32; cols];
    let mut out = vec![0.0f32; rows];
    let mut scratch = Scratch::default();
    let mut results = serde_json::Map::new();
    for &t in &threads {
        let pool = ThreadPool::new(t);
        let mut best = f64::MAX;
        for _ in 0..9 {
            let start = Instant::now();
            matvec(&pool, &w, &x, &mut out, &mut scratch).unwrap();
            best = best.min(start.elapsed().as_secs_f64());
        }
        results.insert(
            t.to_string(),
            serde_json::json!(bytes.len() as f64 / best / 1e9),
        );
    }
    println!("{}", serde_json::json!({ "threads": results }));
}
