//! Matrix × vector throughput at real model shapes, in GB/s of weight bytes
//! streamed. The bound any kernel can reach is a plain read of as many bytes
//! (the table mode's `read` column): note that one matrix of these shapes
//! (up to ~18 MB) stays in a 32 MiB L3 across iterations, so that bound is
//! cache bandwidth, several times DRAM's (`read` filter: 512 MiB), which a
//! whole model's decode step actually streams from.
//!
//! Matrix × matrix (prefill) at 512 tokens is reported in tokens/s
//! (`elem/s`); GFLOP/s = 2 · rows · cols · tokens/s.
//!
//!     cargo bench --bench kernels                 # everything
//!     cargo bench --bench kernels -- 'Q4_K'       # one type
//!     cargo bench --bench kernels -- 'matmul'     # prefill only
//!     KERNELS_TABLE=1 cargo bench --bench kernels -- 'stream Q8_0'  # from DRAM
//!
//! Shapes: Gemma 3 270M (640→2048, 2048→640, 640→1024, 640→256, and the
//! 640×262144 output projection) and a Llama-3.2-1B-sized model (2048→8192,
//! 8192→2048, 2048×128256); matmul skips the two output projections (one
//! call would take seconds). Threads: 1 and 2.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use rusty_llm::gguf::GgmlType;
use rusty_llm::kernels::weight_buffer::WeightBuffer;
use rusty_llm::kernels::{
    BatchLanes, Kernels, QuantTiles, Scratch, ThreadPool, Weights, interleaved, kernels, matmul,
    matmul_segments, matvec,
};
use rusty_llm::quant;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;

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
/// Weights in huge pages, as the model loader keeps them.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> WeightBuffer {
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
    WeightBuffer::copy_of(&out).unwrap()
}

/// Whether a row of `cols` is whole blocks of `ty` (the K-quants' 256 does
/// not divide Gemma's 640: llama.cpp stores those tensors in other types).
fn fits(ty: GgmlType, cols: usize) -> bool {
    cols.is_multiple_of(ty.block_elements() as usize)
}

/// The interleaved copy the model loader would make of these weights.
fn interleaved_copy(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Option<WeightBuffer> {
    interleaved::can_interleave(ty, rows)
        .then(|| interleaved::interleave(ty, rows, cols, data).unwrap())
}

/// The weights as the model loader binds them: interleaved where `k` reads
/// them so.
fn bound<'a>(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
    copy: &'a Option<WeightBuffer>,
    k: &Kernels,
) -> Weights<'a> {
    let w = Weights::new("bench", ty, rows, cols, data, k).unwrap();
    match copy {
        Some(copy) if k.interleaved.get(ty).is_some() => w.interleaved(copy, k).unwrap(),
        _ => w,
    }
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
            if ty == GgmlType::F32 && rows < 8192 || !fits(ty, cols) {
                continue;
            }
            let data = weights(ty, rows, cols);
            let copy = interleaved_copy(ty, rows, cols, &data);
            let w = bound(ty, rows, cols, &data, &copy, k);
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
    // The cost of handing an empty job to the pool and waiting for it: what
    // every matrix product of a decode step pays before any arithmetic.
    let mut group = c.benchmark_group("pool run empty");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for pool in &pools {
        group.bench_function(format!("{} threads", pool.threads()), |b| {
            b.iter(|| {
                pool.run(pool.threads() * 4, &|c| {
                    std::hint::black_box(c);
                })
            })
        });
    }
    group.finish();
    const TOKENS: usize = 512;
    for ty in &types[1..] {
        let ty = *ty;
        let mut group = c.benchmark_group(format!("matmul{TOKENS} {ty}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for &(shape, rows, cols) in SHAPES {
            if rows > 100_000 || !fits(ty, cols) {
                continue;
            }
            let data = weights(ty, rows, cols);
            let copy = interleaved_copy(ty, rows, cols, &data);
            let w = bound(ty, rows, cols, &data, &copy, k);
            let xs = random(cols * TOKENS, 7);
            let mut out = vec![0f32; rows * TOKENS];
            let mut scratch = Scratch::default();
            group.throughput(Throughput::Elements(TOKENS as u64));
            for pool in &pools {
                group.bench_with_input(
                    BenchmarkId::new(shape, format!("{} threads", pool.threads())),
                    &(),
                    |b, _| {
                        b.iter(|| matmul(pool, &w, &xs, TOKENS, &mut out, &mut scratch).unwrap())
                    },
                );
            }
        }
        group.finish();
    }
}

/// Seconds of each call of `f`, `n` calls.
fn samples(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn min_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// Reads every word of `words` over the pool (chunks like a matvec's),
/// summing with eight independent accumulators so the loop is bound by loads,
/// not by a dependency chain.
fn read_all(pool: &ThreadPool, words: &[u64]) {
    let chunks = pool.threads() * 8;
    let per = words.len().div_ceil(chunks);
    let acc = AtomicU64::new(0);
    pool.run(chunks, &|c| {
        let part = &words[(c * per).min(words.len())..((c + 1) * per).min(words.len())];
        acc.fetch_xor(sum_words(part), Ordering::Relaxed);
    });
    std::hint::black_box(acc.load(Ordering::Relaxed));
}

fn sum_words(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn wide(words: &[u64]) -> u64 {
            sum_words_generic(words)
        }
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { wide(words) };
    }
    sum_words_generic(words)
}

#[inline(always)]
fn sum_words_generic(words: &[u64]) -> u64 {
    let mut acc = [0u64; 16];
    let (blocks, rest) = words.as_chunks::<16>();
    for b in blocks {
        for (a, v) in acc.iter_mut().zip(b) {
            *a = a.wrapping_add(*v);
        }
    }
    acc.iter().chain(rest).fold(0, |a, &v| a.wrapping_add(v))
}

/// One table row: GB/s (max, median) of the per-row path, the default one
/// and the read of as many bytes (`read`), from their times in seconds.
fn print_gbs(name: &str, threads: usize, read: &str, bytes: usize, times: [Vec<f64>; 3]) {
    let gb = bytes as f64 / 1e9;
    let [a, b, r] = times.map(min_median);
    println!(
        "{name:40} {threads} thr  GB/s rows {:5.1} {:5.1}  default {:5.1} {:5.1}  {read} {:5.1} {:5.1}  default/read {:3.0}% {:3.0}%",
        gb / a.0,
        gb / a.1,
        gb / b.0,
        gb / b.1,
        gb / r.0,
        gb / r.1,
        100.0 * r.0 / b.0,
        100.0 * r.1 / b.1,
    );
}

/// `KERNELS_TABLE=1 cargo bench --bench kernels [-- FILTER]`: a plain table
/// for noisy machines, min and median over interleaved runs of the per-row
/// path (`rows`, the tile and lane kernels switched off), the default one, and a read
/// of as many bytes (`read`, hot like the weights: the bandwidth that bounds
/// a matvec of this size), with the default path's share of it. `read`
/// alone measures DRAM (512 MiB).
fn table(filter: &str) {
    let k = *kernels();
    let mut per_row = k;
    per_row.tiles = QuantTiles::default();
    per_row.batch.lanes = BatchLanes::default();
    per_row.interleaved = interleaved::InterleavedDots::default();
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let want = |name: &str| name.contains(filter);
    if want("read") {
        // Beyond the last-level cache: DRAM bandwidth. The matvec rows below
        // compare against a buffer of their own size instead (a 1B-model
        // matrix fits in a 32 MiB L3 and is re-read hot by the bench).
        let buf: Vec<u64> = (0..64u64 << 20).collect();
        for pool in &pools {
            let (lo, med) = min_median(samples(15, || read_all(pool, &buf)));
            let gb = (buf.len() * 8) as f64 / 1e9;
            println!(
                "read 512MiB (DRAM)  {} thr  GB/s max {:.1} median {:.1}",
                pool.threads(),
                gb / lo,
                gb / med
            );
        }
    }
    if want("pool") {
        // Round trip of an empty job, back to back and after `gap` µs of
        // the caller's own work (a decode step's kernels are 5–100 µs apart).
        for pool in &pools {
            for gap_us in [0u64, 20, 100, 1000] {
                let spin = |us: u64| {
                    let t = Instant::now();
                    while t.elapsed().as_micros() < u128::from(us) {
                        std::hint::spin_loop();
                    }
                };
                let mut v = Vec::new();
                for _ in 0..2000 {
                    spin(gap_us);
                    let t = Instant::now();
                    pool.run(pool.threads() * 4, &|c| {
                        std::hint::black_box(c);
                    });
                    v.push(t.elapsed().as_secs_f64());
                }
                let (lo, med) = min_median(v);
                println!(
                    "pool run empty  {} thr  gap {gap_us:4} us  µs min {:.2} median {:.2}",
                    pool.threads(),
                    lo * 1e6,
                    med * 1e6
                );
            }
        }
    }
    let types = [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for ty in types {
        for &(shape, rows, cols) in SHAPES {
            let name = format!("matvec {ty} {shape}");
            if !want(&name) || (ty == GgmlType::F32 && rows < 8192) || !fits(ty, cols) {
                continue;
            }
            let data = weights(ty, rows, cols);
            let copy = interleaved_copy(ty, rows, cols, &data);
            let x = random(cols, 7);
            let mut out = vec![0f32; rows];
            let mut scratch = Scratch::default();
            // The bandwidth reference: the same number of bytes, read the
            // same way (hot, split over the pool).
            let words: Vec<u64> = (0..data.len() as u64 / 8).collect();
            for pool in &pools {
                let mut res = [Vec::new(), Vec::new(), Vec::new()];
                let n = (2e8 / data.len() as f64).clamp(3.0, 400.0) as usize;
                for _ in 0..5 {
                    for (i, kk) in [&per_row, &k].into_iter().enumerate() {
                        let w = bound(ty, rows, cols, &data, &copy, kk);
                        res[i].extend(samples(n, || {
                            matvec(pool, &w, &x, &mut out, &mut scratch).unwrap()
                        }));
                    }
                    res[2].extend(samples(n, || read_all(pool, &words)));
                }
                print_gbs(&name, pool.threads(), "read", data.len(), res);
            }
        }
    }
    // From memory, as a decode step reads them: copies of each matrix
    // cycled so that every call streams from DRAM, against a read of the
    // same 512 MiB span.
    const SPAN: usize = 512 << 20;
    let dram: Vec<u64> = (0..SPAN as u64 / 8).collect();
    // `rows` here: one row per dot call (the multi-row kernels off).
    let mut one_row = per_row;
    one_row.batch.rows = Default::default();
    one_row.batch.singles_tiles = Default::default();
    one_row.batch.four_tokens = Default::default();
    for ty in types {
        for &(shape, rows, cols) in SHAPES {
            let name = format!("stream {ty} {shape}");
            if !want(&name) || !fits(ty, cols) {
                continue;
            }
            let one = weights(ty, rows, cols);
            let copies: Vec<_> = (0..SPAN.div_ceil(one.len()).max(2))
                .map(|_| {
                    let data = WeightBuffer::copy_of(&one).unwrap();
                    let copy = interleaved_copy(ty, rows, cols, &data);
                    (data, copy)
                })
                .collect();
            let x = random(cols, 7);
            let mut out = vec![0f32; rows];
            let mut scratch = Scratch::default();
            for pool in &pools {
                let mut res = [Vec::new(), Vec::new(), Vec::new()];
                for _ in 0..5 {
                    for (i, kk) in [&one_row, &k].into_iter().enumerate() {
                        for (data, copy) in &copies {
                            let w = bound(ty, rows, cols, data, copy, kk);
                            res[i].extend(samples(1, || {
                                matvec(pool, &w, &x, &mut out, &mut scratch).unwrap()
                            }));
                        }
                    }
                    let span = samples(1, || read_all(pool, &dram))[0];
                    res[2].push(span * one.len() as f64 / SPAN as f64);
                }
                print_gbs(&name, pool.threads(), "DRAM read", one.len(), res);
            }
        }
    }
    // A continuous batch's decode step: n sequences of one token each over
    // the same matrix (hot: the output projection is re-read from DRAM
    // every step, so this is its compute bound), per token against one
    // sequence alone.
    for ty in types {
        for &(shape, rows, cols) in SHAPES {
            let name = format!("singles {ty} {shape}");
            if !want(&name) || !fits(ty, cols) || ty == GgmlType::F32 {
                continue;
            }
            let data = weights(ty, rows, cols);
            let copy = interleaved_copy(ty, rows, cols, &data);
            let w = bound(ty, rows, cols, &data, &copy, &k);
            let mut scratch = Scratch::default();
            for pool in &pools {
                let counts = [1usize, 2, 4, 8];
                let mut res: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
                let mut outs: Vec<Vec<f32>> =
                    counts.iter().map(|&n| vec![0f32; rows * n]).collect();
                let xs = random(cols * 8, 7);
                for _ in 0..5 {
                    for (i, &n) in counts.iter().enumerate() {
                        let segments = vec![1usize; n];
                        res[i].extend(samples(3, || {
                            matmul_segments(
                                pool,
                                &w,
                                &xs[..n * cols],
                                &segments,
                                &mut outs[i],
                                &mut scratch,
                            )
                            .unwrap()
                        }));
                    }
                }
                let line: Vec<String> = counts
                    .iter()
                    .zip(res)
                    .map(|(n, v)| {
                        let (lo, med) = min_median(v);
                        format!("{n} seq ms min {:.3} med {:.3}", lo * 1e3, med * 1e3)
                    })
                    .collect();
                println!("{name:40} {} thr  {}", pool.threads(), line.join("  "));
            }
        }
    }
    const TOKENS: usize = 512;
    for ty in &types[1..] {
        for &(shape, rows, cols) in SHAPES {
            let name = format!("matmul{TOKENS} {ty} {shape}");
            if !want(&name) || rows > 100_000 || !fits(*ty, cols) {
                continue;
            }
            let data = weights(*ty, rows, cols);
            let copy = interleaved_copy(*ty, rows, cols, &data);
            let xs = random(cols * TOKENS, 7);
            let mut out = vec![0f32; rows * TOKENS];
            let mut scratch = Scratch::default();
            for pool in &pools {
                let mut res = [Vec::new(), Vec::new()];
                for _ in 0..3 {
                    for (i, kk) in [&per_row, &k].into_iter().enumerate() {
                        let w = bound(*ty, rows, cols, &data, &copy, kk);
                        res[i].extend(samples(2, || {
                            matmul(pool, &w, &xs, TOKENS, &mut out, &mut scratch).unwrap()
                        }));
                    }
                }
                let gflop = 2.0 * (rows * cols * TOKENS) as f64 / 1e9;
                let [a, b] = res.map(min_median);
                println!(
                    "{name:45} {} thr  GFLOP/s rows max {:5.1} med {:5.1}  tiles max {:5.1} med {:5.1}  (tiles tok/s max {:.0})",
                    pool.threads(),
                    gflop / a.0,
                    gflop / a.1,
                    gflop / b.0,
                    gflop / b.1,
                    TOKENS as f64 / b.0
                );
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("KERNELS_TABLE").is_some() {
        let filter = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .unwrap_or_default();
        table(&filter);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
