//! AVX-512 VNNI versions of the 32-element dot products (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, IQ4_NL, MXFP4): two blocks per 512-bit register.
//!
//! `vpdpbusd` multiplies unsigned weight bytes with signed activation bytes
//! and sums each four products straight into `i32`, replacing AVX2's
//! `maddubs` + `madd` (+ sign tricks). Every weight type is put in that
//! shape as an unsigned byte `u` with an offset `c` (`w = u − c`): Q4_0
//! nibbles with 8, Q5_0 with 16, Q8_0 as `w ^ 0x80` with 128, IQ4_NL and
//! MXFP4 through tables shifted up by 128; Q4_1/Q5_1 need none. Then
//! `Σ w·x = Σ u·x − c·Σx`, both exact in `i32`. Per two blocks: one convert
//! and one FMA with the two blocks' `d_w · d_x` spread over their lanes.
//! Results differ from `scalar_legacy` only in the order of the f32 sums.
//!
//! Installed only when the CPU also has AVX512-VNNI (dispatch checks F, BW
//! and VL), and only for the types where it measured faster than AVX2.
//!
//! Safety: every function here is `#[target_feature]`; `install` puts them in
//! the table only after `dispatch` confirmed avx512f/bw/vl, avx2, fma, f16c
//! and `install` itself confirmed avx512vnni, which is the safety argument
//! for each call below. Loads read whole block fields through pointers from
//! `&[u8; 16]` / `&[i8; 32]` references.

use super::quant_dots::QuantDots;
use super::scalar_legacy::blocks;
use super::x86_avx2_legacy::{
    e8m0x4, f16_products4, f16_scales, f16x1, f16x4, hsum, load_x, nibbles, no_mins,
};
use crate::quant::float::e8m0_to_f32_half;
use crate::quant::iq::{KVALUES_IQ4NL, KVALUES_MXFP4};
use crate::quant::{
    BlockIQ4NL, BlockMXFP4, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};
use std::arch::x86_64::*;

/// Installs this module's kernels into the table (the CPU must have VNNI).
pub(super) fn install(dots: &mut QuantDots) {
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    // Q4_1, Q5_1, Q5_0 and Q8_0 keep the AVX2 kernels: those follow ggml's
    // own f32 order (llama.cpp runs `ggml_vec_dot_*` / tinyBLAS_Q0_AVX with
    // 256-bit accumulators for them on every x86 CPU), and equal order is
    // what equal logits need. Q4_0, IQ4_NL and MXFP4 weights are repacked by
    // ggml (`repack.cpp`, rows a multiple of 8) into kernels of yet another
    // order, so these stay the fastest (Q4_0 matrices of 16k rows are read
    // interleaved instead, see `interleaved`).
    dots.q4_0 = dot_q4_0;
    dots.iq4_nl = dot_iq4_nl;
    dots.mxfp4 = dot_mxfp4;
}

/// Every kernel of this module, the ones [`install`] leaves out too: the
/// fast order (`RUSTY_LLM_KERNELS=fast`), and their exactness stays tested.
pub(super) fn install_all(dots: &mut QuantDots) {
    install(dots);
    dots.q4_1 = dot_q4_1;
    dots.q5_0 = dot_q5_0;
    dots.q5_1 = dot_q5_1;
    dots.q8_0 = dot_q8_0;
}

/// One row pair's kernel pieces, per block (`W` weight, `X` activation):
/// unsigned weight bytes `u` with the offset `c` they carry (`w = u − c`),
/// activation bytes, scales and (`_1` types) minimums.
struct Row<U2, U1, X2, X1, S4, S1, M4, M1> {
    /// `c` in `w = u − c`.
    offset: u8,
    /// `u` of two blocks (bytes 0..32 and 32..64, element order).
    u2: U2,
    /// `u` of one block.
    u1: U1,
    /// Activation bytes of two blocks.
    x2: X2,
    /// Activation bytes of one block.
    x1: X1,
    /// `d_w · d_x` of four blocks.
    scales: S4,
    /// `d_w · d_x` of one block.
    scale: S1,
    /// `m_w · s_x` of four blocks (zero for the `_0` types).
    mins: M4,
    /// `m_w · s_x` of one block.
    min: M1,
}

/// Σ over blocks of `scale · Σ(u − c)·x + min`, four blocks per step (as
/// arrays of four, so no index is checked in the loop).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sum_blocks<W, X, U2, U1, X2, X1, S4, S1, M4, M1>(
    w: &[W],
    x: &[X],
    r: Row<U2, U1, X2, X1, S4, S1, M4, M1>,
) -> f32
where
    U2: Fn(&W, &W) -> __m512i,
    U1: Fn(&W) -> __m256i,
    X2: Fn(&X, &X) -> __m512i,
    X1: Fn(&X) -> __m256i,
    S4: Fn(&[W; 4], &[X; 4]) -> __m128,
    S1: Fn(&W, &X) -> f32,
    M4: Fn(&[W; 4], &[X; 4]) -> __m128,
    M1: Fn(&W, &X) -> f32,
{
    let c = _mm512_set1_epi8(r.offset as i8);
    let zero = _mm512_setzero_si512();
    let prod2 = |w0: &W, w1: &W, x0: &X, x1: &X| {
        let x = (r.x2)(x0, x1);
        let p = _mm512_dpbusd_epi32(zero, (r.u2)(w0, w1), x);
        if r.offset == 0 {
            p
        } else {
            _mm512_sub_epi32(p, _mm512_dpbusd_epi32(zero, c, x))
        }
    };
    let lanes01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let lanes23 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut mins = _mm_setzero_ps();
    let (w4, w_tail) = w.as_chunks::<4>();
    let (x4, x_tail) = x.as_chunks::<4>();
    for (a, b) in w4.iter().zip(x4) {
        let s = _mm512_castps128_ps512((r.scales)(a, b));
        let (d01, d23) = (
            _mm512_permutexvar_ps(lanes01, s),
            _mm512_permutexvar_ps(lanes23, s),
        );
        acc[0] = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(prod2(&a[0], &a[1], &b[0], &b[1])),
            d01,
            acc[0],
        );
        acc[1] = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(prod2(&a[2], &a[3], &b[2], &b[3])),
            d23,
            acc[1],
        );
        mins = _mm_add_ps(mins, (r.mins)(a, b));
    }
    let mut tail = _mm256_setzero_ps();
    let mut tail_mins = 0f32;
    for (a, b) in w_tail.iter().zip(x_tail) {
        let xv = (r.x1)(b);
        let mut p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), (r.u1)(a), xv);
        if r.offset != 0 {
            let o = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm512_castsi512_si256(c), xv);
            p = _mm256_sub_epi32(p, o);
        }
        tail = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps((r.scale)(a, b)), tail);
        tail_mins += (r.min)(a, b);
    }
    let sum = _mm512_add_ps(acc[0], acc[1]);
    let sum = _mm256_add_ps(
        _mm512_castps512_ps256(sum),
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sum), 1)),
    );
    let mins = _mm_add_ps(mins, _mm_movehl_ps(mins, mins));
    let mins = _mm_add_ss(mins, _mm_movehdup_ps(mins));
    hsum(_mm256_add_ps(sum, tail)) + (_mm_cvtss_f32(mins) + tail_mins)
}

/// The nibbles of two blocks as bytes, each block as `nibbles` lays it out:
/// `[a low, a high, b low, b high]` by 128-bit lane.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: reads the 16 bytes of `a` and of `b`.
    let ab = unsafe { _mm256_loadu2_m128i(b.as_ptr().cast(), a.as_ptr().cast()) };
    let aabb = _mm512_permutexvar_epi64(
        _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
        _mm512_castsi256_si512(ab),
    );
    let four = 0x0004_0004_0004_0004;
    let shifts = _mm512_setr_epi64(0, 0, four, four, 0, 0, four, four);
    _mm512_and_si512(_mm512_srlv_epi16(aabb, shifts), _mm512_set1_epi8(0x0f))
}

/// Two blocks of 32 bytes side by side.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_x2(a: &[i8; 32], b: &[i8; 32]) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(load_x(a)), load_x(b), 1)
}

/// Adds 16 to the bytes whose bit is set in the fifth-bit words (`qh`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fifth2(q: __m512i, a: [u8; 4], b: [u8; 4]) -> __m512i {
    let k = u64::from(u32::from_le_bytes(a)) | u64::from(u32::from_le_bytes(b)) << 32;
    _mm512_mask_add_epi8(q, k, q, _mm512_set1_epi8(0x10))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fifth1(q: __m256i, a: [u8; 4]) -> __m256i {
    _mm256_mask_add_epi8(q, u32::from_le_bytes(a), q, _mm256_set1_epi8(0x10))
}

/// A 16-entry table shifted up by 128 (`kvalue + 128` as unsigned bytes).
const fn shifted(t: &[i8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        out[k] = (t[k] as i16 + 128) as u8;
        k += 1;
    }
    out
}
const IQ4NL_U: [u8; 16] = shifted(&KVALUES_IQ4NL);
const MXFP4_U: [u8; 16] = shifted(&KVALUES_MXFP4);

/// A 16-byte table in every 128-bit lane, for `shuffle_epi8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn table512(t: &[u8; 16]) -> __m512i {
    // SAFETY: reads the 16 bytes of `t`.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// The minimum term of the `_0` types.
fn no_min1<W, X>(_: &W, _: &X) -> f32 {
    0.0
}

/// Builds and runs the driver for one row pair; `$offset`, `$u2`, `$u1`
/// describe the weights, the scales are `d·d` (and `m·s` when given).
macro_rules! run {
    (@mins) => {
        (no_mins, no_min1)
    };
    (@mins $mins:expr) => {
        $mins
    };
    ($w:ident, $x:ident, $X:ty, $offset:expr, $u2:expr, $u1:expr, $scales:expr $(, mins: $mins:expr)?) => {{
        let (scales, scale) = $scales;
        let (mins, min) = run!(@mins $($mins)?);
        sum_blocks($w, $x, Row {
            offset: $offset,
            u2: $u2,
            u1: $u1,
            x2: |a: &$X, b: &$X| load_x2(&a.qs, &b.qs),
            x1: |a: &$X| load_x(&a.qs),
            scales,
            scale,
            mins,
            min,
        })
    }};
}

pub(super) fn dot_q4_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
        run!(
            w,
            x,
            BlockQ8_0,
            8,
            |a: &BlockQ4_0, b: &BlockQ4_0| nibbles2(&a.qs, &b.qs),
            |a: &BlockQ4_0| nibbles(&a.qs),
            f16_scales!(BlockQ4_0, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q4_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
        run!(
            w,
            x,
            BlockQ8_1,
            0,
            |a: &BlockQ4_1, b: &BlockQ4_1| nibbles2(&a.qs, &b.qs),
            |a: &BlockQ4_1| nibbles(&a.qs),
            f16_scales!(BlockQ4_1, d, BlockQ8_1, d),
            mins: f16_scales!(BlockQ4_1, m, BlockQ8_1, s)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q5_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
        run!(
            w,
            x,
            BlockQ8_0,
            16,
            |a: &BlockQ5_0, b: &BlockQ5_0| fifth2(nibbles2(&a.qs, &b.qs), a.qh, b.qh),
            |a: &BlockQ5_0| fifth1(nibbles(&a.qs), a.qh),
            f16_scales!(BlockQ5_0, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q5_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
        run!(
            w,
            x,
            BlockQ8_1,
            0,
            |a: &BlockQ5_1, b: &BlockQ5_1| fifth2(nibbles2(&a.qs, &b.qs), a.qh, b.qh),
            |a: &BlockQ5_1| fifth1(nibbles(&a.qs), a.qh),
            f16_scales!(BlockQ5_1, d, BlockQ8_1, d),
            mins: f16_scales!(BlockQ5_1, m, BlockQ8_1, s)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
        let flip = _mm512_set1_epi8(-128);
        run!(
            w,
            x,
            BlockQ8_0,
            128,
            |a: &BlockQ8_0, b: &BlockQ8_0| _mm512_xor_si512(load_x2(&a.qs, &b.qs), flip),
            |a: &BlockQ8_0| _mm256_xor_si256(load_x(&a.qs), _mm512_castsi512_si256(flip)),
            f16_scales!(BlockQ8_0, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

pub(super) fn dot_iq4_nl(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockIQ4NL], x: &[BlockQ8_0]) -> f32 {
        let t = table512(&IQ4NL_U);
        run!(
            w,
            x,
            BlockQ8_0,
            128,
            |a: &BlockIQ4NL, b: &BlockIQ4NL| _mm512_shuffle_epi8(t, nibbles2(&a.qs, &b.qs)),
            |a: &BlockIQ4NL| _mm256_shuffle_epi8(_mm512_castsi512_si256(t), nibbles(&a.qs)),
            f16_scales!(BlockIQ4NL, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

pub(super) fn dot_mxfp4(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn inner(w: &[BlockMXFP4], x: &[BlockQ8_0]) -> f32 {
        let t = table512(&MXFP4_U);
        let scales =
            |w: &[BlockMXFP4; 4], x: &[BlockQ8_0; 4]| _mm_mul_ps(f16x4(x.map(|b| b.d)), e8m0x4(w));
        let scale = |w: &BlockMXFP4, x: &BlockQ8_0| f16x1(x.d) * e8m0_to_f32_half(w.e);
        run!(
            w,
            x,
            BlockQ8_0,
            128,
            |a: &BlockMXFP4, b: &BlockMXFP4| _mm512_shuffle_epi8(t, nibbles2(&a.qs, &b.qs)),
            |a: &BlockMXFP4| _mm256_shuffle_epi8(_mm512_castsi512_si256(t), nibbles(&a.qs)),
            (scales, scale)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has every feature `inner` enables.
    unsafe { inner(w, x) }
}

#[cfg(test)]
mod tests {
    use super::super::dispatch::Simd;
    use super::super::scalar_legacy::test_support::check_against;
    use super::*;

    #[test]
    fn matches_scalar_integer_formulation() {
        if !Simd::Avx512.is_supported() || !is_x86_feature_detected!("avx512vnni") {
            return;
        }
        let mut scalar = QuantDots::reference();
        super::super::scalar_legacy::install(&mut scalar);
        let mut ours = scalar;
        install_all(&mut ours);
        check_against(&scalar, &ours, "avx512", false);
    }
}
