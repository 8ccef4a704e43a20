//! AVX-512 VNNI kernels for the row-interleaved Q4_0 and Q4_K layouts of
//! [`super::interleaved`] (its module doc has the layouts and the orders,
//! its `group_dot*` the meaning): sixteen rows in the lanes of one
//! register, up to [`GROUP_TOKENS`] tokens per call sharing each decoded
//! block.
//!
//! Safety: the kernel is `#[target_feature]` on avx512f/bw/vnni, avx2, fma,
//! f16c; [`install`] runs only after `dispatch` confirmed avx512f/bw/vl,
//! avx2, fma, f16c and itself checks avx512vnni. Every load reads through a
//! fixed-size array reference taken from a bounds-checked slice.

use super::interleaved::{
    GROUP_ROWS, GroupLayout, InterleavedDots, K_DMIN, K_MINS, K_PREPARED_BLOCK, K_QS, K_RECORD,
    K_SCALES, PREPARED_BLOCK, install_layouts,
};
use std::arch::x86_64::*;

/// Bytes of one Q4_0 block record of a group.
const RECORD: usize = GROUP_ROWS * 18;

pub(super) fn install(dots: &mut InterleavedDots) {
    if is_x86_feature_detected!("avx512vnni") {
        install_layouts::<Q4_0, Q4K<false>, Q4K<true>>(dots);
    }
}

struct Q4_0;
impl GroupLayout for Q4_0 {
    const ELEMENTS: usize = 32;
    const RECORD: usize = RECORD;
    const X_BLOCK: usize = PREPARED_BLOCK;
    const WIDEST: usize = 8;
    unsafe fn run<const T: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
    ) -> [[f32; GROUP_ROWS]; T] {
        // SAFETY: forwarded (see the trait).
        unsafe { q4_0_group::<T>(nb, group, xs) }
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
        // SAFETY: forwarded (see the trait).
        unsafe { q4_k_group::<T, PER_CHUNK>(nb, group, xs) }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load(p: &[u8; 64]) -> __m512i {
    // SAFETY: `p` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

/// The four activation bytes at `p` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn broadcast4(p: &[u8]) -> __m512i {
    _mm512_set1_epi32(i32::from_le_bytes(p[..4].try_into().unwrap()))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn q4_0_group<const T: usize>(nb: usize, group: &[u8], xs: [&[u8]; T]) -> [[f32; GROUP_ROWS]; T] {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, rec) in group.chunks_exact(RECORD).take(nb).enumerate() {
        let d: &[u8; 32] = rec[..32].try_into().unwrap();
        // SAFETY: `d` is 32 readable bytes; the load is unaligned.
        let dw = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) });
        let q: [__m512i; 4] =
            std::array::from_fn(|k| load(rec[32 + 64 * k..96 + 64 * k].try_into().unwrap()));
        let lo = q.map(|q| _mm512_and_si512(q, m4));
        let hi = q.map(|q| _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4));
        for (t, x) in xs.iter().enumerate() {
            let xb = &x[b * PREPARED_BLOCK..(b + 1) * PREPARED_BLOCK];
            // Two independent chains (low and high nibbles), then one sum.
            let mut s0 = _mm512_set1_epi32(i32::from_le_bytes(xb[36..40].try_into().unwrap()));
            let mut s1 = _mm512_setzero_si512();
            for k in 0..4 {
                s0 = _mm512_dpbusd_epi32(s0, lo[k], broadcast4(&xb[4 * k..]));
                s1 = _mm512_dpbusd_epi32(s1, hi[k], broadcast4(&xb[16 + 4 * k..]));
            }
            let isum = _mm512_add_epi32(s0, s1);
            let dx = f32::from_le_bytes(xb[32..36].try_into().unwrap());
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
        }
    }
    acc.map(|a| {
        let mut o = [0f32; GROUP_ROWS];
        // SAFETY: `o` is 16 writable f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
        o
    })
}

#[inline]
#[target_feature(enable = "avx512f")]
fn f16x16(p: &[u8]) -> __m512 {
    let a: &[u8; 32] = p[..32].try_into().unwrap();
    // SAFETY: `a` is 32 readable bytes; the load is unaligned.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(a.as_ptr().cast()) })
}

/// Sixteen bytes at `p` as i32 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn u8x16(p: &[u8]) -> __m512i {
    let a: &[u8; 16] = p[..16].try_into().unwrap();
    // SAFETY: `a` is 16 readable bytes; the load is unaligned.
    _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(a.as_ptr().cast()) })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn q4_k_group<const T: usize, const PER_CHUNK: bool>(
    nb: usize,
    group: &[u8],
    xs: [&[u8]; T],
) -> [[f32; GROUP_ROWS]; T] {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    for (b, rec) in group.chunks_exact(K_RECORD).take(nb).enumerate() {
        let dw = f16x16(&rec[..32]);
        let dminw = f16x16(&rec[K_DMIN..K_DMIN + 32]);
        let xb: [&[u8]; T] = xs.map(|x| &x[b * K_PREPARED_BLOCK..(b + 1) * K_PREPARED_BLOCK]);
        let mut d = [_mm512_setzero_ps(); T];
        let mut dmin = [_mm512_setzero_ps(); T];
        for t in 0..T {
            let dx = _mm512_set1_ps(f32::from_le_bytes(xb[t][256..260].try_into().unwrap()));
            d[t] = _mm512_mul_ps(dw, dx);
            dmin[t] = _mm512_mul_ps(dminw, dx);
        }
        let mut isum = [_mm512_setzero_si512(); T];
        let mut msum = [_mm512_setzero_si512(); T];
        for k in 0..4 {
            let q: [__m512i; 8] = std::array::from_fn(|p| {
                let at = K_QS + 512 * k + 64 * p;
                load(rec[at..at + 64].try_into().unwrap())
            });
            let sc_lo = u8x16(&rec[K_SCALES + 32 * k..]);
            let sc_hi = u8x16(&rec[K_SCALES + 32 * k + 16..]);
            let mins = load(
                rec[K_MINS + 64 * k..K_MINS + 64 * k + 64]
                    .try_into()
                    .unwrap(),
            );
            let l = q.map(|q| _mm512_and_si512(q, m4));
            let h = q.map(|q| _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4));
            for t in 0..T {
                let x = xb[t];
                let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for p in 0..8 {
                    lo = _mm512_dpbusd_epi32(lo, l[p], broadcast4(&x[64 * k + 4 * p..]));
                    hi = _mm512_dpbusd_epi32(hi, h[p], broadcast4(&x[64 * k + 32 + 4 * p..]));
                }
                let chunk =
                    _mm512_add_epi32(_mm512_mullo_epi32(lo, sc_lo), _mm512_mullo_epi32(hi, sc_hi));
                let m = _mm512_dpwssd_epi32(
                    _mm512_setzero_si512(),
                    mins,
                    broadcast4(&x[260 + 4 * k..]),
                );
                if PER_CHUNK {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk), d[t], acc[t]);
                    acc_m[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), dmin[t], acc_m[t]);
                } else {
                    isum[t] = _mm512_add_epi32(isum[t], chunk);
                    msum[t] = _mm512_add_epi32(msum[t], m);
                }
            }
        }
        if !PER_CHUNK {
            for t in 0..T {
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), d[t], acc[t]);
                acc_m[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum[t]), dmin[t], acc_m[t]);
            }
        }
    }
    std::array::from_fn(|t| {
        let mut o = [0f32; GROUP_ROWS];
        // SAFETY: `o` is 16 writable f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_sub_ps(acc[t], acc_m[t])) };
        o
    })
}
