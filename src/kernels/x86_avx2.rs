//! AVX2 + FMA + F16C kernels (x86-64 from Haswell / Zen 1 on).
//!
//! Safety: every function here is `#[target_feature]`; `dispatch` installs them
//! only after `is_x86_feature_detected!` confirmed avx2, fma and f16c, which is
//! the safety argument for each `unsafe` call below.

use super::dispatch::Kernels;
use super::quant_dots::on_bytes;
use half::{bf16, f16};
use std::arch::x86_64::*;

/// Sums the 8 lanes of `v`.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Four accumulators over blocks of 32 elements, loaded by `load(i)` as 8 lanes.
#[target_feature(enable = "avx2,fma")]
fn dot_by_8(
    n: usize,
    load_w: impl Fn(usize) -> __m256,
    load_x: impl Fn(usize) -> __m256,
) -> (f32, usize) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(load_w(i + 8 * k), load_x(i + 8 * k), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load_w(i), load_x(i), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    (hsum(sum), i)
}

pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: features checked by dispatch; loads stay below n.
    unsafe {
        #[target_feature(enable = "avx2,fma")]
        fn inner(w: &[f32], x: &[f32], n: usize) -> f32 {
            let (sum, done) = dot_by_8(
                n,
                // SAFETY: i + 8 <= n.
                |i| unsafe { _mm256_loadu_ps(w.as_ptr().add(i)) },
                |i| unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) },
            );
            sum + super::scalar::dot_f32(&w[done..n], &x[done..n])
        }
        inner(w, x, n)
    }
}

pub(super) fn dot_f16(w: &[f16], x: &[f16]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: features checked by dispatch; loads stay below n.
    unsafe {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn inner(w: &[f16], x: &[f16], n: usize) -> f32 {
            let load = |p: *const f16| {
                // SAFETY: callers pass p + 8 <= end of the slice.
                unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
            };
            let (sum, done) = dot_by_8(n, |i| load(w[i..].as_ptr()), |i| load(x[i..].as_ptr()));
            sum + super::scalar::dot_f16(&w[done..n], &x[done..n])
        }
        inner(w, x, n)
    }
}

pub(super) fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: features checked by dispatch; loads stay below n.
    unsafe {
        #[target_feature(enable = "avx2,fma")]
        fn inner(w: &[bf16], x: &[bf16], n: usize) -> f32 {
            // bf16 is the top half of an f32: widen and shift, exactly.
            let load = |p: *const bf16| {
                // SAFETY: callers pass p + 8 <= end of the slice.
                let v = unsafe { _mm_loadu_si128(p.cast()) };
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
            };
            let (sum, done) = dot_by_8(n, |i| load(w[i..].as_ptr()), |i| load(x[i..].as_ptr()));
            sum + super::scalar::dot_bf16(&w[done..n], &x[done..n])
        }
        inner(w, x, n)
    }
}

/// Installs this module's kernels into the table.
pub(super) fn install(k: &mut Kernels) {
    k.dot_f32 = dot_f32;
    k.dot_f16 = dot_f16;
    k.dot_bf16 = dot_bf16;
    k.dots.f32 = |n, w, x| on_bytes(n, w, x, dot_f32);
    k.dots.f16 = |n, w, x| on_bytes(n, w, x, dot_f16);
    k.dots.bf16 = |n, w, x| on_bytes(n, w, x, dot_bf16);
}
