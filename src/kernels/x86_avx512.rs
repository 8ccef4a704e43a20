//! AVX-512 (F, BW, VL) kernels: 16 f32 lanes.
//!
//! Safety: every function here is `#[target_feature]`; `dispatch` installs them
//! only after `is_x86_feature_detected!` confirmed avx512f/bw/vl (and f16c,
//! fma), which is the safety argument for each `unsafe` call below.

use super::dispatch::Kernels;
use super::quant_dots::on_bytes;
use half::{bf16, f16};
use std::arch::x86_64::*;

/// Four accumulators over blocks of 64 elements, loaded 16 lanes at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn dot_by_16(
    n: usize,
    load_w: impl Fn(usize) -> __m512,
    load_x: impl Fn(usize) -> __m512,
) -> (f32, usize) {
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(load_w(i + 16 * k), load_x(i + 16 * k), *a);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(load_w(i), load_x(i), acc[0]);
        i += 16;
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    (_mm512_reduce_add_ps(sum), i)
}

/// ggml's `ggml_vec_dot_f32` / `ggml_vec_dot_f16` main loop (AVX-512,
/// `GGML_F32_STEP` 64): four 16-lane accumulators over steps of 64 elements,
/// folded as `GGML_F32x16_REDUCE` does ((0 + 2) + (1 + 3)), then
/// `_mm512_reduce_add_ps`. Returns the sum and the elements done (`n`
/// rounded down to 64); the callers add the rest as ggml does.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
fn dot_by_64(
    n: usize,
    load_w: impl Fn(usize) -> __m512,
    load_x: impl Fn(usize) -> __m512,
) -> (f32, usize) {
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(load_w(i + 16 * k), load_x(i + 16 * k), *a);
        }
        i += 64;
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
    (_mm512_reduce_add_ps(sum), i)
}

/// `ggml_vec_dot_f32` in ggml's order: [`dot_by_64`], then the leftovers one
/// by one into the f32 sum (`sumf += x[i]*y[i]`, contracted to an FMA).
pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: features checked by dispatch; loads stay below n.
    unsafe {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
        fn inner(w: &[f32], x: &[f32], n: usize) -> f32 {
            let (mut sum, done) = dot_by_64(
                n,
                // SAFETY: i + 16 <= n.
                |i| unsafe { _mm512_loadu_ps(w.as_ptr().add(i)) },
                |i| unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) },
            );
            for (a, b) in w[done..n].iter().zip(&x[done..n]) {
                sum = a.mul_add(*b, sum);
            }
            sum
        }
        inner(w, x, n)
    }
}

pub(super) fn dot_f16(w: &[f16], x: &[f16]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: features checked by dispatch; loads stay below n.
    unsafe {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
        fn inner(w: &[f16], x: &[f16], n: usize) -> f32 {
            let load = |p: *const f16| {
                // SAFETY: callers pass p + 16 <= end of the slice.
                unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
            };
            // ggml_vec_dot_f16: the sum is a double, leftovers added one
            // product at a time.
            let (sum, done) = dot_by_64(n, |i| load(w[i..].as_ptr()), |i| load(x[i..].as_ptr()));
            let mut sum = f64::from(sum);
            for (a, b) in w[done..n].iter().zip(&x[done..n]) {
                sum += f64::from(a.to_f32() * b.to_f32());
            }
            sum as f32
        }
        inner(w, x, n)
    }
}

pub(super) fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: features checked by dispatch; loads stay below n.
    unsafe {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        fn inner(w: &[bf16], x: &[bf16], n: usize) -> f32 {
            // bf16 is the top half of an f32: widen and shift, exactly.
            let load = |p: *const bf16| {
                // SAFETY: callers pass p + 16 <= end of the slice.
                let v = unsafe { _mm256_loadu_si256(p.cast()) };
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16))
            };
            let (sum, done) = dot_by_16(n, |i| load(w[i..].as_ptr()), |i| load(x[i..].as_ptr()));
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
