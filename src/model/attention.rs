//! Scaled dot-product attention over the KV cache, one (token, head) pair per
//! task on the worker pool.
//!
//! The arithmetic follows the path llama.cpp takes for the same cache type,
//! so logits match it: an F32 cache runs ggml's plain softmax attention (what
//! llama.cpp does with `-ctk f32 -ctv f32 -fa off`, the parity reference), an
//! F16 cache runs ggml's CPU flash attention (llama.cpp's default: F16 cache,
//! flash attention on).

use super::kv_cache::{KvCache, KvStore};
use crate::kernels::{Kernels, ThreadPool};
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

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint `head_dim_v` slice of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Attention of `n_tokens` queries at positions `pos0..pos0 + n_tokens`
/// against cached positions `0..n_kv` of `layer`. `q` holds
/// `n_tokens × n_head × head_dim_k` (already roped), `out` receives
/// `n_tokens × n_head × head_dim_v`.
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
    let q_dim = shape.n_head * shape.head_dim_k;
    let v_dim = shape.n_head * shape.head_dim_v;
    let n_tokens = q.len() / q_dim;
    debug_assert_eq!(out.len(), n_tokens * v_dim);
    let tasks = n_tokens * shape.n_head;
    let per_chunk = tasks.div_ceil(pool.threads() * 4).max(1);
    let dst = OutPtr(out.as_mut_ptr());
    let (keys, values) = cache.layer(layer);
    let n_ctx = cache.n_ctx();
    // A batch of queries over an F16 cache would convert every cached row
    // once per query; convert the rows in use once instead (exact, so the
    // flash-attention arithmetic is unchanged).
    let widened = match (keys, values) {
        (KvStore::F16(k), KvStore::F16(v)) if n_tokens > 1 => Some(widen(k, v, shape, n_ctx, n_kv)),
        _ => None,
    };
    // The tiled kernel's scores run down 64 keys at once (one FMA chain per
    // key, as ggml's `simd_gemm` does): keys transposed per 64-slot tile.
    let transposed = match &widened {
        Some((k32, _)) if n_tokens >= FA_TILE => Some(transpose_tiles(k32, shape, n_kv)),
        _ => None,
    };
    pool.run(tasks.div_ceil(per_chunk), &|chunk| {
        BUFFERS.with_borrow_mut(|buf| {
            for task in chunk * per_chunk..((chunk + 1) * per_chunk).min(tasks) {
                let (t, h) = (task / shape.n_head, task % shape.n_head);
                let pos = pos0 + t;
                let hi = if shape.causal { pos + 1 } else { n_kv };
                let lo = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let kv_head = h / (shape.n_head / shape.n_head_kv);
                let q_head = &q[t * q_dim + h * shape.head_dim_k..][..shape.head_dim_k];
                // SAFETY: task (t, h) owns this slice of `out`.
                let out_head = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.at(t * v_dim + h * shape.head_dim_v),
                        shape.head_dim_v,
                    )
                };
                let query = Query {
                    shape,
                    kv_head,
                    q: q_head,
                    lo,
                    hi,
                };
                match (&widened, keys, values) {
                    (Some((keys, values)), _, _) => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx: n_kv,
                        };
                        if let Some(kt) = &transposed {
                            flash_attention_tiled(query, rows, kt, buf, out_head)
                        } else {
                            flash_attention(query, rows, buf, out_head)
                        }
                    }
                    (None, KvStore::F32(keys), KvStore::F32(values)) => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx,
                        };
                        softmax_attention(kernels, query, rows, n_tokens > 1, buf, out_head)
                    }
                    (None, KvStore::F16(keys), KvStore::F16(values)) => {
                        let rows = Rows {
                            keys,
                            values,
                            n_ctx,
                        };
                        flash_attention(query, rows, buf, out_head)
                    }
                    _ => unreachable!("KvCache stores keys and values with one type"),
                }
            }
        })
    });
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

/// `_mm512_reduce_add_ps` as GCC writes it: halves, quarters, then
/// `(t[0] + t[2]) + (t[1] + t[3])`.
#[inline(always)]
fn reduce_add_16(v: &[f32; 16]) -> f32 {
    let t8: [f32; 8] = std::array::from_fn(|l| v[l + 8] + v[l]);
    let t4: [f32; 4] = std::array::from_fn(|l| t8[l + 4] + t8[l]);
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// `ggml_vec_soft_max_f32` (AVX-512): every score becomes
/// `ggml_v_expf(s − max)`; the sum adds, in f64, the `_mm512_reduce_add_ps`
/// of each block of 16 cache slots (slot `lo + j` for score `j`; slots
/// outside the scores are masked, exact zeros).
fn ggml_exp_sum(scores: &mut [f32], lo: usize, max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked above).
        return unsafe { ggml_exp_sum_fma(scores, lo, max) };
    }
    ggml_exp_sum_body(scores, lo, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn ggml_exp_sum_fma(scores: &mut [f32], lo: usize, max: f32) -> f64 {
    ggml_exp_sum_body(scores, lo, max)
}

#[inline(always)]
fn ggml_exp_sum_body(scores: &mut [f32], lo: usize, max: f32) -> f64 {
    for s in scores.iter_mut() {
        *s = super::ops::ggml_v_expf(*s - max);
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
        let s = match shape.softcap {
            Some(cap) => cap * (s * (scale / cap)).tanh(),
            None => s * scale,
        };
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > max {
            ms = (max - s).exp();
            max = s;
            for a in acc.iter_mut() {
                *a *= ms;
            }
            round_to_f16(acc, &mut acc16[..dv]);
        } else {
            vs = (s - max).exp();
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

/// Widened keys (`[head][slot][dim]`, `n_kv` slots) as `[head][tile][dim][64]`,
/// zeros past `n_kv`.
fn transpose_tiles(k32: &[f32], shape: &AttentionShape, n_kv: usize) -> Vec<f32> {
    let dk = shape.head_dim_k;
    let tiles = n_kv.div_ceil(FA_TILE);
    let mut kt = vec![0.0; shape.n_head_kv * tiles * dk * FA_TILE];
    for h in 0..shape.n_head_kv {
        for slot in 0..n_kv {
            let (tile, tk) = (slot / FA_TILE, slot % FA_TILE);
            let key = &k32[(h * n_kv + slot) * dk..][..dk];
            let base = (h * tiles + tile) * dk * FA_TILE + tk;
            for (d, &v) in key.iter().enumerate() {
                kt[base + d * FA_TILE] = v;
            }
        }
    }
    kt
}

/// ggml's flash-attention tile (`GGML_FA_TILE_Q` = `GGML_FA_TILE_KV` = 64):
/// batches of at least this many queries take the tiled kernel.
const FA_TILE: usize = 64;

/// ggml's tiled CPU flash attention (`ggml_compute_forward_flash_attn_ext_tiled`,
/// what llama.cpp runs for 64 or more queries over an F16 cache), per query:
/// over tiles of 64 cache slots, f32 scores `Σ fma(k, q)` in order (q not
/// rounded to f16), the online max per tile, `ggml_vec_soft_max_f32`'s exps
/// and per-16 sums, and an f32 value accumulator (`simd_gemm`: `fma(v, p,
/// acc)` key by key). `rows` holds the keys and values widened to f32.
/// `kt` holds the keys as [`transpose_tiles`] lays them out.
fn flash_attention_tiled(
    query: Query<'_>,
    rows: Rows<'_, f32>,
    kt: &[f32],
    buf: &mut Buffers,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn with_fma(
            query: Query<'_>,
            rows: Rows<'_, f32>,
            kt: &[f32],
            buf: &mut Buffers,
            out: &mut [f32],
        ) {
            flash_attention_tiled_body(query, rows, kt, buf, out)
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { with_fma(query, rows, kt, buf, out) };
    }
    flash_attention_tiled_body(query, rows, kt, buf, out)
}

#[inline(always)]
fn flash_attention_tiled_body(
    query: Query<'_>,
    rows: Rows<'_, f32>,
    kt: &[f32],
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
    let mut scale = shape.scale;
    buf.q32.clear();
    if shape.scale_on_q {
        buf.q32.extend(q.iter().map(|&x| x * shape.scale));
        scale = 1.0;
    } else {
        buf.q32.extend_from_slice(q);
    }
    if let Some(cap) = shape.softcap {
        scale /= cap;
    }
    let q32 = &buf.q32;
    buf.acc.clear();
    buf.acc.resize(dv, 0.0);
    let acc = &mut buf.acc;
    let value_base = kv_head * n_ctx * dv;
    let n_tiles = n_ctx.div_ceil(FA_TILE);
    let _ = keys;
    let mut kq = [0f32; FA_TILE];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    let mut t0 = lo - lo % FA_TILE;
    while t0 < hi {
        let (a, b) = (lo.max(t0), hi.min(t0 + FA_TILE));
        // Scores of the whole tile: per key `Σ fma(k, q)` over the dims in
        // order (64 independent chains, vectorized across keys).
        let tile = &kt[(kv_head * n_tiles + t0 / FA_TILE) * dk * FA_TILE..][..dk * FA_TILE];
        let mut sc = [0f32; FA_TILE];
        for (col, &qd) in tile.chunks_exact(FA_TILE).zip(q32) {
            for (s, &kd) in sc.iter_mut().zip(col) {
                *s = kd.mul_add(qd, *s);
            }
        }
        kq.fill(f32::NEG_INFINITY);
        for slot in a..b {
            let mut s = sc[slot - t0] * scale;
            if let Some(cap) = shape.softcap {
                s = s.tanh() * cap;
            }
            kq[slot - t0] = s;
        }
        let tile_max = kq.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y));
        if tile_max == f32::NEG_INFINITY {
            t0 += FA_TILE;
            continue;
        }
        let m_new = m.max(tile_max);
        if m_new > m {
            let ms = (m - m_new).exp();
            for v in acc.iter_mut() {
                *v *= ms;
            }
            sum *= ms;
        }
        m = m_new;
        let mut tile_sum = 0f64;
        for block in kq.chunks_exact_mut(16) {
            for v in block.iter_mut() {
                *v = super::ops::ggml_v_expf(*v - m);
            }
            tile_sum += f64::from(reduce_add_16(&<[f32; 16]>::try_from(&*block).unwrap()));
        }
        sum = (f64::from(sum) + tile_sum) as f32;
        for slot in a..b {
            let p = kq[slot - t0];
            let v = &values[value_base + slot * dv..][..dv];
            for (o, &x) in acc.iter_mut().zip(v) {
                *o = x.mul_add(p, *o);
            }
        }
        t0 += FA_TILE;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
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
