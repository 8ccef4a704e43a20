//! Scaled dot-product attention over the KV cache, one (token, head) pair per
//! task on the worker pool.
//!
//! The arithmetic follows ggml's non-flash path so logits match llama.cpp:
//! scores are `q·k` with the cache's element type (an F16 cache rounds `q` to
//! f16 first, as `ggml_mul_mat` converts activations to the weight type), then
//! scale, optional soft-cap, a softmax whose sum is accumulated in f64, and
//! the probabilities (rounded to f16 for an F16 cache) weight the values.

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
    pub softcap: Option<f32>,
    /// Keys at distance ≥ `window` from the query are masked.
    pub window: Option<usize>,
    pub causal: bool,
}

/// Per-thread buffers, reused across tasks and calls.
#[derive(Default)]
struct Buffers {
    scores: Vec<f32>,
    q16: Vec<f16>,
    row: Vec<f32>,
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
                head_attention(
                    kernels, shape, keys, values, n_ctx, kv_head, q_head, lo, hi, buf, out_head,
                );
            }
        })
    });
}

#[allow(clippy::too_many_arguments)]
fn head_attention(
    kernels: &Kernels,
    shape: &AttentionShape,
    keys: &KvStore,
    values: &KvStore,
    n_ctx: usize,
    kv_head: usize,
    q: &[f32],
    lo: usize,
    hi: usize,
    buf: &mut Buffers,
    out: &mut [f32],
) {
    let (dk, dv) = (shape.head_dim_k, shape.head_dim_v);
    let n = hi - lo;
    buf.scores.clear();
    buf.scores.resize(n, 0.0);
    let key_base = kv_head * n_ctx * dk;
    match keys {
        KvStore::F32(k) => {
            let qb: &[u8] = bytemuck::cast_slice(q);
            for (j, s) in buf.scores.iter_mut().enumerate() {
                let row = &k[key_base + (lo + j) * dk..][..dk];
                *s = (kernels.dots.f32)(dk, bytemuck::cast_slice(row), qb);
            }
        }
        KvStore::F16(k) => {
            buf.q16.resize(dk, f16::ZERO);
            buf.q16.convert_from_f32_slice(q);
            let qb: &[u8] = bytemuck::cast_slice(&buf.q16);
            for (j, s) in buf.scores.iter_mut().enumerate() {
                let row = &k[key_base + (lo + j) * dk..][..dk];
                *s = (kernels.dots.f16)(dk, bytemuck::cast_slice(row), qb);
            }
        }
    }

    // ggml: scale (and soft-cap), subtract the max, exp, sum in f64, multiply
    // by the f32 rounding of 1/sum.
    let mut max = f32::NEG_INFINITY;
    for s in buf.scores.iter_mut() {
        *s *= shape.scale;
        if let Some(cap) = shape.softcap {
            *s = (*s * (1.0 / cap)).tanh() * cap;
        }
        max = max.max(*s);
    }
    let mut sum = 0.0f64;
    for s in buf.scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s as f64;
    }
    let inv = (1.0 / sum) as f32;

    out.fill(0.0);
    let value_base = kv_head * n_ctx * dv;
    match values {
        KvStore::F32(v) => {
            for (j, &s) in buf.scores.iter().enumerate() {
                let p = s * inv;
                let row = &v[value_base + (lo + j) * dv..][..dv];
                for (o, &x) in out.iter_mut().zip(row) {
                    *o += p * x;
                }
            }
        }
        KvStore::F16(v) => {
            buf.row.resize(dv, 0.0);
            for (j, &s) in buf.scores.iter().enumerate() {
                let p = f16::from_f32(s * inv).to_f32();
                v[value_base + (lo + j) * dv..][..dv].convert_to_f32_slice(&mut buf.row);
                for (o, &x) in out.iter_mut().zip(&buf.row) {
                    *o += p * x;
                }
            }
        }
    }
}
