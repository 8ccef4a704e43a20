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

/// tinyBLAS's per-element order for F32 and F16 weights
/// (`llamafile/sgemm.cpp`, `tinyBLAS<16, __m512, __m512, …>`, which
/// llama.cpp's `ggml_compute_forward_mul_mat` runs for two or more tokens
/// when the row length is a multiple of 16): one 16-lane accumulator,
/// `fma` per 16 elements, `_mm512_reduce_add_ps`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
fn dot_by_16_single(
    n: usize,
    load_w: impl Fn(usize) -> __m512,
    load_x: impl Fn(usize) -> __m512,
) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc = _mm512_fmadd_ps(load_w(i), load_x(i), acc);
        i += 16;
    }
    _mm512_reduce_add_ps(acc)
}

/// [`dot_by_16_single`] on F32 rows (`n` a multiple of 16).
fn dot_f32_tinyblas(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    fn inner(w: &[f32], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        dot_by_16_single(
            n,
            // SAFETY: i + 16 <= n.
            |i| unsafe { _mm512_loadu_ps(w.as_ptr().add(i)) },
            |i| unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) },
        )
    }
    // SAFETY: installed only where dispatch confirmed the features.
    on_bytes(n, w, x, |w, x| unsafe { inner(w, x) })
}

/// [`dot_by_16_single`] on F16 rows (`n` a multiple of 16).
fn dot_f16_tinyblas(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    fn inner(w: &[f16], x: &[f16]) -> f32 {
        let n = w.len().min(x.len());
        let load = |p: *const f16| {
            // SAFETY: callers pass p + 16 <= end of the slice.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
        };
        dot_by_16_single(n, |i| load(w[i..].as_ptr()), |i| load(x[i..].as_ptr()))
    }
    // SAFETY: installed only where dispatch confirmed the features.
    on_bytes(n, w, x, |w, x| unsafe { inner(w, x) })
}

/// 32 bf16 values as the `__m512bh` operand of `vdpbf16ps`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
fn ld_bh(s: &[bf16], i: usize) -> __m512bh {
    let a: &[bf16; 32] = s[i..i + 32].try_into().unwrap();
    // SAFETY: 64 readable bytes; same bits reinterpreted.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(a.as_ptr().cast())) }
}

/// `ggml_vec_dot_bf16` with AVX512-BF16 (what llama.cpp runs for one token):
/// two `vdpbf16ps` accumulators over steps of 64 (elements `i..i + 32` and
/// `i + 32..i + 64`), the two `_mm512_reduce_add_ps` added in f64, the
/// leftovers one product at a time in f64. The instruction itself is used:
/// its pairwise, flush-to-zero accumulation is what ggml's sums are made of.
fn dot_bf16_ggml(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    fn inner(w: &[bf16], x: &[bf16]) -> f32 {
        let n = w.len().min(x.len());
        let (mut c1, mut c2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 64 <= n {
            c1 = _mm512_dpbf16_ps(c1, ld_bh(w, i), ld_bh(x, i));
            c2 = _mm512_dpbf16_ps(c2, ld_bh(w, i + 32), ld_bh(x, i + 32));
            i += 64;
        }
        let mut sum = 0f64;
        sum += f64::from(_mm512_reduce_add_ps(c1));
        sum += f64::from(_mm512_reduce_add_ps(c2));
        for (a, b) in w[i..n].iter().zip(&x[i..n]) {
            sum += f64::from(a.to_f32() * b.to_f32());
        }
        sum as f32
    }
    // SAFETY: installed only where the CPU has AVX512-BF16 (see `install`).
    on_bytes(n, w, x, |w, x| unsafe { inner(w, x) })
}

/// tinyBLAS for BF16 (`tinyBLAS<32, __m512, __m512bh, …>`, two or more
/// tokens, rows a multiple of 32): one accumulator, `vdpbf16ps` per 32
/// elements, `_mm512_reduce_add_ps`.
fn dot_bf16_tinyblas(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    fn inner(w: &[bf16], x: &[bf16]) -> f32 {
        let n = w.len().min(x.len());
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc = _mm512_dpbf16_ps(acc, ld_bh(w, i), ld_bh(x, i));
            i += 32;
        }
        _mm512_reduce_add_ps(acc)
    }
    // SAFETY: installed only where the CPU has AVX512-BF16 (see `install`).
    on_bytes(n, w, x, |w, x| unsafe { inner(w, x) })
}

/// Installs this module's kernels into the table.
pub(super) fn install(k: &mut Kernels) {
    k.dot_f32 = dot_f32;
    k.dot_f16 = dot_f16;
    k.dot_bf16 = dot_bf16;
    k.dots.f32 = |n, w, x| on_bytes(n, w, x, dot_f32);
    k.dots.f16 = |n, w, x| on_bytes(n, w, x, dot_f16);
    k.dots.bf16 = |n, w, x| on_bytes(n, w, x, dot_bf16);
    k.batch.f32_tinyblas = Some(dot_f32_tinyblas);
    k.batch.f16_tinyblas = Some(dot_f16_tinyblas);
    // ggml's BF16 kernels on this CPU class use AVX512-BF16's dot product
    // instruction; without it they widen to f32 (the kernel above).
    if is_x86_feature_detected!("avx512bf16") {
        k.dots.bf16 = dot_bf16_ggml;
        k.batch.bf16_tinyblas = Some(dot_bf16_tinyblas);
    }
}
