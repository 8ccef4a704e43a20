//! Scaled dot-product attention over the KV cache, one token's query in one
//! head (or a group of heads sharing a key/value head) per task on the
//! worker pool.
//!
//! The arithmetic follows the path llama.cpp takes for the same cache type,
//! so logits match it: an F32 cache runs ggml's plain softmax attention (what
//! llama.cpp does with `-ctk f32 -ctv f32 -fa off`, the parity reference), an
//! F16 cache runs ggml's CPU flash attention (llama.cpp's default: F16 cache,
//! flash attention on): per query with an f16 value accumulator, or, for a
//! batch of at least [`TILE_Q`] queries, ggml's tiled form (f32 matrix
//! products over 64 × 64 tiles), as llama.cpp switches between the two.

use super::kv_cache::{KvCache, KvStore};
use crate::kernels::f32_blocks::{exp_sum_16, expf_like_ggml, gemm_acc, reduce_add_16};
use crate::kernels::{Kernels, Simd, ThreadPool};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::cell::RefCell;

/// The shape and rules of one layer's attention.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Multiplier of `q·k`.
    pub scale: f32,
    /// Whether llama.cpp multiplies the query by `scale` before attention
    /// (then the scores are not scaled again).
    pub scale_on_q: bool,
    pub softcap: Option<f32>,
    /// Keys at distance ≥ `window` from the query are masked.
    pub window: Option<usize>,
    pub causal: bool,
}

/// Per-thread buffers, reused across tasks and calls.
#[derive(Default)]
struct Buffers {
    scores: Vec<f32>,
    q32: Vec<f32>,
    row: Vec<f32>,
    acc: Vec<f32>,
    acc16: Vec<f16>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// An output buffer that pool tasks write at disjoint indices.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: every user has each task write a disjoint part of the buffer
// (here: a `head_dim_v` slice per task), and `ThreadPool::run` returns only
// after all tasks are done, so the buffer outlives every write.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    pub(super) fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Attention of `n_tokens` queries at positions `pos0..pos0 + n_tokens`
/// against cached positions `0..n_kv` of `layer`. `q` holds
/// `n_tokens × n_head × head_dim_k` (already roped), `out` receives
/// `n_tokens × n_head × head_dim_v`. (The model calls [`attention_batch`];
/// this one-sequence form is what the tests compare against.)
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    kernels: &Kernels,
    cache: &KvCache,
    layer: usize,
    shape: &AttentionShape,
    q: &[f32],
    pos0: usize,
    n_kv: usize,
    out: &mut [f32],
) {
    let n_tokens = q.len() / (shape.n_head * shape.head_dim_k);
    let segment = AttentionSegment {
        cache,
        first: 0,
        n_tokens,
        pos0,
        n_kv,
    };
    attention_batch(pool, kernels, layer, shape, &[segment], q, out);
}

/// One sequence's queries in [`attention_batch`]: rows `first..first +
/// n_tokens` of `q` and `out`, at positions `pos0..`, against positions
/// `0..n_kv` of its own cache.
#[derive(Clone, Copy)]
pub struct AttentionSegment<'c> {
    pub cache: &'c KvCache,
    pub first: usize,
    pub n_tokens: usize,
    pub pos0: usize,
    pub n_kv: usize,
}

/// [`attention`] for several sequences at once (a continuous batch): each
/// segment is computed exactly as its own call would (its size picks the
/// kernel), and the per-query tasks of all of them share one pass over the
/// pool.
pub fn attention_batch(
    pool: &ThreadPool,
    kernels: &Kernels,
    layer: usize,
    shape: &AttentionShape,
    segments: &[AttentionSegment<'_>],
    q: &[f32],
    out: &mut [f32],
) {
    let q_dim = shape.n_head * shape.head_dim_k;
    let v_dim = shape.n_head * shape.head_dim_v;
    debug_assert_eq!(out.len() / v_dim, q.len() / q_dim);
    let f16_kernel = flash_f16_kernel(kernels.simd, shape);
    // Per-query segments, each with the rows its tasks read, decided once
    // here: the SIMD F16 kernel converts in registers and needs no copy;
    // without it, a batch of queries over an F16 cache would convert every
    // cached row once per query, so the rows in use are converted once
    // instead (exact, so the flash-attention arithmetic is unchanged).
    let mut per_query = Vec::with_capacity(segments.len());
    for seg in segments {
        let (keys, values) = seg.cache.layer(layer);
        let (q, out) = (
            &q[seg.first * q_dim..(seg.first + seg.n_tokens) * q_dim],
            &mut out[seg.first * v_dim..(seg.first + seg.n_tokens) * v_dim],
        );
        let reads = match (keys, values) {
            (KvStore::F16(k), KvStore::F16(v)) if seg.n_tokens >= TILE_Q => {
                TILED_KV.with_borrow_mut(|cached| {
                    let timed =
                        crate::profile::scope(|| "attention: F16 cache widened for tiles".into());
                    cached.fill(pool, k, v, shape, seg.cache.n_ctx(), seg.n_kv);
                    drop(timed);
                    tiled_flash_attention(pool, kernels, cached, shape, q, seg.pos0, out);
                });
                continue;
            }
            (KvStore::F16(keys), KvStore::F16(values)) => match f16_kernel {
                Some(kernel) => SegmentRows::SimdF16 {
                    kernel,
                    keys,
                    values,
                },
                None if seg.n_tokens > 1 => {
                    let (keys, values) = widen(keys, values, shape, seg.cache.n_ctx(), seg.n_kv);
                    SegmentRows::Widened { keys, values }
                }
                None => SegmentRows::F16 { keys, values },
            },
            (KvStore::F32(keys), KvStore::F32(values)) => SegmentRows::F32 { keys, values },
            _ => unreachable!("KvCache stores keys and values with one type"),
        };
        per_query.push((seg, reads));
    }
    // A task is one token's query in `group` consecutive heads, which share
    // a key/value head where the cache has fewer heads than the queries
    // (grouped-query attention). The SIMD F16 kernel runs such a group
    // together: one pass over the cached rows, and as many independent
    // online-softmax chains as heads for the CPU to overlap (each chain's
    // arithmetic is unchanged). Groups shrink while there would be too few
    // tasks to keep every thread busy.
    let queries: usize = per_query.iter().map(|(seg, _)| seg.n_tokens).sum();
    let n_rep = shape.n_head / shape.n_head_kv;
    let mut group = MAX_HEAD_GROUP.min(n_rep);
    while group > 1
        && (!n_rep.is_multiple_of(group) || queries * shape.n_head / group < 2 * pool.threads())
    {
        group /= 2;
    }
    // Task i of segment s is number `task_start[s] + i`, and runs
    // `heads[s]` heads.
    let mut task_start = Vec::with_capacity(per_query.len());
    let mut heads = Vec::with_capacity(per_query.len());
    let mut tasks = 0;
    for (seg, reads) in &per_query {
        task_start.push(tasks);
        let seg_heads = match reads {
            SegmentRows::SimdF16 { .. } => group,
            _ => 1,
        };
        heads.push(seg_heads);
        tasks += seg.n_tokens * shape.n_head / seg_heads;
    }
    if tasks == 0 {
        return;
    }
    let per_chunk = tasks.div_ceil(pool.threads() * 4).max(1);
    let dst = OutPtr(out.as_mut_ptr());
    pool.run(tasks.div_ceil(per_chunk), &|chunk| {
        BUFFERS.with_borrow_mut(|buf| {
            for task in chunk * per_chunk..((chunk + 1) * per_chunk).min(tasks) {
                let s = task_start.partition_point(|&start| start <= task) - 1;
                let (seg, reads) = &per_query[s];
                let (local, group) = (task - task_start[s], heads[s]);
                let groups_per_token = shape.n_head / group;
                let (t, first_head) = (local / groups_per_token, local % groups_per_token * group);
                let pos = seg.pos0 + t;
                let hi = if shape.causal { pos + 1 } else { seg.n_kv };
                let lo = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let row = seg.first + t;
                let query = Query {
                    shape,
                    kv_head: first_head / n_rep,
                    q: &q[row * q_dim + first_head * shape.head_dim_k..]
                        [..group * shape.head_dim_k],
                    lo,
                    hi,
                };
                // SAFETY: task (row, first_head) owns these heads' slice of `out`.
                let out_heads = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.at(row * v_dim + first_head * shape.head_dim_v),
                        group * shape.head_dim_v,
                    )
                };
                let n_ctx = seg.cache.n_ctx();
                match reads {
                    SegmentRows::SimdF16 {
                        kernel,
                        keys,
                        values,
                    } => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx,
                        };
                        kernel(query, rows, buf, out_heads)
                    }
                    SegmentRows::Widened { keys, values } => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx: seg.n_kv,
                        };
                        flash_attention(query, rows, buf, out_heads)
                    }
                    SegmentRows::F16 { keys, values } => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx,
                        };
                        flash_attention(query, rows, buf, out_heads)
                    }
                    SegmentRows::F32 { keys, values } => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx,
                        };
                        let batch = seg.n_tokens > 1;
                        softmax_attention(kernels, query, rows, batch, buf, out_heads)
                    }
                }
            }
        })
    });
}

/// What the per-query tasks of one segment read, and with which kernel:
/// chosen once per segment by [`attention_batch`].
enum SegmentRows<'c> {
    /// The cache's F16 rows through the SIMD kernel, several heads a task.
    SimdF16 {
        kernel: FlashF16,
        keys: &'c [f16],
        values: &'c [f16],
    },
    /// The F16 rows in use, widened to f32 once for the segment's queries
    /// ([`widen`]: `n_kv` positions per head).
    Widened { keys: Vec<f32>, values: Vec<f32> },
    /// The cache's F16 rows, one query alone.
    F16 { keys: &'c [f16], values: &'c [f16] },
    /// An F32 cache: ggml's plain softmax attention.
    F32 { keys: &'c [f32], values: &'c [f32] },
}

/// Positions `0..n_kv` of every key/value head, as f32, laid out like the
/// cache with `n_kv` as the position stride.
fn widen(
    keys: &[f16],
    values: &[f16],
    shape: &AttentionShape,
    n_ctx: usize,
    n_kv: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
    let mut k32 = vec![0.0; shape.n_head_kv * n_kv * dk];
    let mut v32 = vec![0.0; shape.n_head_kv * n_kv * dv];
    for h in 0..shape.n_head_kv {
        keys[h * n_ctx * dk..][..n_kv * dk]
            .convert_to_f32_slice(&mut k32[h * n_kv * dk..][..n_kv * dk]);
        values[h * n_ctx * dv..][..n_kv * dv]
            .convert_to_f32_slice(&mut v32[h * n_kv * dv..][..n_kv * dv]);
    }
    (k32, v32)
}

/// A cache element type whose rows the flash path reads as f32: f16 rows are
/// converted into a buffer, f32 rows (already widened f16 values) are used
/// in place.
trait CacheRow: Copy {
    fn as_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
}

impl CacheRow for f16 {
    #[inline(always)]
    fn as_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
        row.convert_to_f32_slice(&mut buf[..row.len()]);
        &buf[..row.len()]
    }
}

impl CacheRow for f32 {
    #[inline(always)]
    fn as_f32<'a>(row: &'a [Self], _buf: &'a mut [f32]) -> &'a [f32] {
        row
    }
}

/// One (token, head) task: the query and which cached positions it sees.
#[derive(Clone, Copy)]
struct Query<'a> {
    shape: &'a AttentionShape,
    kv_head: usize,
    /// One head's query; for a [`FlashF16`] kernel, those of consecutive
    /// heads (`head_dim_k` values each) that all read `kv_head`.
    q: &'a [f32],
    lo: usize,
    hi: usize,
}

/// One layer's cached keys and values, `[kv_head][position][dim]` with a
/// position stride of `n_ctx`.
#[derive(Clone, Copy)]
struct Rows<'a, T> {
    keys: &'a [T],
    values: &'a [T],
    n_ctx: usize,
}

/// ggml's non-flash path (what llama.cpp runs with an F32 cache and
/// `-fa off`), in its f32 order: scores by `ggml_vec_dot_f32`, softmax with
/// ggml's vector exp (`ggml_v_expf`) summed per 16 cache slots
/// (`ggml_vec_soft_max_f32`), then `Σ p·v` as ggml's `kqv` matmul does it:
/// `ggml_vec_dot_f32` over the cache slots for one query (`batch` false),
/// tinyBLAS's 16-lane F32 kernel (`llamafile_sgemm`) for a batch. llama.cpp
/// runs these over the whole padded cache view (masked slots are exact
/// zeros), so the lanes are fixed by the slot index, which is the position.
fn softmax_attention(
    kernels: &Kernels,
    query: Query<'_>,
    rows: Rows<'_, f32>,
    batch: bool,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    let Query {
        shape,
        kv_head,
        q,
        lo,
        hi,
    } = query;
    let Rows {
        keys,
        values,
        n_ctx,
    } = rows;

    let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
    buf.scores.clear();
    buf.scores.resize(hi - lo, 0.0);
    let key_base = kv_head * n_ctx * dk;
    // The query scaled first where llama.cpp scales it.
    let scale = if shape.scale_on_q {
        buf.q32.clear();
        buf.q32.extend(q.iter().map(|&x| x * shape.scale));
        1.0
    } else {
        shape.scale
    };
    let qb: &[u8] = bytemuck::cast_slice(if shape.scale_on_q { &buf.q32[..] } else { q });
    for (j, s) in buf.scores.iter_mut().enumerate() {
        let row = &keys[key_base + (lo + j) * dk..][..dk];
        *s = (kernels.dots.f32)(dk, bytemuck::cast_slice(row), qb);
    }
    // Scale (and soft-cap), subtract the max, exp, sum in f64 by blocks of
    // 16 slots, multiply by the f32 rounding of 1/sum.
    let mut max = f32::NEG_INFINITY;
    for s in buf.scores.iter_mut() {
        *s *= scale;
        if let Some(cap) = shape.softcap {
            *s = (*s * (1.0 / cap)).tanh() * cap;
        }
        max = max.max(*s);
    }
    let sum = ggml_exp_sum(&mut buf.scores, lo, max);
    let inv = (1.0 / sum) as f32;
    for s in buf.scores.iter_mut() {
        *s *= inv;
    }
    let value_base = kv_head * n_ctx * dv;
    // One accumulator row per lane a slot lands in: ggml_vec_dot_f32 has 4
    // accumulators of 16 lanes over steps of 64, tinyBLAS one of 16.
    let lanes = if batch { 16 } else { 64 };
    buf.acc.clear();
    buf.acc.resize(lanes * dv, 0.0);
    for (j, &p) in buf.scores.iter().enumerate() {
        let slot = lo + j;
        let row = &values[value_base + slot * dv..][..dv];
        fma_into(&mut buf.acc[(slot % lanes) * dv..][..dv], row, p);
    }
    let acc = &buf.acc;
    let lane = |l: usize, d: usize| acc[l * dv + d];
    for (d, o) in out.iter_mut().enumerate() {
        let v: [f32; 16] = if batch {
            std::array::from_fn(|l| lane(l, d))
        } else {
            // GGML_F32x16_REDUCE: (sum0 + sum2) + (sum1 + sum3).
            std::array::from_fn(|l| {
                (lane(l, d) + lane(32 + l, d)) + (lane(16 + l, d) + lane(48 + l, d))
            })
        };
        *o = reduce_add_16(&v);
    }
}

/// `acc[i] = fma(row[i], p, acc[i])`: hardware FMA where the CPU has it
/// (the same value as the software one, much faster).
fn fma_into(acc: &mut [f32], row: &[f32], p: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "fma")]
        fn with_fma(acc: &mut [f32], row: &[f32], p: f32) {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = x.mul_add(p, *a);
            }
        }
        // SAFETY: the CPU has FMA (checked above).
        return unsafe { with_fma(acc, row, p) };
    }
    for (a, &x) in acc.iter_mut().zip(row) {
        *a = x.mul_add(p, *a);
    }
}

/// `ggml_vec_soft_max_f32` (AVX-512): every score becomes
/// `ggml_v_expf(s − max)`; the sum adds, in f64, the `_mm512_reduce_add_ps`
/// of each block of 16 cache slots (slot `lo + j` for score `j`; slots
/// outside the scores are masked, exact zeros).
fn ggml_exp_sum(scores: &mut [f32], lo: usize, max: f32) -> f64 {
    // AVX2 too: the exp's exponent is integer arithmetic.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { ggml_exp_sum_avx2(scores, lo, max) };
    }
    ggml_exp_sum_body(scores, lo, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn ggml_exp_sum_avx2(scores: &mut [f32], lo: usize, max: f32) -> f64 {
    ggml_exp_sum_body(scores, lo, max)
}

#[inline(always)]
fn ggml_exp_sum_body(scores: &mut [f32], lo: usize, max: f32) -> f64 {
    for s in scores.iter_mut() {
        *s = expf_like_ggml(*s - max);
    }
    let mut sum = 0.0f64;
    let hi = lo + scores.len();
    let mut block = lo - lo % 16;
    while block < hi {
        let v: [f32; 16] = std::array::from_fn(|l| {
            let slot = block + l;
            if slot >= lo && slot < hi {
                scores[slot - lo]
            } else {
                0.0
            }
        });
        sum += f64::from(reduce_add_16(&v));
        block += 16;
    }
    sum
}

/// ggml's CPU flash attention over an F16 cache (llama.cpp's default: F16
/// cache, flash attention on): `q` rounded to f16, one pass over the keys
/// with an online softmax, and the weighted values accumulated *in f16*
/// (each multiply-add rounded to f16), divided by the sum at the end.
fn flash_attention<T: CacheRow>(
    query: Query<'_>,
    rows: Rows<'_, T>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    // The loop leans on fused multiply-adds (ggml's f16 accumulator uses
    // them); compiled with FMA enabled they are one instruction instead of a
    // libm call. Same source, same results, chosen at run time.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA, checked just above.
        return unsafe { flash_attention_fma(query, rows, buf, out) };
    }
    flash_attention_body(query, rows, buf, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn flash_attention_fma<T: CacheRow>(
    query: Query<'_>,
    rows: Rows<'_, T>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    flash_attention_body(query, rows, buf, out)
}

#[inline(always)]
fn flash_attention_body<T: CacheRow>(
    query: Query<'_>,
    rows: Rows<'_, T>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    let Query {
        shape,
        kv_head,
        q,
        lo,
        hi,
    } = query;
    let Rows {
        keys,
        values,
        n_ctx,
    } = rows;

    let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
    let Buffers {
        q32,
        row,
        acc,
        acc16,
        ..
    } = buf;
    // q (scaled first where llama.cpp scales it) rounded to f16 (ggml
    // converts it to the cache type), kept as f32.
    acc16.resize(dk.max(dv), f16::ZERO);
    let scale = if shape.scale_on_q {
        row.clear();
        row.extend(q.iter().map(|&x| x * shape.scale));
        acc16[..dk].convert_from_f32_slice(&row[..dk]);
        1.0
    } else {
        acc16[..dk].convert_from_f32_slice(q);
        shape.scale
    };
    q32.resize(dk, 0.0);
    acc16[..dk].convert_to_f32_slice(q32);
    row.resize(dk.max(dv), 0.0);
    acc.clear();
    acc.resize(dv, 0.0); // always holds f16 values
    let (key_base, value_base) = (kv_head * n_ctx * dk, kv_head * n_ctx * dv);
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for pos in lo..hi {
        let k = T::as_f32(&keys[key_base + pos * dk..][..dk], row);
        let s = dot_like_ggml_f16(k, q32);
        // ggml folds the soft-cap divisor into the scale.
        let s = flash_score(s, scale, shape.softcap);
        let (rescale, vs) = online_softmax_step(s, &mut max);
        let ms = rescale.unwrap_or(1.0);
        if rescale.is_some() {
            for a in acc.iter_mut() {
                *a *= ms;
            }
            round_to_f16(acc, &mut acc16[..dv]);
        }
        let v = T::as_f32(&values[value_base + pos * dv..][..dv], row);
        for (a, &v) in acc.iter_mut().zip(v) {
            *a = v.mul_add(vs, *a);
        }
        round_to_f16(acc, &mut acc16[..dv]);
        // `S = S*ms + vs`, which GCC contracts into one FMA.
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
    }
}

/// The per-query flash attention over an F16 cache in SIMD, where the
/// variant has one for this shape: the same arithmetic as
/// [`flash_attention`], with the f16 conversions in registers, for a group
/// of up to [`MAX_HEAD_GROUP`] heads at once (`out` holds their outputs in
/// head order).
type FlashF16 = fn(Query<'_>, Rows<'_, f16>, &mut Buffers, &mut [f32]);

/// The most query heads one [`FlashF16`] call runs together. Four chains
/// hide the latency of each position's steps (a dot product's reduction,
/// `exp`, the f16 accumulator's round trip) without running out of
/// registers.
const MAX_HEAD_GROUP: usize = 4;

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn flash_f16_kernel(simd: Simd, shape: &AttentionShape) -> Option<FlashF16> {
    // ggml's f16 dot takes 64 elements a step; the value rows go 16 at a time.
    let fits = shape.head_dim_k.is_multiple_of(64) && shape.head_dim_v.is_multiple_of(16);
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if fits => Some(|query, rows, buf, out| {
            // SAFETY: the AVX-512 variant is only selected on CPUs that have
            // AVX-512F (and F16C and FMA, which it implies here).
            unsafe { flash_attention_f16_avx512(query, rows, buf, out) }
        }),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if fits => Some(|query, rows, buf, out| {
            // SAFETY: the AVX2 variant is only selected on CPUs that have
            // AVX2, F16C and FMA.
            unsafe { flash_attention_f16_avx2(query, rows, buf, out) }
        }),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c,fma")]
unsafe fn flash_attention_f16_avx512(
    query: Query<'_>,
    rows: Rows<'_, f16>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    // SAFETY: forwarded; the features of `Zmm` are enabled here.
    unsafe { flash_attention_f16_heads::<lanes16::Zmm>(query, rows, buf, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn flash_attention_f16_avx2(
    query: Query<'_>,
    rows: Rows<'_, f16>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    // SAFETY: forwarded; the features of `YmmPair` are enabled here.
    unsafe { flash_attention_f16_heads::<lanes16::YmmPair>(query, rows, buf, out) }
}

/// Sixteen f32 lanes, the width of ggml's AVX-512 f16 dot whose order the
/// scores follow: one register with AVX-512, two with AVX2. Every lane is an
/// independent chain, so both give the same bits.
#[cfg(target_arch = "x86_64")]
mod lanes16 {
    use std::arch::x86_64::*;

    /// # Safety
    /// Callers enable the type's CPU features (the methods inline into them)
    /// and pass pointers valid for 16 elements.
    pub(super) trait Lanes16: Copy {
        unsafe fn zero() -> Self;
        unsafe fn splat(x: f32) -> Self;
        unsafe fn load_f16(p: *const u16) -> Self;
        unsafe fn load_f32(p: *const f32) -> Self;
        /// Rounded to the nearest f16.
        unsafe fn store_f16(self, p: *mut u16);
        /// Every lane rounded to the nearest f16 value (kept as f32).
        unsafe fn round_f16(self) -> Self;
        unsafe fn add(self, o: Self) -> Self;
        unsafe fn mul(self, o: Self) -> Self;
        /// `self · b + c`, fused.
        unsafe fn mul_add(self, b: Self, c: Self) -> Self;
        unsafe fn to_array(self) -> [f32; 16];
        /// [`reduce_add_16`](super::reduce_add_16) of eight vectors, in
        /// registers: `[r0, r2, r4, r6, r1, r3, r5, r7]` for inputs `v0..v7`.
        unsafe fn reduce_add_16_x8(v: [Self; 8]) -> [f32; 8];
    }

    /// `[t4(a) | t4(b)]` for a pair of first folds: `t4[l] = t8[l + 4] + t8[l]`.
    ///
    /// # Safety
    /// AVX is enabled in the caller.
    #[inline(always)]
    unsafe fn t4(a: __m256, b: __m256) -> __m256 {
        // SAFETY: register-only AVX operations, enabled by the caller.
        unsafe {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x31>(a, b),
                _mm256_permute2f128_ps::<0x20>(a, b),
            )
        }
    }

    /// From `[t4(a) | t4(b)]` and `[t4(c) | t4(d)]`: `[a₀₂, a₁₃, c₀₂, c₁₃ |
    /// b₀₂, b₁₃, d₀₂, d₁₃]` where `x₀₂ = t4[0] + t4[2]`, `x₁₃ = t4[1] + t4[3]`.
    ///
    /// # Safety
    /// AVX is enabled in the caller.
    #[inline(always)]
    unsafe fn halves(ab: __m256, cd: __m256) -> __m256 {
        // SAFETY: register-only AVX operations, enabled by the caller.
        unsafe {
            _mm256_add_ps(
                _mm256_shuffle_ps::<0b01_00_01_00>(ab, cd),
                _mm256_shuffle_ps::<0b11_10_11_10>(ab, cd),
            )
        }
    }

    /// [`Lanes16::reduce_add_16_x8`] from each vector's first fold
    /// (`t8[l] = v[l + 8] + v[l]`): the rest of the tree, `t4[l] = t8[l + 4]
    /// + t8[l]` then `(t4[0] + t4[2]) + (t4[1] + t4[3])`, eight at a time.
    ///
    /// # Safety
    /// AVX is enabled in the caller.
    #[inline(always)]
    unsafe fn reduce_t8_x8(t8: [__m256; 8]) -> [f32; 8] {
        // SAFETY: register-only AVX operations, enabled by the caller.
        unsafe {
            let u = halves(t4(t8[0], t8[1]), t4(t8[2], t8[3]));
            let v = halves(t4(t8[4], t8[5]), t4(t8[6], t8[7]));
            let r = _mm256_add_ps(
                _mm256_shuffle_ps::<0b10_00_10_00>(u, v),
                _mm256_shuffle_ps::<0b11_01_11_01>(u, v),
            );
            std::mem::transmute(r)
        }
    }

    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    #[derive(Clone, Copy)]
    pub(super) struct Zmm(__m512);

    impl Lanes16 for Zmm {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm512_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            // SAFETY: the caller's contract.
            unsafe { Self(_mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))) }
        }
        #[inline(always)]
        unsafe fn load_f32(p: *const f32) -> Self {
            // SAFETY: the caller's contract.
            unsafe { Self(_mm512_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn store_f16(self, p: *mut u16) {
            // SAFETY: the caller's contract.
            unsafe { _mm256_storeu_si256(p as *mut __m256i, _mm512_cvtps_ph::<NEAREST>(self.0)) }
        }
        #[inline(always)]
        unsafe fn round_f16(self) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm512_cvtph_ps(_mm512_cvtps_ph::<NEAREST>(self.0))) }
        }
        #[inline(always)]
        unsafe fn reduce_add_16_x8(v: [Self; 8]) -> [f32; 8] {
            // SAFETY: the trait's contract (AVX-512F implies AVX).
            unsafe {
                let mut t8 = [_mm256_setzero_ps(); 8];
                for (t, v) in t8.iter_mut().zip(v) {
                    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v.0)));
                    *t = _mm256_add_ps(hi, _mm512_castps512_ps256(v.0));
                }
                reduce_t8_x8(t8)
            }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm512_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm512_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm512_fmadd_ps(self.0, b.0, c.0)) }
        }
        #[inline(always)]
        unsafe fn to_array(self) -> [f32; 16] {
            // SAFETY: `__m512` and `[f32; 16]` have the same size.
            unsafe { std::mem::transmute(self.0) }
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct YmmPair(__m256, __m256);

    impl Lanes16 for YmmPair {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            // SAFETY: the caller's contract.
            unsafe {
                let half = |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                Self(half(p), half(p.add(8)))
            }
        }
        #[inline(always)]
        unsafe fn load_f32(p: *const f32) -> Self {
            // SAFETY: the caller's contract.
            unsafe { Self(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
        }
        #[inline(always)]
        unsafe fn store_f16(self, p: *mut u16) {
            // SAFETY: the caller's contract.
            unsafe {
                _mm_storeu_si128(
                    p as *mut __m128i,
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0),
                );
                _mm_storeu_si128(
                    p.add(8) as *mut __m128i,
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.1),
                );
            }
        }
        #[inline(always)]
        unsafe fn round_f16(self) -> Self {
            // SAFETY: the trait's contract.
            unsafe {
                let round =
                    |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
                Self(round(self.0), round(self.1))
            }
        }
        #[inline(always)]
        unsafe fn reduce_add_16_x8(v: [Self; 8]) -> [f32; 8] {
            // SAFETY: the trait's contract.
            unsafe {
                let mut t8 = [_mm256_setzero_ps(); 8];
                for (t, v) in t8.iter_mut().zip(v) {
                    *t = _mm256_add_ps(v.1, v.0);
                }
                reduce_t8_x8(t8)
            }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm256_add_ps(self.0, o.0), _mm256_add_ps(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            // SAFETY: the trait's contract.
            unsafe { Self(_mm256_mul_ps(self.0, o.0), _mm256_mul_ps(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            // SAFETY: the trait's contract.
            unsafe {
                Self(
                    _mm256_fmadd_ps(self.0, b.0, c.0),
                    _mm256_fmadd_ps(self.1, b.1, c.1),
                )
            }
        }
        #[inline(always)]
        unsafe fn to_array(self) -> [f32; 16] {
            // SAFETY: two `__m256` are sixteen f32.
            unsafe { std::mem::transmute([self.0, self.1]) }
        }
    }
}

/// [`flash_attention_f16_simd`] for the `q.len() / head_dim_k` heads of a
/// [`FlashF16`] call.
///
/// # Safety
/// The CPU features of `L` are enabled in the caller, into which this inlines.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn flash_attention_f16_heads<L: lanes16::Lanes16>(
    query: Query<'_>,
    rows: Rows<'_, f16>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    // SAFETY (all arms): forwarded.
    unsafe {
        match query.q.len() / query.shape.head_dim_k {
            1 => flash_attention_f16_simd::<L, 1>(query, rows, buf, out),
            2 => flash_attention_f16_simd::<L, 2>(query, rows, buf, out),
            4 => flash_attention_f16_simd::<L, 4>(query, rows, buf, out),
            heads => {
                unreachable!("a group of {heads} heads (at most {MAX_HEAD_GROUP}, a power of two)")
            }
        }
    }
}

/// [`flash_attention_body`] for an F16 cache in 16-lane SIMD, for `G` heads
/// that read the same cached rows: keys and values widened in registers
/// once for all of them, each head's f16 accumulator kept as f16. The heads'
/// online softmaxes are independent chains, run block by block of
/// positions; each one's arithmetic is exactly the one-head loop's.
///
/// # Safety
/// The CPU features of `L` are enabled in the caller, into which this inlines.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn flash_attention_f16_simd<L: lanes16::Lanes16, const G: usize>(
    query: Query<'_>,
    rows: Rows<'_, f16>,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    let Query {
        shape,
        kv_head,
        q,
        lo,
        hi,
    } = query;
    let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
    assert!(dk.is_multiple_of(64) && dv.is_multiple_of(16));
    assert!(q.len() == G * dk && out.len() == G * dv);
    assert!(hi <= rows.n_ctx);
    assert!((kv_head + 1) * rows.n_ctx * dk <= rows.keys.len());
    assert!((kv_head + 1) * rows.n_ctx * dv <= rows.values.len());
    let Buffers {
        q32, row, acc16, ..
    } = buf;
    // Each q (scaled first where llama.cpp scales it) rounded to f16 (ggml
    // converts it to the cache type), kept as f32.
    acc16.clear();
    acc16.resize(G * dk.max(dv), f16::ZERO);
    let scale = if shape.scale_on_q {
        row.clear();
        row.extend(q.iter().map(|&x| x * shape.scale));
        acc16[..G * dk].convert_from_f32_slice(row);
        1.0
    } else {
        acc16[..G * dk].convert_from_f32_slice(q);
        shape.scale
    };
    q32.resize(G * dk, 0.0);
    acc16[..G * dk].convert_to_f32_slice(q32);
    acc16[..G * dv].fill(f16::ZERO);
    let mut max = [f32::NEG_INFINITY; G];
    let mut sum = [0.0f32; G];
    // SAFETY: every pointer stays inside its slice: positions lo..hi ≤ n_ctx
    // of this head's rows (asserted above), dims in steps that divide dk and
    // dv, and `acc` holds G × dv values; the caller enables L's features.
    unsafe {
        let acc = acc16.as_mut_ptr() as *mut u16;
        let qp = q32.as_ptr();
        let key_base = rows.keys.as_ptr().add(kv_head * rows.n_ctx * dk) as *const u16;
        let value_base = rows.values.as_ptr().add(kv_head * rows.n_ctx * dv) as *const u16;
        // Positions go in blocks, each in three passes: the scores, the
        // online-softmax weights, then the value accumulation. ggml calls
        // libm's `expf` per position; here the block's exps are one
        // vectorized loop with libm's bits, where a call per position would
        // cost its own time and force the vector registers to be saved
        // around it. The order of every head's arithmetic is the
        // one-position loop's.
        const BLOCK: usize = 16;
        let mut block_lo = lo;
        while block_lo < hi {
            let n = BLOCK.min(hi - block_lo);
            // `dot_like_ggml_f16`, vectorized: the same four accumulators and
            // folds, the last fold's 16 lanes reduced for eight positions at
            // once where the block has them.
            let mut scores = [[0.0f32; BLOCK]; G];
            let by_eight = n - n % 8;
            for (g, scores) in scores.iter_mut().enumerate() {
                let qg = qp.add(g * dk);
                for p in (0..by_eight).step_by(8) {
                    let mut folded = [L::zero(); 8];
                    for (i, f) in folded.iter_mut().enumerate() {
                        *f = dot_f16_lanes(key_base.add((block_lo + p + i) * dk), qg, dk);
                    }
                    let r = L::reduce_add_16_x8(folded);
                    for (i, lane) in [0, 2, 4, 6, 1, 3, 5, 7].into_iter().enumerate() {
                        scores[p + lane] = r[i];
                    }
                }
                for (p, score) in scores.iter_mut().enumerate().take(n).skip(by_eight) {
                    let folded = dot_f16_lanes::<L>(key_base.add((block_lo + p) * dk), qg, dk);
                    *score = reduce_add_16(&folded.to_array());
                }
            }
            // Per head and position, `online_softmax_step` in two passes: the
            // running maximum and the argument of each `exp`, then the exps,
            // which vectorize. A new maximum makes the exp the accumulator's
            // rescale and the value's weight 1; otherwise the exp is the weight.
            let mut moved = [[false; BLOCK]; G];
            let mut exps = [[0.0f32; BLOCK]; G];
            for (((scores, moved), exps), max) in
                scores.iter().zip(&mut moved).zip(&mut exps).zip(&mut max)
            {
                for p in 0..n {
                    let s = flash_score(scores[p], scale, shape.softcap);
                    moved[p] = s > *max;
                    exps[p] = if moved[p] { *max - s } else { s - *max };
                    *max = max.max(s);
                }
                crate::kernels::f32_blocks::expf_slice_body(&mut exps[..n]);
            }
            // Each head's accumulator, 64 dims at a time, stays in registers
            // across the block, rounded to f16 after every step as ggml's f16
            // accumulator in memory is (4 × 16 lanes: enough independent
            // chains to cover the latency of the round trip).
            for g in 0..G {
                for p in 0..n {
                    let (ms, vs) = match moved[g][p] {
                        true => (exps[g][p], 1.0),
                        false => (1.0, exps[g][p]),
                    };
                    // `S = S*ms + vs`, which GCC contracts into one FMA.
                    sum[g] = sum[g].mul_add(ms, vs);
                }
                let weights = WeightedRows {
                    values: value_base.add(block_lo * dv),
                    stride: dv,
                    moved: &moved[g][..n],
                    exps: &exps[g][..n],
                };
                let acc = acc.add(g * dv);
                let wide = dv - dv % 64;
                for d in (0..wide).step_by(64) {
                    accumulate_values::<L, 4>(acc.add(d), weights, d);
                }
                for d in (wide..dv).step_by(16) {
                    accumulate_values::<L, 1>(acc.add(d), weights, d);
                }
            }
            block_lo += n;
        }
    }
    for g in 0..G {
        let inv = if sum[g] == 0.0 { 0.0 } else { 1.0 / sum[g] };
        for (o, a) in out[g * dv..][..dv].iter_mut().zip(&acc16[g * dv..][..dv]) {
            *o = a.to_f32() * inv;
        }
    }
}

/// One block of positions' value rows (f16, `stride` apart) and how each
/// weighs into one head's accumulator: a new maximum (`moved`) rescales the
/// accumulator by `exps[p]` and adds the row with weight 1; otherwise the
/// row's weight is `exps[p]`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct WeightedRows<'a> {
    values: *const u16,
    stride: usize,
    moved: &'a [bool],
    exps: &'a [f32],
}

/// Dims `d..d + 16·W` of one head's f16 accumulator `acc` (pointing at dim
/// `d`) through a block of positions, held in registers: ggml's
/// `ggml_vec_scale_f16` and `ggml_vec_mad_f16` per position, each result
/// rounded to f16.
///
/// # Safety
/// The CPU features of `L` are enabled in the caller; `acc` holds 16·W f16
/// values and every row of `rows` at least `d + 16·W`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn accumulate_values<L: lanes16::Lanes16, const W: usize>(
    acc: *mut u16,
    rows: WeightedRows<'_>,
    d: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut a = [L::zero(); W];
        for (j, a) in a.iter_mut().enumerate() {
            *a = L::load_f16(acc.add(16 * j));
        }
        for (p, (&moved, &e)) in rows.moved.iter().zip(rows.exps).enumerate() {
            let w = if moved {
                let m = L::splat(e);
                for a in a.iter_mut() {
                    *a = a.mul(m).round_f16();
                }
                1.0
            } else {
                e
            };
            let (w, vp) = (L::splat(w), rows.values.add(p * rows.stride + d));
            for (j, a) in a.iter_mut().enumerate() {
                *a = L::load_f16(vp.add(16 * j)).mul_add(w, *a).round_f16();
            }
        }
        for (j, a) in a.iter().enumerate() {
            a.store_f16(acc.add(16 * j));
        }
    }
}

/// `dot_like_ggml_f16` of an f16 key row and a query of f16 values held in
/// f32, vectorized up to its final reduction: the same four accumulators
/// and folds, returning the last fold's 16 lanes.
///
/// # Safety
/// The CPU features of `L` are enabled in the caller; `k` and `q` hold `dk`
/// elements, a multiple of 64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_f16_lanes<L: lanes16::Lanes16>(k: *const u16, q: *const f32, dk: usize) -> L {
    // SAFETY: the caller's contract.
    unsafe {
        let mut lanes = [L::zero(); 4];
        for i in (0..dk).step_by(64) {
            for (j, a) in lanes.iter_mut().enumerate() {
                let at = i + 16 * j;
                *a = L::load_f16(k.add(at)).mul_add(L::load_f32(q.add(at)), *a);
            }
        }
        lanes[0].add(lanes[2]).add(lanes[1].add(lanes[3]))
    }
}

/// A raw score `q·k` scaled, and soft-capped as ggml's flash attention does
/// it (the cap's divisor folded into the scale).
#[inline(always)]
fn flash_score(s: f32, scale: f32, softcap: Option<f32>) -> f32 {
    match softcap {
        Some(cap) => cap * (s * (scale / cap)).tanh(),
        None => s * scale,
    }
}

/// One key of the online softmax: a new maximum rescales what was
/// accumulated by `Some(exp(old − new))` and weighs this key 1; otherwise the
/// key weighs `exp(s − max)`. Returns (rescale, weight).
#[inline(always)]
fn online_softmax_step(s: f32, max: &mut f32) -> (Option<f32>, f32) {
    if s > *max {
        let ms = (*max - s).exp();
        *max = s;
        (Some(ms), 1.0)
    } else {
        (None, (s - *max).exp())
    }
}

/// Rounds every value to the nearest f16 (through `scratch`, in batches).
#[inline(always)]
fn round_to_f16(values: &mut [f32], scratch: &mut [f16]) {
    scratch.convert_from_f32_slice(values);
    scratch.convert_to_f32_slice(values);
}

/// `k·q` summed in exactly the order of ggml's AVX-512 `ggml_vec_dot_f16`
/// (four 16-lane accumulators over 64-element steps, pairwise folds, then
/// `_mm512_reduce_add_ps`'s tree), so the scores are bit-identical to
/// llama.cpp's. This matters here: the f16 value accumulator below rounds
/// every step, so a last-bit difference in one score can flip a rounding
/// and move a logit by 1e-3 sd. Products of two f16 values are exact in f32,
/// so ggml's fused multiply-adds equal a plain multiply then add. Inputs are
/// f16 values held in f32.
fn dot_like_ggml_f16(k: &[f32], q: &[f32]) -> f32 {
    const STEP: usize = 64;
    let n = k.len();
    let full = n - n % STEP;
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..full).step_by(STEP) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let at = i + 16 * j + l;
                *a += k[at] * q[at];
            }
        }
    }
    let fold = |a: [f32; 16], b: [f32; 16]| std::array::from_fn::<f32, 16, _>(|l| a[l] + b[l]);
    let a02 = fold(acc[0], acc[2]);
    let a13 = fold(acc[1], acc[3]);
    let v = fold(a02, a13);
    let t3: [f32; 8] = std::array::from_fn(|l| v[l + 8] + v[l]);
    let t6: [f32; 4] = std::array::from_fn(|l| t3[l + 4] + t3[l]);
    let mut sum = ((t6[0] + t6[2]) + (t6[1] + t6[3])) as f64;
    for at in full..n {
        sum += (k[at] * q[at]) as f64;
    }
    sum as f32
}

/// Queries and keys per tile of ggml's tiled flash attention
/// (`GGML_FA_TILE_Q`, `GGML_FA_TILE_KV`). llama.cpp runs the tiled form when
/// a batch holds at least `TILE_Q` queries
/// (`ggml_compute_forward_flash_attn_ext_tiled` in `ggml-cpu/ops.cpp`).
pub const TILE_Q: usize = 64;
const TILE_KV: usize = 64;

/// One layer's cached keys and values widened to f32 in the layouts the
/// tile products read: keys transposed per tile (`[kv_head][tile][dim][64]`,
/// so 64 positions are contiguous) and values by position
/// (`[kv_head][position][dim]`), both zero past the last position.
///
/// Refilled in place for each call ([`TiledKv::fill`]), one tile of one head
/// per pool task: as a fresh allocation per layer it was 8.6 MB at 2048
/// positions of a 1B model, paged in and zeroed every time, and widened on
/// one thread while the others waited.
#[derive(Default)]
struct TiledKv {
    keys: Vec<f32>,
    values: Vec<f32>,
    n_tiles: usize,
    n_kv: usize,
}

thread_local! {
    static TILED_KV: RefCell<TiledKv> = RefCell::new(TiledKv::default());
}

impl TiledKv {
    /// Positions `0..n_kv` of every key/value head of a cache with `n_ctx`
    /// positions per head.
    fn fill(
        &mut self,
        pool: &ThreadPool,
        keys: &[f16],
        values: &[f16],
        shape: &AttentionShape,
        n_ctx: usize,
        n_kv: usize,
    ) {
        let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
        let n_tiles = n_kv.div_ceil(TILE_KV);
        let padded = n_tiles * TILE_KV;
        // Every element is written below, so the old contents do not matter.
        self.keys.resize(shape.n_head_kv * padded * dk, 0.0);
        self.values.resize(shape.n_head_kv * padded * dv, 0.0);
        (self.n_tiles, self.n_kv) = (n_tiles, n_kv);
        let (kt, vt) = (
            OutPtr(self.keys.as_mut_ptr()),
            OutPtr(self.values.as_mut_ptr()),
        );
        pool.run(shape.n_head_kv * n_tiles, &|task| {
            let (h, tile) = (task / n_tiles, task % n_tiles);
            let first = tile * TILE_KV;
            let used = TILE_KV.min(n_kv - first);
            // SAFETY: task (h, tile) alone writes this tile of head h, in
            // buffers sized above for every (head, tile).
            let (key_tile, value_tile) = unsafe {
                (
                    std::slice::from_raw_parts_mut(
                        kt.at((h * n_tiles + tile) * dk * TILE_KV),
                        dk * TILE_KV,
                    ),
                    std::slice::from_raw_parts_mut(vt.at((h * padded + first) * dv), TILE_KV * dv),
                )
            };
            let mut row = vec![0f32; dk];
            for p in 0..TILE_KV {
                if p < used {
                    keys[(h * n_ctx + first + p) * dk..][..dk].convert_to_f32_slice(&mut row);
                } else {
                    row.fill(0.0);
                }
                for (d, &x) in row.iter().enumerate() {
                    key_tile[d * TILE_KV + p] = x;
                }
            }
            values[(h * n_ctx + first) * dv..][..used * dv]
                .convert_to_f32_slice(&mut value_tile[..used * dv]);
            value_tile[used * dv..].fill(0.0);
        });
    }

    /// Keys of `tile` for `kv_head`: `dim × 64`.
    fn key_tile(&self, kv_head: usize, tile: usize, dk: usize) -> &[f32] {
        &self.keys[(kv_head * self.n_tiles + tile) * dk * TILE_KV..][..dk * TILE_KV]
    }

    /// Values of `tile` for `kv_head`: `64 × dim`.
    fn value_tile(&self, kv_head: usize, tile: usize, dv: usize) -> &[f32] {
        &self.values[(kv_head * self.n_tiles + tile) * TILE_KV * dv..][..TILE_KV * dv]
    }
}

/// Per-thread buffers of one tiled task.
#[derive(Default)]
struct TileBuffers {
    q: Vec<f32>,
    scores: Vec<f32>,
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

thread_local! {
    static TILE_BUFFERS: RefCell<TileBuffers> = RefCell::new(TileBuffers::default());
}

/// ggml's tiled flash attention: for each head and each tile of up to 64
/// queries, walk the key tiles: scores `Q·Kᵀ` (one f32 fused multiply-add
/// chain per score), scale, soft-cap, mask, an online softmax per query with
/// ggml's vector `exp` and per-tile sums (16-lane trees added in f64), and
/// `acc += P·V` in f32. Each query row's arithmetic is independent of which
/// rows share its tile, so the split into tasks does not change results.
fn tiled_flash_attention(
    pool: &ThreadPool,
    kernels: &Kernels,
    cached: &TiledKv,
    shape: &AttentionShape,
    q: &[f32],
    pos0: usize,
    out: &mut [f32],
) {
    let q_dim = shape.n_head * shape.head_dim_k;
    let n_tokens = q.len() / q_dim;
    let q_tiles = n_tokens.div_ceil(TILE_Q);
    let dst = OutPtr(out.as_mut_ptr());
    // The last query tiles first: under a causal mask they see the most
    // keys, and handing them out last left one thread finishing the
    // heaviest tile alone (each tile's arithmetic is its own, so the order
    // changes no result).
    pool.run(shape.n_head * q_tiles, &|task| {
        let (h, t0) = (
            task % shape.n_head,
            (q_tiles - 1 - task / shape.n_head) * TILE_Q,
        );
        let rows = TILE_Q.min(n_tokens - t0);
        TILE_BUFFERS.with_borrow_mut(|buf| {
            let tile = QueryTile {
                head: h,
                first_token: t0,
                rows,
                pos0,
            };
            attend_tile(kernels.simd, cached, shape, q, tile, buf);
            let v_dim = shape.n_head * shape.head_dim_v;
            let dv = shape.head_dim_v;
            for r in 0..rows {
                let inv = match buf.sum[r] {
                    0.0 => 0.0,
                    s => 1.0 / s,
                };
                // SAFETY: task (h, t0) alone writes head h of tokens t0..t0 + rows.
                let out_row = unsafe {
                    std::slice::from_raw_parts_mut(dst.at((t0 + r) * v_dim + h * dv), dv)
                };
                for (o, &a) in out_row.iter_mut().zip(&buf.acc[r * dv..][..dv]) {
                    *o = a * inv;
                }
            }
        })
    });
}

/// Which queries one tiled task owns: head `head` of tokens
/// `first_token..first_token + rows`, the first token at position `pos0`.
#[derive(Clone, Copy)]
struct QueryTile {
    head: usize,
    first_token: usize,
    rows: usize,
    pos0: usize,
}

impl QueryTile {
    /// The cached positions `lo..hi` that row `r` sees.
    fn visible(&self, shape: &AttentionShape, n_kv: usize, r: usize) -> (usize, usize) {
        let pos = self.pos0 + self.first_token + r;
        let hi = if shape.causal {
            (pos + 1).min(n_kv)
        } else {
            n_kv
        };
        let lo = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        (lo, hi)
    }
}

/// Leaves the unnormalized `Σ p·v` of each row in `buf.acc` and its softmax
/// denominator in `buf.sum`. The per-row loops vectorize when compiled for
/// the variant's instructions (same source, same results).
fn attend_tile(
    simd: Simd,
    cached: &TiledKv,
    shape: &AttentionShape,
    q: &[f32],
    tile: QueryTile,
    buf: &mut TileBuffers,
) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the variant was chosen because the CPU has these features.
        Simd::Avx512 => unsafe { attend_tile_avx512(simd, cached, shape, q, tile, buf) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => unsafe { attend_tile_avx2(simd, cached, shape, q, tile, buf) },
        _ => attend_tile_body(simd, cached, shape, q, tile, buf),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend_tile_avx512(
    simd: Simd,
    cached: &TiledKv,
    shape: &AttentionShape,
    q: &[f32],
    tile: QueryTile,
    buf: &mut TileBuffers,
) {
    attend_tile_body(simd, cached, shape, q, tile, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_tile_avx2(
    simd: Simd,
    cached: &TiledKv,
    shape: &AttentionShape,
    q: &[f32],
    tile: QueryTile,
    buf: &mut TileBuffers,
) {
    attend_tile_body(simd, cached, shape, q, tile, buf)
}

#[inline(always)]
fn attend_tile_body(
    simd: Simd,
    cached: &TiledKv,
    shape: &AttentionShape,
    q: &[f32],
    tile: QueryTile,
    buf: &mut TileBuffers,
) {
    let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
    let q_dim = shape.n_head * dk;
    let rows = tile.rows;
    let kv_head = tile.head / (shape.n_head / shape.n_head_kv);
    // The query scaled first where llama.cpp's graph scales it (then the
    // scores are not scaled again).
    let mut scale = if shape.scale_on_q { 1.0 } else { shape.scale };
    buf.q.clear();
    for r in 0..rows {
        let row = &q[(tile.first_token + r) * q_dim + tile.head * dk..][..dk];
        if shape.scale_on_q {
            buf.q.extend(row.iter().map(|&x| x * shape.scale));
        } else {
            buf.q.extend_from_slice(row);
        }
    }
    buf.acc.clear();
    buf.acc.resize(rows * dv, 0.0);
    buf.max.clear();
    buf.max.resize(rows, f32::NEG_INFINITY);
    buf.sum.clear();
    buf.sum.resize(rows, 0.0);
    buf.scores.resize(rows * TILE_KV, 0.0);

    let first_lo = tile.visible(shape, cached.n_kv, 0).0;
    let last_hi = tile.visible(shape, cached.n_kv, rows - 1).1;
    // ggml folds the soft-cap divisor into the scale.
    if let Some(cap) = shape.softcap {
        scale /= cap;
    }
    for kv_tile in first_lo / TILE_KV..last_hi.div_ceil(TILE_KV) {
        let base = kv_tile * TILE_KV;
        let scores = &mut buf.scores[..rows * TILE_KV];
        scores.fill(0.0);
        gemm_acc(
            simd,
            scores,
            &buf.q,
            cached.key_tile(kv_head, kv_tile, dk),
            rows,
            dk,
            TILE_KV,
        );
        for r in 0..rows {
            let row: &mut [f32; TILE_KV] = (&mut scores[r * TILE_KV..][..TILE_KV])
                .try_into()
                .expect("a tile row");
            let (lo, hi) = tile.visible(shape, cached.n_kv, r);
            // The visible part of this tile, as indices into the row.
            let (from, to) = (lo.max(base) - base, hi.clamp(base, base + TILE_KV) - base);
            match shape.softcap {
                Some(cap) => row.iter_mut().for_each(|s| *s = (*s * scale).tanh() * cap),
                None => row.iter_mut().for_each(|s| *s *= scale),
            }
            let tile_max = mask_and_max(simd, row, from, to);
            if tile_max == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let old = buf.max[r];
            let new = old.max(tile_max);
            if new > old {
                let ms = (old - new).exp();
                for a in &mut buf.acc[r * dv..][..dv] {
                    *a *= ms;
                }
                buf.sum[r] *= ms;
            }
            buf.max[r] = new;
            // `ggml_vec_soft_max_f32`, then added to the running f32 sum.
            let tile_sum = exp_sum_16(simd, row, new);
            buf.sum[r] = (buf.sum[r] as f64 + tile_sum) as f32;
        }
        gemm_acc(
            simd,
            &mut buf.acc,
            scores,
            cached.value_tile(kv_head, kv_tile, dv),
            rows,
            TILE_KV,
            dv,
        );
    }
}

/// Sets the scores outside `from..to` to −∞ and returns the largest score
/// left (−∞ when none is; NaN scores are skipped, as `f32::max` skips
/// them). A maximum is exact, so any order gives it: the x86 variants take
/// it per lane of 16 in registers. (LLVM keeps a running maximum scalar,
/// one `vmaxss` and a branch per score, whatever the source's form; that
/// was most of a tile's time outside its two products.)
#[inline(always)]
fn mask_and_max(simd: Simd, row: &mut [f32; TILE_KV], from: usize, to: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if matches!(simd, Simd::Avx2 | Simd::Avx512) {
        // SAFETY: those variants run on CPUs with AVX2.
        return unsafe { mask_and_max_avx2(row, from, to) };
    }
    let _ = simd;
    let mut max = f32::NEG_INFINITY;
    for (j, s) in row.iter_mut().enumerate() {
        if j < from || j >= to {
            *s = f32::NEG_INFINITY;
        }
        max = max.max(*s);
    }
    max
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn mask_and_max_avx2(row: &mut [f32; TILE_KV], from: usize, to: usize) -> f32 {
    use std::arch::x86_64::*;
    let neg = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut lanes = [neg; 2];
    // Positions are below 64: as i32 they compare exactly.
    let (after, before) = (
        _mm256_set1_epi32(from as i32 - 1),
        _mm256_set1_epi32(to.min(TILE_KV) as i32),
    );
    let whole = from == 0 && to >= TILE_KV;
    for (c, chunk) in row.chunks_exact_mut(8).enumerate() {
        let chunk: &mut [f32; 8] = chunk.try_into().expect("8 scores");
        // SAFETY: `chunk` is 8 readable and writable f32; unaligned access.
        let mut v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        if !whole {
            let j = _mm256_add_epi32(
                _mm256_set1_epi32(8 * c as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let visible =
                _mm256_and_si256(_mm256_cmpgt_epi32(j, after), _mm256_cmpgt_epi32(before, j));
            v = _mm256_blendv_ps(neg, v, _mm256_castsi256_ps(visible));
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) };
        }
        // `v > m ? v : m`: a NaN score leaves the maximum as it was.
        lanes[c % 2] = _mm256_max_ps(v, lanes[c % 2]);
    }
    let mut all = [0f32; 16];
    // SAFETY: `all` is 16 writable f32.
    unsafe {
        _mm256_storeu_ps(all.as_mut_ptr(), lanes[0]);
        _mm256_storeu_ps(all.as_mut_ptr().add(8), lanes[1]);
    }
    all.into_iter()
        .fold(f32::NEG_INFINITY, |m, s| if s > m { s } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kv_cache::KvType;

    /// Deterministic values in [-1, 1).
    pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Exact attention in f64 over the cache's (f16-rounded) keys and values.
    fn exact(
        cache: &KvCache,
        shape: &AttentionShape,
        q: &[f32],
        pos0: usize,
        n_kv: usize,
    ) -> Vec<f32> {
        let (keys, values) = match cache.layer(0) {
            (KvStore::F16(k), KvStore::F16(v)) => (k, v),
            _ => unreachable!(),
        };
        let (dk, dv, n_ctx) = (shape.head_dim_k, shape.head_dim_v, cache.n_ctx());
        let n_tokens = q.len() / (shape.n_head * dk);
        let mut out = vec![0.0f32; n_tokens * shape.n_head * dv];
        for t in 0..n_tokens {
            for h in 0..shape.n_head {
                let kvh = h / (shape.n_head / shape.n_head_kv);
                let pos = pos0 + t;
                let hi = if shape.causal { pos + 1 } else { n_kv };
                let lo = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let qh = &q[(t * shape.n_head + h) * dk..][..dk];
                let scores: Vec<f64> = (lo..hi)
                    .map(|p| {
                        let k = &keys[(kvh * n_ctx + p) * dk..][..dk];
                        let s: f64 = k.iter().zip(qh).map(|(&k, &q)| k.to_f64() * q as f64).sum();
                        let s = s * shape.scale as f64;
                        shape
                            .softcap
                            .map_or(s, |c| (s / c as f64).tanh() * c as f64)
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = w.iter().sum();
                for d in 0..dv {
                    let acc: f64 = (lo..hi)
                        .zip(&w)
                        .map(|(p, w)| w * values[(kvh * n_ctx + p) * dv + d].to_f64())
                        .sum();
                    out[(t * shape.n_head + h) * dv + d] = (acc / sum) as f32;
                }
            }
        }
        out
    }

    /// The lane-wise maximum is the running one, masking included (NaN
    /// scores are skipped by both, as `f32::max` does).
    #[test]
    fn mask_and_max_is_the_running_maximum() {
        let scores = values(TILE_KV, 3);
        for (from, to) in [
            (0, 64),
            (0, 1),
            (5, 37),
            (63, 64),
            (10, 10),
            (0, 0),
            (17, 64),
        ] {
            for nan_at in [None, Some(20)] {
                let mut row: [f32; TILE_KV] = scores.clone().try_into().unwrap();
                if let Some(i) = nan_at {
                    row[i] = f32::NAN;
                }
                let mut want_row = row;
                let mut want = f32::NEG_INFINITY;
                for (j, s) in want_row.iter_mut().enumerate() {
                    if j < from || j >= to {
                        *s = f32::NEG_INFINITY;
                    }
                    want = want.max(*s);
                }
                for simd in Simd::supported() {
                    let mut row = row;
                    let got = mask_and_max(simd, &mut row, from, to);
                    assert_eq!(got.to_bits(), want.to_bits(), "{simd:?} {from}..{to}");
                    let bits = |r: &[f32; TILE_KV]| r.map(f32::to_bits);
                    assert_eq!(bits(&row), bits(&want_row), "{simd:?} {from}..{to}");
                }
            }
        }
    }

    #[test]
    fn tiled_flash_attention_matches_exact_attention() {
        let pool = ThreadPool::new(2);
        let cases = [
            // (n_head, n_head_kv, head_dim, window, softcap, pos0, n_tokens)
            (4, 1, 64, None, None, 0, 64),
            (4, 2, 32, Some(40), None, 0, 150),
            (2, 2, 16, None, Some(50.0), 70, 65),
            (8, 2, 80, Some(512), None, 3, 200),
        ];
        for (i, &(n_head, n_head_kv, hd, window, softcap, pos0, n)) in cases.iter().enumerate() {
            let shape = AttentionShape {
                n_head,
                n_head_kv,
                head_dim_k: hd,
                head_dim_v: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                softcap,
                window,
                causal: true,
                scale_on_q: false,
            };
            let n_kv = pos0 + n;
            let mut cache = KvCache::new(KvType::F16, n_kv + 5, 1, n_head_kv, hd, hd);
            let kv_width = n_head_kv * hd;
            let k = values(n_kv * kv_width, 10 + i as u64);
            let v = values(n_kv * kv_width, 20 + i as u64);
            for p in 0..n_kv {
                // Larger keys so the softmax is peaked, as in real models.
                let kp: Vec<f32> = k[p * kv_width..][..kv_width]
                    .iter()
                    .map(|x| x * 6.0)
                    .collect();
                cache.store(0, p, &kp, &v[p * kv_width..][..kv_width]);
            }
            let q = values(n * n_head * hd, 30 + i as u64);
            for simd in Simd::supported() {
                let kernels = Kernels::for_simd(simd).unwrap();
                let mut out = vec![0.0; n * n_head * hd];
                attention(&pool, &kernels, &cache, 0, &shape, &q, pos0, n_kv, &mut out);
                let want = exact(&cache, &shape, &q, pos0, n_kv);
                let worst = out
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst < 2e-5, "case {i} {simd:?}: max |Δ| {worst}");
            }
        }
    }

    #[test]
    fn tiled_results_do_not_depend_on_the_variant_or_thread_count() {
        let shape = AttentionShape {
            n_head: 4,
            n_head_kv: 1,
            head_dim_k: 256,
            head_dim_v: 256,
            scale: 1.0 / 16.0,
            softcap: None,
            window: Some(100),
            causal: true,
            scale_on_q: false,
        };
        let n = 130;
        let mut cache = KvCache::new(KvType::F16, n, 1, 1, 256, 256);
        let (k, v) = (values(n * 256, 1), values(n * 256, 2));
        for p in 0..n {
            cache.store(0, p, &k[p * 256..][..256], &v[p * 256..][..256]);
        }
        let q = values(n * 4 * 256, 3);
        let mut first: Option<Vec<f32>> = None;
        for simd in Simd::supported() {
            for threads in [1, 2, 3] {
                let pool = ThreadPool::new(threads);
                let kernels = Kernels::for_simd(simd).unwrap();
                let mut out = vec![0.0; n * 4 * 256];
                attention(&pool, &kernels, &cache, 0, &shape, &q, 0, n, &mut out);
                match &first {
                    None => first = Some(out),
                    Some(f) => assert!(
                        f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{simd:?} with {threads} threads differs"
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod per_query_tests {
    use super::*;
    use crate::model::kv_cache::KvType;

    /// Also for every head grouping: one query with 4 or 8 heads on 1 or 2
    /// threads runs groups of 1, 2 and 4 heads.
    #[test]
    fn simd_per_query_flash_equals_the_generic_one_bit_for_bit() {
        for &(dk, dv, n_kv, n, softcap, n_head, n_head_kv, threads) in &[
            (64, 64, 40, 1, None, 4, 2, 2),
            (64, 64, 70, 1, None, 8, 2, 1),
            (64, 80, 33, 1, None, 8, 1, 2),
            (256, 256, 300, 1, None, 4, 1, 2),
            (256, 48, 17, 1, None, 4, 4, 1),
            (128, 128, 90, 7, Some(30.0), 4, 2, 2),
        ] {
            let pool = ThreadPool::new(threads);
            let shape = AttentionShape {
                n_head,
                n_head_kv,
                head_dim_k: dk,
                head_dim_v: dv,
                scale: 1.0 / (dk as f32).sqrt(),
                softcap,
                window: Some(64),
                causal: true,
                // Gemma's form (query scaled before its f16 rounding) on one case.
                scale_on_q: dk == 256,
            };
            let mut cache = KvCache::new(KvType::F16, n_kv + 3, 1, n_head_kv, dk, dv);
            let vals = |seed: u32, i: usize| {
                ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 * 4.0 - 2.0
            };
            for p in 0..n_kv {
                let (kw, vw) = (n_head_kv * dk, n_head_kv * dv);
                let k: Vec<f32> = (0..kw).map(|i| vals(1, p * kw + i) * 3.0).collect();
                let v: Vec<f32> = (0..vw).map(|i| vals(2, p * vw + i)).collect();
                cache.store(0, p, &k, &v);
            }
            let q: Vec<f32> = (0..n * n_head * dk).map(|i| vals(3, i)).collect();
            let run = |simd: Simd| {
                let kernels = Kernels::for_simd(simd).unwrap();
                let mut out = vec![0.0; n * n_head * dv];
                attention(
                    &pool,
                    &kernels,
                    &cache,
                    0,
                    &shape,
                    &q,
                    n_kv - n,
                    n_kv,
                    &mut out,
                );
                out
            };
            let reference = run(Simd::Scalar);
            for simd in Simd::supported() {
                let got = run(simd);
                let same = got
                    .iter()
                    .zip(&reference)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{simd:?} dk={dk} dv={dv} n={n} heads={n_head}/{n_head_kv}"
                );
            }
        }
    }
}

#[cfg(test)]
mod batch_tests {
    use super::tests::values;
    use super::*;
    use crate::model::kv_cache::KvType;

    /// Several sequences' queries in one `attention_batch` give, bit for bit,
    /// what each sequence's own `attention` call gives: per-query (1 and 5
    /// tokens) and tiled (70 tokens) segments, both cache types, every variant.
    #[test]
    fn a_batch_of_sequences_equals_each_sequence_alone() {
        let pool = ThreadPool::new(2);
        let shape = AttentionShape {
            n_head: 4,
            n_head_kv: 2,
            head_dim_k: 64,
            head_dim_v: 64,
            scale: 0.125,
            softcap: None,
            window: Some(50),
            causal: true,
            scale_on_q: false,
        };
        // (cached positions before the queries, queries)
        let layout = [(30, 1), (0, 5), (9, 1), (12, 70), (100, 1)];
        let width = 2 * 64;
        for kv_type in [KvType::F16, KvType::F32] {
            let caches: Vec<KvCache> = layout
                .iter()
                .enumerate()
                .map(|(i, &(pos0, n))| {
                    let mut cache = KvCache::new(kv_type, 200, 1, 2, 64, 64);
                    let (k, v) = (
                        values((pos0 + n) * width, i as u64),
                        values((pos0 + n) * width, 9 + i as u64),
                    );
                    for p in 0..pos0 + n {
                        cache.store(0, p, &k[p * width..][..width], &v[p * width..][..width]);
                    }
                    cache
                })
                .collect();
            let n_total: usize = layout.iter().map(|&(_, n)| n).sum();
            let q = values(n_total * 4 * 64, 99);
            for simd in Simd::supported() {
                let kernels = Kernels::for_simd(simd).unwrap();
                let mut first = 0;
                let segments: Vec<AttentionSegment<'_>> = layout
                    .iter()
                    .zip(&caches)
                    .map(|(&(pos0, n), cache)| {
                        let seg = AttentionSegment {
                            cache,
                            first,
                            n_tokens: n,
                            pos0,
                            n_kv: pos0 + n,
                        };
                        first += n;
                        seg
                    })
                    .collect();
                let mut together = vec![f32::NAN; n_total * 4 * 64];
                attention_batch(&pool, &kernels, 0, &shape, &segments, &q, &mut together);
                for seg in &segments {
                    let rows = seg.first * 256..(seg.first + seg.n_tokens) * 256;
                    let mut alone = vec![f32::NAN; rows.len()];
                    let q = &q[rows.clone()];
                    attention(
                        &pool, &kernels, seg.cache, 0, &shape, q, seg.pos0, seg.n_kv, &mut alone,
                    );
                    let same = together[rows]
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{kv_type:?} {simd:?}: segment of {} at {}",
                        seg.n_tokens, seg.pos0
                    );
                }
            }
        }
    }
}
