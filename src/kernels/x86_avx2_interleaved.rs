//! AVX2 kernels for the row-interleaved Q4_0 and Q4_K layouts of
//! [`super::interleaved`] (its module doc has the layouts and the orders,
//! its `group_dot*` the meaning), for CPUs without AVX-512 VNNI: llama.cpp
//! repacks these types on AVX2 too, and reads them eight rows at a time.
//!
//! A group's sixteen rows are two 256-bit halves (rows 0–7 and 8–15 of each
//! 64-byte part); each half takes its own pass over the group's records, so
//! the accumulators of up to four tokens stay in registers (the group's
//! records, 18–80 KB at our shapes, are still in L1/L2 for the second pass).
//! Without `vpdpbusd`, four products per 32-bit lane are `vpmaddubsw`
//! (unsigned nibble × signed activation, pairs into i16) and a `vpmaddwd`
//! that sums the pairs into i32 — multiplying by the Q4_K sub-block scale
//! at the same time. The i16 sums cannot saturate: a lane adds at most 16
//! products of a nibble (≤ 15) and an activation (|x| ≤ 128), ≤ 30 720.
//! The integer sums are exact, so every result is bit for bit the
//! reference's.
//!
//! Safety: the kernels are `#[target_feature]` on avx2, fma, f16c;
//! `dispatch` installs them only after confirming those features. Every
//! load reads through a fixed-size array reference taken from a
//! bounds-checked slice.

use super::interleaved::{
    GROUP_ROWS, GroupKernel, GroupLayout, InterleavedDots, K_DMIN, K_MINS, K_PREPARED_BLOCK, K_QS,
    K_RECORD, K_SCALES, PREPARED_BLOCK, group_dots, prepare_q4_0, prepare_q4_k,
};
use std::arch::x86_64::*;

/// Bytes of one Q4_0 block record of a group.
const RECORD: usize = GROUP_ROWS * 18;

/// Rows per half of a group (one per 32-bit lane of a 256-bit register).
const HALF: usize = GROUP_ROWS / 2;

pub(super) fn install(dots: &mut InterleavedDots) {
    dots.q4_0 = Some(GroupKernel {
        dot: group_dots::<Q4_0>,
        grouped: None,
        prepare: prepare_q4_0,
    });
    // ggml's gemv order for single tokens, its gemm order for groups of four.
    dots.q4_k = Some(GroupKernel {
        dot: group_dots::<Q4K<false>>,
        grouped: Some(group_dots::<Q4K<true>>),
        prepare: prepare_q4_k,
    });
}

struct Q4_0;
impl GroupLayout for Q4_0 {
    const ELEMENTS: usize = 32;
    const RECORD: usize = RECORD;
    const X_BLOCK: usize = PREPARED_BLOCK;
    const WIDEST: usize = 4;
    unsafe fn run<const T: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
    ) -> [[f32; GROUP_ROWS]; T] {
        let mut out = [[0f32; GROUP_ROWS]; T];
        for half in 0..2 {
            // SAFETY: forwarded (see the trait).
            let o = unsafe { q4_0_half::<T>(nb, group, xs, half) };
            for (out, o) in out.iter_mut().zip(o) {
                out[HALF * half..HALF * (half + 1)].copy_from_slice(&o);
            }
        }
        out
    }
}

struct Q4K<const PER_CHUNK: bool>;
impl<const PER_CHUNK: bool> GroupLayout for Q4K<PER_CHUNK> {
    const ELEMENTS: usize = 256;
    const RECORD: usize = K_RECORD;
    const X_BLOCK: usize = K_PREPARED_BLOCK;
    const WIDEST: usize = 4;
    unsafe fn run<const T: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
    ) -> [[f32; GROUP_ROWS]; T] {
        let mut out = [[0f32; GROUP_ROWS]; T];
        for half in 0..2 {
            // SAFETY: forwarded (see the trait).
            let o = unsafe { q4_k_half::<T, PER_CHUNK>(nb, group, xs, half) };
            for (out, o) in out.iter_mut().zip(o) {
                out[HALF * half..HALF * (half + 1)].copy_from_slice(&o);
            }
        }
        out
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load(p: &[u8]) -> __m256i {
    let a: &[u8; 32] = p[..32].try_into().unwrap();
    // SAFETY: `a` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// Eight f16 at `p` as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16x8(p: &[u8]) -> __m256 {
    let a: &[u8; 16] = p[..16].try_into().unwrap();
    // SAFETY: `a` is 16 readable bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(a.as_ptr().cast()) })
}

/// The four bytes at `p` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
fn broadcast4(p: &[u8]) -> __m256i {
    _mm256_set1_epi32(i32::from_le_bytes(p[..4].try_into().unwrap()))
}

/// Eight scale bytes at `p`, each as a pair of equal i16 in its lane (the
/// second operand of a `vpmaddwd` that scales both halves of a pair sum).
#[inline]
#[target_feature(enable = "avx2")]
fn scale_pairs(p: &[u8]) -> __m256i {
    let a: &[u8; 8] = p[..8].try_into().unwrap();
    // SAFETY: `a` is 8 readable bytes; the load is unaligned.
    let v = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(a.as_ptr().cast()) });
    _mm256_or_si256(v, _mm256_slli_epi32::<16>(v))
}

#[inline]
#[target_feature(enable = "avx2")]
fn store(v: __m256) -> [f32; HALF] {
    let mut o = [0f32; HALF];
    // SAFETY: `o` is 8 writable f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
    o
}

/// Rows `8 half..8 half + 8` of a Q4_0 group by `T` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_half<const T: usize>(
    nb: usize,
    group: &[u8],
    xs: [&[u8]; T],
    half: usize,
) -> [[f32; HALF]; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, rec) in group.chunks_exact(RECORD).take(nb).enumerate() {
        let dw = f16x8(&rec[2 * HALF * half..]);
        let xb: [&[u8]; T] = xs.map(|x| &x[b * PREPARED_BLOCK..(b + 1) * PREPARED_BLOCK]);
        let mut sum = [_mm256_setzero_si256(); T];
        for k in 0..4 {
            let q = load(&rec[32 + 64 * k + 32 * half..]);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            for t in 0..T {
                let l = _mm256_maddubs_epi16(lo, broadcast4(&xb[t][4 * k..]));
                let h = _mm256_maddubs_epi16(hi, broadcast4(&xb[t][16 + 4 * k..]));
                sum[t] = _mm256_add_epi16(sum[t], _mm256_add_epi16(l, h));
            }
        }
        for t in 0..T {
            let seed = i32::from_le_bytes(xb[t][36..40].try_into().unwrap());
            let isum = _mm256_add_epi32(_mm256_madd_epi16(sum[t], ones), _mm256_set1_epi32(seed));
            let dx = f32::from_le_bytes(xb[t][32..36].try_into().unwrap());
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
        }
    }
    acc.map(|a| store(a))
}

/// Rows `8 half..8 half + 8` of a Q4_K group by `T` tokens, in ggml's gemv
/// order or (`PER_CHUNK`) its gemm order.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_half<const T: usize, const PER_CHUNK: bool>(
    nb: usize,
    group: &[u8],
    xs: [&[u8]; T],
    half: usize,
) -> [[f32; HALF]; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let rows = 2 * HALF * half;
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_m = [_mm256_setzero_ps(); T];
    for (b, rec) in group.chunks_exact(K_RECORD).take(nb).enumerate() {
        let dw = f16x8(&rec[rows..]);
        let dminw = f16x8(&rec[K_DMIN + rows..]);
        let xb: [&[u8]; T] = xs.map(|x| &x[b * K_PREPARED_BLOCK..(b + 1) * K_PREPARED_BLOCK]);
        let dx = xb.map(|x| _mm256_set1_ps(f32::from_le_bytes(x[256..260].try_into().unwrap())));
        let mut isum = [_mm256_setzero_si256(); T];
        let mut msum = [_mm256_setzero_si256(); T];
        for k in 0..4 {
            // Sub-block 2k in the low nibbles, 2k + 1 in the high ones.
            let mut lo = [_mm256_setzero_si256(); T];
            let mut hi = [_mm256_setzero_si256(); T];
            for p in 0..8 {
                let q = load(&rec[K_QS + 512 * k + 64 * p + 32 * half..]);
                let l = _mm256_and_si256(q, m4);
                let h = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                for t in 0..T {
                    let x = xb[t];
                    let xl = broadcast4(&x[64 * k + 4 * p..]);
                    let xh = broadcast4(&x[64 * k + 32 + 4 * p..]);
                    lo[t] = _mm256_add_epi16(lo[t], _mm256_maddubs_epi16(l, xl));
                    hi[t] = _mm256_add_epi16(hi[t], _mm256_maddubs_epi16(h, xh));
                }
            }
            let sc_lo = scale_pairs(&rec[K_SCALES + 16 * (2 * k) + HALF * half..]);
            let sc_hi = scale_pairs(&rec[K_SCALES + 16 * (2 * k + 1) + HALF * half..]);
            let mins = load(&rec[K_MINS + 64 * k + 32 * half..]);
            for t in 0..T {
                let chunk = _mm256_add_epi32(
                    _mm256_madd_epi16(lo[t], sc_lo),
                    _mm256_madd_epi16(hi[t], sc_hi),
                );
                let m = _mm256_madd_epi16(mins, broadcast4(&xb[t][260 + 4 * k..]));
                if PER_CHUNK {
                    let d = _mm256_mul_ps(dw, dx[t]);
                    let dmin = _mm256_mul_ps(dminw, dx[t]);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk), d, acc[t]);
                    acc_m[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), dmin, acc_m[t]);
                } else {
                    isum[t] = _mm256_add_epi32(isum[t], chunk);
                    msum[t] = _mm256_add_epi32(msum[t], m);
                }
            }
        }
        if !PER_CHUNK {
            for t in 0..T {
                let d = _mm256_mul_ps(dw, dx[t]);
                let dmin = _mm256_mul_ps(dminw, dx[t]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), d, acc[t]);
                acc_m[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum[t]), dmin, acc_m[t]);
            }
        }
    }
    std::array::from_fn(|t| store(_mm256_sub_ps(acc[t], acc_m[t])))
}
