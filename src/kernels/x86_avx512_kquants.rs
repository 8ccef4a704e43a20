//! AVX-512 (F, BW, VL + VNNI) dot products of the K-quants with Q8_K
//! activations: the AVX2 kernels' arithmetic on 64-byte registers.
//!
//! Each 512-bit register holds 64 weights made of two or four whole
//! sub-blocks; `_mm512_maddubs_epi16` multiplies the unsigned quants by the
//! signed activations into i16 pair sums, and VNNI's `_mm512_dpwssd_epi32`
//! applies the per-lane i16 sub-block scales and accumulates in i32 in one
//! instruction. Where a register's halves come from non-adjacent weights
//! (Q4_K, Q5_K keep weights 0..32 and 32..64 of a chunk in one byte's two
//! nibbles) the activations are loaded in matching 256-bit halves instead of
//! shuffling the weights. Same integers as [`super::scalar_kquants`]; only the
//! f32 sums across blocks are ordered differently.
//!
//! Types without a kernel here keep their AVX2 version (installed first).
//!
//! Safety: every kernel is `#[target_feature(enable = "avx512f,avx512bw,
//! avx512vl,avx512vnni,avx2,fma,f16c")]`; `dispatch` calls [`install`] only
//! after confirming avx512f/bw/vl, avx2, fma and f16c, and `install` itself
//! checks avx512vnni before installing anything: that is the safety argument
//! for each call into them. Loads read fixed-size ranges of slices, bounds
//! checked.

use super::quant_dots::QuantDots;
use super::scalar_kquants::{blocks, unpack_k4};
use super::x86_avx2_kquants::{f16, hsum128, ld, ld_bsums, ld128};
use crate::quant::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use std::arch::x86_64::*;

/// Installs this module's kernels into the table (only where the CPU has
/// VNNI), for the fast order only (`RUSTY_LLM_KERNELS=fast`): llama.cpp
/// runs the K-quants through ggml's AVX2 `ggml_vec_dot_*_q8_K` (or its
/// repacked / tiled matmuls, see `x86_avx2_kquants`) on this CPU class, and
/// matching its f32 order is what makes our logits equal to its own; these
/// 512-bit kernels sum in another order.
pub(super) fn install(dots: &mut QuantDots) {
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    dots.q4_k = dot_q4_k;
    dots.q5_k = dot_q5_k;
    dots.q6_k = dot_q6_k;
}

/// 64 bytes at `s[off..off + 64]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn ld512<T: bytemuck::Pod>(s: &[T], off: usize) -> __m512i {
    let b: &[u8] = bytemuck::cast_slice(s);
    let a: &[u8; 64] = b[off..off + 64].try_into().unwrap();
    // SAFETY: `a` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
}

/// 32 bytes at `s[lo..]` in the low half, 32 at `s[hi..]` in the high half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn ld_halves<T: bytemuck::Pod>(s: &[T], lo: usize, hi: usize) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(ld(s, lo)), ld(s, hi), 1)
}

/// i16 lanes: `a` in the low 256 bits, `b` in the high 256 bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn halves16(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_set1_epi16(a)),
        _mm256_set1_epi16(b),
        1,
    )
}

/// A pshufb pattern (per 128-bit lane) that turns eight unsigned scale bytes,
/// broadcast to every lane, into i16 lanes: scale `a` in the low 256 bits,
/// scale `b` in the high 256 bits (0x80 zeroes the high byte).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn pick_u8_pair(a: i32, b: i32) -> __m512i {
    halves16((0x8000u32 as i32 | a) as i16, (0x8000u32 as i32 | b) as i16)
}

/// `Σ m · bsums` of a Q4_K/Q5_K block (4 i32 lanes) from its unpacked
/// scale bytes (mins in bytes 8..16).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn mins_k4(u: &[u8; 16], y: &BlockQ8K) -> __m128i {
    let mins = _mm_cvtepu8_epi16(_mm_srli_si128(ld128(u, 0), 8));
    let bs = ld_bsums(y);
    let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    _mm_madd_epi16(mins, pairs)
}

/// `ggml_vec_dot_q4_K_q8_K`.
pub(super) fn dot_q4_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { q45_k::<false, _>(w, x, |b| (b.d, b.dmin, &b.scales, &b.qs, &[])) }
}

/// `ggml_vec_dot_q5_K_q8_K`.
pub(super) fn dot_q5_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5K>(n, w, x);
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { q45_k::<true, _>(w, x, |b| (b.d, b.dmin, &b.scales, &b.qs, &b.qh)) }
}

type Q45Fields<'a> = (
    crate::quant::float::F16Le,
    crate::quant::float::F16Le,
    &'a [u8; 12],
    &'a [u8; 128],
    &'a [u8],
);

/// Q4_K, and Q5_K when `FIFTH`: per 64-byte load of quants (two 64-weight
/// chunks), the low nibbles are weights [0..32 | 64..96] of the pair and the
/// high nibbles [32..64 | 96..128]; activations are loaded to match.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q45_k<'a, const FIFTH: bool, B>(
    w: &'a [B],
    x: &[BlockQ8K],
    fields: impl Fn(&'a B) -> Q45Fields<'a>,
) -> f32 {
    let m4 = _mm512_set1_epi8(0x0f);
    let m16 = _mm512_set1_epi8(0x10);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let (d, dmin, scales, qs, qh) = fields(b);
        // [d·dx, dmin·dx] from one conversion of both halves.
        let halves = u32::from_le_bytes([d.0[0], d.0[1], dmin.0[0], dmin.0[1]]);
        let dd = _mm_mul_ps(
            _mm_cvtph_ps(_mm_cvtsi32_si128(halves as i32)),
            _mm_set1_ps(y.d.to_f32()),
        );
        let u = unpack_k4(scales);
        let summs = _mm_cvtepi32_ps(mins_k4(&u, y));
        acc_m = _mm_fmadd_ps(_mm_permute_ps(dd, 0b01_01_01_01), summs, acc_m);
        let sc = _mm512_set1_epi64(i64::from_le_bytes(u[..8].try_into().unwrap()));
        let hbits = if FIFTH {
            _mm512_broadcast_i64x4(ld(qh, 0))
        } else {
            m4
        };

        let mut sumi = _mm512_setzero_si512();
        for p in 0..2 {
            let q4 = ld512(qs, 64 * p);
            let mut lo = _mm512_and_si512(q4, m4);
            let mut hi = _mm512_and_si512(_mm512_srli_epi16(q4, 4), m4);
            if FIFTH {
                // Chunk c's fifth bits are qh bits 2c (low nibbles) and
                // 2c + 1 (high): move each to bit 4, per 256-bit half.
                let (hl, hh) = if p == 0 {
                    (
                        _mm512_sllv_epi16(hbits, halves16(4, 2)),
                        _mm512_sllv_epi16(hbits, halves16(3, 1)),
                    )
                } else {
                    (
                        _mm512_srlv_epi16(hbits, halves16(0, 2)),
                        _mm512_srlv_epi16(hbits, halves16(1, 3)),
                    )
                };
                lo = _mm512_or_si512(lo, _mm512_and_si512(hl, m16));
                hi = _mm512_or_si512(hi, _mm512_and_si512(hh, m16));
            }
            let c = 128 * p;
            let pl = _mm512_maddubs_epi16(lo, ld_halves(&y.qs, c, c + 64));
            let ph = _mm512_maddubs_epi16(hi, ld_halves(&y.qs, c + 32, c + 96));
            let s = 4 * p as i32;
            let sl = _mm512_shuffle_epi8(sc, pick_u8_pair(s, s + 2));
            let sh = _mm512_shuffle_epi8(sc, pick_u8_pair(s + 1, s + 3));
            sumi = _mm512_dpwssd_epi32(sumi, pl, sl);
            sumi = _mm512_dpwssd_epi32(sumi, ph, sh);
        }
        acc = _mm512_fmadd_ps(_mm512_broadcastss_ps(dd), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) - hsum128(acc_m)
}

/// `ggml_vec_dot_q6_K_q8_K`: unsigned quants (0..64), the −32 offset applied
/// through the block sums. A 64-byte load of `ql` gives, in its low nibbles,
/// 64 consecutive weights, and in its high nibbles the next 64.
pub(super) fn dot_q6_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ6K>(n, w, x);
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { q6_k(w, x) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    // Per 256-bit half: the low half's weights take qh bits 0-1 (low
    // nibbles) or 4-5 (high), the high half's bits 2-3 or 6-7.
    let shl_lo = halves16(4, 2);
    let shr_hi = halves16(0, 2);
    let mut acc = _mm512_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let d = y.d.to_f32() * f16(b.d);
        let scales = ld128(&b.scales, 0);
        // −32 · Σ sc · bsum, in the low 8 lanes.
        let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), ld_bsums(y));
        let corr = _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5));
        let mut sumi = _mm512_sub_epi32(_mm512_setzero_si512(), corr);
        let sc = _mm512_broadcast_i32x4(scales);
        for j in 0..2 {
            let ql = ld512(&b.ql, 64 * j);
            let qh = _mm512_broadcast_i64x4(ld(&b.qh, 32 * j));
            let hl = _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), m30);
            let hh = _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), m30);
            let lo = _mm512_or_si512(_mm512_and_si512(ql, m4), hl);
            let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hh);
            for (h, q) in [lo, hi].into_iter().enumerate() {
                let m = 2 * j + h;
                let p = _mm512_maddubs_epi16(q, ld512(&y.qs, 64 * m));
                // 128-bit lane k: sub-block 4m + k's signed scale in every
                // i16 (the byte twice, then an arithmetic shift).
                let s = (4 * m) as i64;
                let pat = _mm512_set_epi64(
                    (s + 3) * 0x0101_0101_0101_0101,
                    (s + 3) * 0x0101_0101_0101_0101,
                    (s + 2) * 0x0101_0101_0101_0101,
                    (s + 2) * 0x0101_0101_0101_0101,
                    (s + 1) * 0x0101_0101_0101_0101,
                    (s + 1) * 0x0101_0101_0101_0101,
                    s * 0x0101_0101_0101_0101,
                    s * 0x0101_0101_0101_0101,
                );
                let scale = _mm512_srai_epi16(_mm512_shuffle_epi8(sc, pat), 8);
                sumi = _mm512_dpwssd_epi32(sumi, p, scale);
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_matches_scalar() {
        if !(super::super::Simd::Avx512.is_supported() && is_x86_feature_detected!("avx512vnni")) {
            return;
        }
        super::super::x86_avx2_kquants::tests::check_against_scalar(
            |d| {
                super::super::x86_avx2_kquants::install(d);
                install(d);
            },
            "avx512",
        );
    }
}
