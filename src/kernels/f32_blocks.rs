//! f32 building blocks of ggml's tiled flash attention, with ggml's exact
//! arithmetic so attention over a batch matches llama.cpp bit for bit:
//!
//! - [`gemm_acc`]: `C += A·B` where every element of `C` is one chain of fused
//!   multiply-adds in `k` order (ggml's `simd_gemm`, `ggml-cpu/simd-gemm.h`);
//! - [`expf_like_ggml`]: ggml's vector `exp` (`ggml_v_expf`, AVX-512 form in
//!   `ggml-cpu/vec.h`), a polynomial that differs from libm in the last bits;
//! - [`expf_like_libm`]: glibc's scalar `expf`, which ggml's per-query flash
//!   attention calls, in a form that vectorizes;
//! - [`reduce_add_16`]: the summation tree of `_mm512_reduce_add_ps`.
//!
//! Each lane of these is an independent chain of IEEE operations, so the
//! plain Rust below *is* the definition, whatever the vector width; the ISA
//! variants are the same source compiled with the instructions enabled (the
//! fused multiply-add must be one instruction, not a libm call, to be fast).

use super::Simd;

/// Columns per register block of [`gemm_acc`] (four 16-lane registers).
const COLS: usize = 64;
/// Rows per register block: 4 × 4 accumulators, as ggml's AVX-512 kernel.
const ROWS: usize = 4;

/// `c[m×n] += a[m×k] · b[k×n]` (row-major), each `c[i][j]` accumulated as
/// `c = fma(a[i][kk], b[kk][j], c)` for `kk = 0, 1, …, k−1`.
pub fn gemm_acc(simd: Simd, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the variant was chosen because the CPU has these features.
        Simd::Avx512 => unsafe { gemm_acc_avx512(c, a, b, m, k, n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (AVX2 implies FMA in `Simd::is_supported`).
        Simd::Avx2 => unsafe { gemm_acc_avx2(c, a, b, m, k, n) },
        _ => gemm_acc_body(c, a, b, m, k, n),
    }
}

/// The 4 × 64 blocks with explicit registers: each loaded row of `b` serves
/// four rows of `a` (the compiler's version reloads it per row); the edges
/// go through the generic blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gemm_acc_avx512(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    use std::arch::x86_64::*;
    let mut i = 0;
    while i + ROWS <= m {
        let mut j = 0;
        while j + COLS <= n {
            // SAFETY: rows i..i + 4 and columns j..j + 64 lie inside c (m×n),
            // a (m×k) and b (k×n), whose lengths `gemm_acc` checked.
            unsafe {
                let cp = c.as_mut_ptr().add(i * n + j);
                let mut acc = [[_mm512_setzero_ps(); 4]; ROWS];
                for (r, lanes) in acc.iter_mut().enumerate() {
                    for (l, v) in lanes.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(cp.add(r * n + 16 * l));
                    }
                }
                let ap = a.as_ptr().add(i * k);
                let mut bp = b.as_ptr().add(j);
                for kk in 0..k {
                    let bv: [__m512; 4] = std::array::from_fn(|l| _mm512_loadu_ps(bp.add(16 * l)));
                    for (r, lanes) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*ap.add(r * k + kk));
                        for (v, &y) in lanes.iter_mut().zip(&bv) {
                            *v = _mm512_fmadd_ps(x, y, *v);
                        }
                    }
                    bp = bp.add(n);
                }
                for (r, lanes) in acc.iter().enumerate() {
                    for (l, &v) in lanes.iter().enumerate() {
                        _mm512_storeu_ps(cp.add(r * n + 16 * l), v);
                    }
                }
            }
            j += COLS;
        }
        while j + 16 <= n {
            block::<ROWS, 16>(c, a, b, i, j, k, n);
            j += 16;
        }
        while j < n {
            block::<ROWS, 1>(c, a, b, i, j, k, n);
            j += 1;
        }
        i += ROWS;
    }
    while i < m {
        block_rows::<1>(c, a, b, i, k, n);
        i += 1;
    }
}

/// Blocks of six rows × 16 columns with explicit registers: twelve
/// accumulators (two per row), enough independent FMA chains to cover the
/// FMA latency on both pipes, with the row of `b` and the broadcast in the
/// last of AVX2's sixteen registers. The generic 4 × 64 blocks need 32
/// registers here and spilled every accumulator on every step (measured
/// on Zen 3: the tiled attention of Gemma's pp512 was 12.6% of the run,
/// mostly stack traffic; 14.2–15.6 → 7.3–7.7 ms a layer with 4 × 16
/// blocks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_acc_avx2(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    const W: usize = 16;
    const R: usize = 6;
    let full_rows = m - m % R;
    // Column strips outside, rows inside: the strip of `b` (k × 16) stays
    // in L1 while every row block passes over it (a whole tile of `b` is
    // 64 KB at Gemma's head size, twice L1).
    let mut j = 0;
    while j + W <= n {
        for i in (0..full_rows).step_by(R) {
            // SAFETY: the block lies inside c, a and b (checked by `gemm_acc`).
            unsafe { block_avx2::<R>(c, a, b, i, j, k, n) };
        }
        // SAFETY: as above.
        unsafe {
            match m - full_rows {
                0 => {}
                1 => block_avx2::<1>(c, a, b, full_rows, j, k, n),
                2 => block_avx2::<2>(c, a, b, full_rows, j, k, n),
                3 => block_avx2::<3>(c, a, b, full_rows, j, k, n),
                4 => block_avx2::<4>(c, a, b, full_rows, j, k, n),
                _ => block_avx2::<5>(c, a, b, full_rows, j, k, n),
            }
        }
        j += W;
    }
    for i in 0..m {
        for j in j..n {
            block::<1, 1>(c, a, b, i, j, k, n);
        }
    }
}

/// Rows `i..i + R` × columns `j..j + 16` of `c += a·b`, each element one
/// FMA chain in `k` order.
///
/// # Safety
/// AVX2 and FMA; the block lies inside `c` (m×n), `a` (m×k) and `b` (k×n).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const R: usize>(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    i: usize,
    j: usize,
    k: usize,
    n: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let cp = c.as_mut_ptr().add(i * n + j);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (r, lanes) in acc.iter_mut().enumerate() {
            for (l, v) in lanes.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(cp.add(r * n + 8 * l));
            }
        }
        let ap = a.as_ptr().add(i * k);
        let mut bp = b.as_ptr().add(j);
        for kk in 0..k {
            let bv: [__m256; 2] = std::array::from_fn(|l| _mm256_loadu_ps(bp.add(8 * l)));
            for (r, lanes) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*ap.add(r * k + kk));
                for (v, &y) in lanes.iter_mut().zip(&bv) {
                    *v = _mm256_fmadd_ps(x, y, *v);
                }
            }
            bp = bp.add(n);
        }
        for (r, lanes) in acc.iter().enumerate() {
            for (l, &v) in lanes.iter().enumerate() {
                _mm256_storeu_ps(cp.add(r * n + 8 * l), v);
            }
        }
    }
}

#[inline(always)]
fn gemm_acc_body(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    let mut i = 0;
    while i + ROWS <= m {
        block_rows::<ROWS>(c, a, b, i, k, n);
        i += ROWS;
    }
    while i < m {
        block_rows::<1>(c, a, b, i, k, n);
        i += 1;
    }
}

/// Rows `i0..i0 + R` of `c`, in column blocks of 64, then 16, then 1.
#[inline(always)]
fn block_rows<const R: usize>(c: &mut [f32], a: &[f32], b: &[f32], i0: usize, k: usize, n: usize) {
    let mut j = 0;
    while j + COLS <= n {
        block::<R, COLS>(c, a, b, i0, j, k, n);
        j += COLS;
    }
    while j + 16 <= n {
        block::<R, 16>(c, a, b, i0, j, k, n);
        j += 16;
    }
    while j < n {
        block::<R, 1>(c, a, b, i0, j, k, n);
        j += 1;
    }
}

/// One `R × W` block of `c` held in accumulators across the whole `k` loop.
#[inline(always)]
fn block<const R: usize, const W: usize>(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    i0: usize,
    j0: usize,
    k: usize,
    n: usize,
) {
    let mut acc = [[0.0f32; W]; R];
    for (r, lanes) in acc.iter_mut().enumerate() {
        lanes.copy_from_slice(&c[(i0 + r) * n + j0..][..W]);
    }
    for kk in 0..k {
        let brow: &[f32; W] = b[kk * n + j0..][..W].try_into().expect("W columns");
        for (r, lanes) in acc.iter_mut().enumerate() {
            let x = a[(i0 + r) * k + kk];
            for (acc, &y) in lanes.iter_mut().zip(brow) {
                *acc = x.mul_add(y, *acc);
            }
        }
    }
    for (r, lanes) in acc.iter().enumerate() {
        c[(i0 + r) * n + j0..][..W].copy_from_slice(lanes);
    }
}

/// ggml's `ggml_v_expf` (AVX-512 form), one lane: `2^n · p(b)` with
/// `n = round(x·log2 e)` and `b = x − n·ln 2` in two parts; beyond
/// `|n| > 192` it returns 0 or ∞. Within a few ulp of `exp(x)`.
#[inline(always)]
pub fn expf_like_ggml(x: f32) -> f32 {
    let (j, n, ni) = exp_parts(x);
    // `_mm512_scalef_ps(j, n)`: j·2ⁿ rounded once. In two steps of at most
    // 2^±96 the first product is exact (j is near 1), so the second is the
    // only rounding, also where the result lands among the subnormals.
    // Branch-free (selects and integer arithmetic), so loops over it
    // vectorize.
    let half = ni / 2;
    let pow2 = |e: i32| f32::from_bits(((e.clamp(-126, 127) + 127) as u32) << 23);
    let res = j * pow2(half) * pow2(ni.wrapping_sub(half));
    let saturated = if n <= 0.0 { 0.0 } else { f32::INFINITY };
    if n.abs() > 192.0 { saturated } else { res }
}

/// `ggml_v_expf`'s polynomial `j ≈ exp(b)` and exponent `n`, with
/// `exp(x) = j·2ⁿ`; `n` also as an integer, exact wherever `|n| ≤ 192` (the
/// only place it is used). It is read from the bits of the rounded sum
/// rather than converted (`n as i32`), which LLVM turns into a scalar
/// convert and two conditional moves per lane: the exp loops did not
/// vectorize.
#[inline(always)]
fn exp_parts(x: f32) -> (f32, f32, i32) {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23: rounds to an integer
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0
    let n = z - r;
    // For |n| < 2²², z lies in [2²³, 2²⁴), where one ulp is 1: its bits
    // less r's are n.
    let ni = (z.to_bits() as i32).wrapping_sub(r.to_bits() as i32);
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0)); // 0x1.ffffecp-1
    (j, n, ni)
}

/// glibc's `expf` (2.27 and later), as its FMA build (`__expf_fma`, what the
/// `expf` of glibc's x86-64 dispatch runs on every CPU with AVX2 and FMA)
/// computes it, for `|x| < 88`: `exp(x) = 2^(k/32) · 2^(r/32)` with
/// `k = round(x·32/ln 2)`, `2^(k/32)` from a 32-entry table and `2^(r/32)` a
/// cubic, all in f64, rounded to f32 once. Elsewhere (overflow, underflow,
/// infinities, NaN) libm itself. ggml's per-query flash attention calls
/// libm's `expf` for every cached position; a loop over this one
/// vectorizes (the libm call does not, and forces every vector register
/// to be saved around it) and gives the same bits, which the tests check
/// against libm. The algorithm is ARM's optimized-routines `expf`, which
/// glibc adopted; the constants are its `__exp2f_data`.
#[inline(always)]
pub fn expf_like_libm(x: f32) -> f32 {
    if outside_libm_formula(x) {
        return x.exp();
    }
    expf_like_libm_finite(x)
}

/// Where glibc's `expf` leaves its formula (`|x| ≥ 88`, infinities, NaN):
/// the top bits of the exponent field, as glibc tests them.
#[inline(always)]
fn outside_libm_formula(x: f32) -> bool {
    ((x.to_bits() >> 20) & 0x7ff) > 0x42a
}

/// [`expf_like_libm`]'s formula alone, branch-free: right for `|x| < 88`.
#[inline(always)]
fn expf_like_libm_finite(x: f32) -> f32 {
    /// `32 / ln 2`.
    const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
    /// `1.5·2^52`: adding it rounds to an integer held in the low bits.
    const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
    /// The cubic in `r` for `2^(r/32)`, highest power first.
    const C: [f64; 3] = [
        f64::from_bits(0x3ebc_6af8_4b91_2394),
        f64::from_bits(0x3f2e_bfce_50fa_c4f3),
        f64::from_bits(0x3f96_2e42_ff0c_52d6),
    ];
    let xd = x as f64;
    let shifted = xd.mul_add(INV_LN2_N, SHIFT);
    let ki = shifted.to_bits();
    let kd = shifted - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    // 2^(k/32): the table's 2^((k mod 32)/32) with k / 32 added to the exponent.
    let s = f64::from_bits(EXP2_TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = C[0].mul_add(r, C[1]);
    let y = z.mul_add(r * r, C[2].mul_add(r, 1.0));
    (y * s) as f32
}

/// `2^(i/32)` in f64, as bits less `i << 47` (so that adding `k << 47` for
/// `k ≡ i mod 32` puts `k / 32` into the exponent): glibc's
/// `__exp2f_data.tab`.
const EXP2_TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `x ← expf(x)` for every element, [`expf_like_libm`]'s bits: the formula
/// over the whole slice (vectorized where `simd` allows), then libm for
/// the rare elements outside its range.
pub fn expf_slice_like_libm(simd: Simd, x: &mut [f32]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the variant was chosen because the CPU has these features.
        Simd::Avx512 => unsafe { expf_slice_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => unsafe { expf_slice_avx2(x) },
        _ => expf_slice_body(x),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn expf_slice_avx512(x: &mut [f32]) {
    expf_slice_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn expf_slice_avx2(x: &mut [f32]) {
    expf_slice_body(x)
}

/// [`expf_slice_like_libm`] compiled with the caller's features, into which
/// it inlines (for kernels that already run with them enabled).
#[inline(always)]
pub fn expf_slice_body(x: &mut [f32]) {
    const CHUNK: usize = 16;
    for chunk in x.chunks_mut(CHUNK) {
        let mut special = false;
        let mut out = [0.0f32; CHUNK];
        for (o, &v) in out.iter_mut().zip(chunk.iter()) {
            special |= outside_libm_formula(v);
            *o = expf_like_libm_finite(v);
        }
        if special {
            for (o, &v) in out.iter_mut().zip(chunk.iter()) {
                *o = expf_like_libm(v);
            }
        }
        chunk.copy_from_slice(&out[..chunk.len()]);
    }
}

/// ggml's `ggml_vec_soft_max_f32` over a row whose length is a multiple of
/// 16: `x ← exp(x − max)` with [`expf_like_ggml`], returning the sum, each
/// group of 16 reduced as `_mm512_reduce_add_ps` does and the groups added
/// in f64.
pub fn exp_sum_16(simd: Simd, x: &mut [f32], max: f32) -> f64 {
    assert!(x.len().is_multiple_of(16));
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the variant was chosen because the CPU has these features.
        Simd::Avx512 => unsafe { exp_sum_16_avx512(x, max) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => unsafe { exp_sum_16_avx2(x, max) },
        _ => exp_sum_16_body(x, max),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_sum_16_avx512(x: &mut [f32], max: f32) -> f64 {
    exp_sum_16_body(x, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sum_16_avx2(x: &mut [f32], max: f32) -> f64 {
    exp_sum_16_body(x, max)
}

#[inline(always)]
fn exp_sum_16_body(x: &mut [f32], max: f32) -> f64 {
    for v in x.iter_mut() {
        *v = expf_like_ggml(*v - max);
    }
    x.chunks_exact(16)
        .map(|g| reduce_add_16(g.try_into().expect("16 lanes")) as f64)
        .fold(0.0, |sum, g| sum + g)
}

/// The sum of 16 lanes in the order of `_mm512_reduce_add_ps` (halves, then
/// quarters, then pairs).
#[inline(always)]
pub fn reduce_add_16(v: &[f32; 16]) -> f32 {
    let t8: [f32; 8] = std::array::from_fn(|l| v[l + 8] + v[l]);
    let t4: [f32; 4] = std::array::from_fn(|l| t8[l + 4] + t8[l]);
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_rng::values;

    /// Every 127th f32 bit pattern from −∞ to +∞ (both signs, the whole
    /// exponent range, subnormal results and the libm fallbacks included),
    /// plus the special values, through the slice form on every variant:
    /// the same bits as libm's `expf`. (Run once with a step of 1: all
    /// 2³² inputs agree on glibc 2.36.)
    #[test]
    fn expf_like_libm_gives_libm_bits() {
        const STEP: u64 = 127;
        let mut inputs: Vec<f32> = (0..1u64 << 32)
            .step_by(STEP as usize)
            .map(|b| f32::from_bits(b as u32))
            .collect();
        inputs.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            88.0,
            -88.0,
        ]);
        inputs.extend([-103.972, -103.97208, -103.27892, 88.72283, 88.72284]);
        for simd in Simd::supported() {
            let mut got = inputs.clone();
            expf_slice_like_libm(simd, &mut got);
            for (&x, &y) in inputs.iter().zip(&got) {
                let want = x.exp();
                assert!(
                    y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()),
                    "{simd:?}: expf({x:e}) = {y:e}, libm {want:e}"
                );
            }
        }
    }

    fn reference_gemm(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
        for i in 0..m {
            for j in 0..n {
                let mut s = c[i * n + j];
                for kk in 0..k {
                    s = a[i * k + kk].mul_add(b[kk * n + j], s);
                }
                c[i * n + j] = s;
            }
        }
    }

    #[test]
    fn gemm_acc_is_one_fma_chain_per_element_on_every_variant() {
        let shapes = [
            (1, 1, 1),
            (4, 256, 64),
            (5, 64, 256),
            (7, 33, 81),
            (64, 64, 96),
            (3, 5, 17),
            (64, 256, 64),
            (11, 64, 256),
        ];
        for (seed, &(m, k, n)) in shapes.iter().enumerate() {
            let seed = seed as u64 * 3;
            let a = values(m * k, seed);
            let b = values(k * n, seed + 1);
            let c0 = values(m * n, seed + 2);
            let mut want = c0.clone();
            reference_gemm(&mut want, &a, &b, m, k, n);
            for simd in Simd::supported() {
                let mut got = c0.clone();
                gemm_acc(simd, &mut got, &a, &b, m, k, n);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{simd:?} m={m} k={k} n={n}");
            }
        }
    }

    #[test]
    fn expf_like_ggml_is_close_to_exp_and_saturates_like_ggml() {
        let mut x = -110.0f32;
        while x < 88.5 {
            let got = expf_like_ggml(x) as f64;
            let want = (x as f64).exp();
            // A few ulp in the normal range; subnormal results to absolute 1e-44.
            let tol = (want * 4e-7).max(3e-45);
            assert!((got - want).abs() <= tol, "x={x} got={got} want={want}");
            x += 0.0137;
        }
        assert_eq!(expf_like_ggml(0.0), 1.0);
        assert_eq!(expf_like_ggml(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf_like_ggml(-200.0), 0.0);
        assert_eq!(expf_like_ggml(200.0), f32::INFINITY);
        assert!(expf_like_ggml(f32::NAN).is_nan());
    }

    /// The exponent read from the bits is the converted one: every 127th
    /// f32 bit pattern (both signs, the whole exponent range, the
    /// saturating ends, NaN) gives the bits of the form with `n as i32`.
    #[test]
    fn expf_like_ggml_takes_the_exponent_from_the_bits_exactly() {
        fn with_conversion(x: f32) -> f32 {
            let (j, n, _) = exp_parts(x);
            let half = n as i32 / 2;
            let pow2 = |e: i32| f32::from_bits(((e.clamp(-126, 127) + 127) as u32) << 23);
            let res = j * pow2(half) * pow2(n as i32 - half);
            let saturated = if n <= 0.0 { 0.0 } else { f32::INFINITY };
            if n.abs() > 192.0 { saturated } else { res }
        }
        for bits in (0..1u64 << 32).step_by(127) {
            let x = f32::from_bits(bits as u32);
            let (got, want) = (expf_like_ggml(x), with_conversion(x));
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "x={x:e}: {got:e} against {want:e}"
            );
        }
    }

    #[test]
    fn expf_like_ggml_scales_exactly_near_the_ends_of_the_range() {
        // The two-step 2ⁿ equals j·2ⁿ computed exactly in f64 and rounded
        // once, as `scalef` does, across the subnormal and overflow ends.
        for i in 0..8000 {
            let x = -134.0 + i as f32 * 0.0279;
            let (j, n, _) = exp_parts(x);
            let want = (j as f64 * 2f64.powi(n as i32)) as f32;
            let want = if n.abs() > 192.0 {
                if n <= 0.0 { 0.0 } else { f32::INFINITY }
            } else {
                want
            };
            assert_eq!(expf_like_ggml(x).to_bits(), want.to_bits(), "x={x}");
        }
    }

    #[test]
    fn exp_sum_16_is_the_same_on_every_variant() {
        let row: Vec<f32> = values(64, 9).iter().map(|v| v * 40.0).collect();
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut want = row.clone();
        let want_sum = exp_sum_16_body(&mut want, max);
        for simd in Simd::supported() {
            let mut got = row.clone();
            let sum = exp_sum_16(simd, &mut got, max);
            assert_eq!(sum.to_bits(), want_sum.to_bits(), "{simd:?}");
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{simd:?}"
            );
        }
    }

    #[test]
    fn reduce_add_16_follows_the_halving_tree() {
        // 1e8 absorbs 1.0 unless the two meet only after 1e8 is cancelled.
        let mut v = [0.0f32; 16];
        v[0] = 1e8;
        v[8] = -1e8;
        v[1] = 1.0;
        assert_eq!(reduce_add_16(&v), 1.0);
        let w: [f32; 16] = std::array::from_fn(|i| i as f32);
        assert_eq!(reduce_add_16(&w), 120.0);
    }
}
