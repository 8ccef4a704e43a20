//! NEON dot products of the K-quants (Q2_K … Q6_K) and IQ4_XS against Q8_K
//! activations, after ggml's `ggml_vec_dot_*_q8_K` in
//! ggml/src/ggml-cpu/arch/arm/quants.c.
//!
//! Per super-block of 256: the quants of each sub-block become signed (or
//! small unsigned) bytes, [`I8Dot`] sums them against the activations, each
//! sub-block's sum is reduced and multiplied by its integer scale into one
//! exact `i32`; the minimums (and Q6_K's −32 offset) go through Q8_K's
//! `bsums` as a second exact integer, with widening NEON multiplies. f32
//! enters once per block, as in `scalar_kquants`, so only the order of the
//! f32 sums across blocks differs from it.
//!
//! Q8_K's `bsums` are read as little-endian `i16` straight into registers:
//! every aarch64 target Rust ships with std for is little-endian.

use super::super::quant_dots::QuantDots;
use super::super::scalar_kquants::{blocks, unpack_k4, unpack_q3_k};
use super::{I8Dot, f16_to_f32, flavours, load_i8, load_u8};
use crate::quant::float::F16Le;
use crate::quant::iq::KVALUES_IQ4NL;
use crate::quant::{BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use std::arch::aarch64::*;

/// Installs this family's kernels: the `sdot` flavour when `dotprod` was
/// detected, else the plain NEON one.
pub(super) fn install(dots: &mut QuantDots, dotprod: bool) {
    if dotprod {
        dots.q2_k = q2_k_sdot;
        dots.q3_k = q3_k_sdot;
        dots.q4_k = q4_k_sdot;
        dots.q5_k = q5_k_sdot;
        dots.q6_k = q6_k_sdot;
        dots.iq4_xs = iq4_xs_sdot;
    } else {
        dots.q2_k = q2_k_mull;
        dots.q3_k = q3_k_mull;
        dots.q4_k = q4_k_mull;
        dots.q5_k = q5_k_mull;
        dots.q6_k = q6_k_mull;
        dots.iq4_xs = iq4_xs_mull;
    }
}

flavours!(q2_k => q2_k_mull, q2_k_sdot);
flavours!(q3_k => q3_k_mull, q3_k_sdot);
flavours!(q4_k => q4_k_mull, q4_k_sdot);
flavours!(q5_k => q5_k_mull, q5_k_sdot);
flavours!(q6_k => q6_k_mull, q6_k_sdot);
flavours!(iq4_xs => iq4_xs_mull, iq4_xs_sdot);

#[inline(always)]
fn h(v: F16Le) -> f32 {
    f16_to_f32(u16::from_le_bytes(v.0))
}

#[inline]
#[target_feature(enable = "neon")]
fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// Q8_K's 16 block sums as two vectors of eight.
#[inline(always)]
fn bsums(y: &BlockQ8K) -> (int16x8_t, int16x8_t) {
    let b: &[u8; 32] = bytemuck::cast_ref(&y.bsums);
    // SAFETY: `b` is the 32 bytes read; the loads have no alignment needs.
    unsafe {
        (
            vld1q_s16(b.as_ptr().cast()),
            vld1q_s16(b[16..].as_ptr().cast()),
        )
    }
}

/// Σ a·b over eight `i16` lanes, widened (exact).
#[inline]
#[target_feature(enable = "neon")]
fn dot_i16(a: int16x8_t, b: int16x8_t) -> int32x4_t {
    vaddq_s32(
        vmull_s16(vget_low_s16(a), vget_low_s16(b)),
        vmull_high_s16(a, b),
    )
}

/// The sum of `a·b + c·d` over 32 bytes, reduced: one sub-block's integer sum.
#[inline]
#[target_feature(enable = "neon")]
fn dot2<D: I8Dot>(a: int8x16_t, b: int8x16_t, c: int8x16_t, d: int8x16_t) -> i32 {
    vaddvq_s32(D::dot(D::dot(vdupq_n_s32(0), a, b), c, d))
}

/// The sum of `a·b` over 16 bytes, reduced.
#[inline]
#[target_feature(enable = "neon")]
fn dot1<D: I8Dot>(a: int8x16_t, b: int8x16_t) -> i32 {
    vaddvq_s32(D::dot(vdupq_n_s32(0), a, b))
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block.
#[inline(always)]
fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let u = unpack_k4(s);
    let (sc, m) = u.split_at(8);
    (sc.try_into().expect("8"), m.try_into().expect("8"))
}

/// `Σ_j bsums_j · mins_{j/2}` for the eight 32-weight sub-blocks of Q4_K/Q5_K.
#[inline]
#[target_feature(enable = "neon")]
fn mins_k4(y: &BlockQ8K, mins: &[u8; 8]) -> i32 {
    let (b0, b1) = bsums(y);
    // Sums of 16 i8 are within ±2048, so pairs fit i16.
    let q8sums = vpaddq_s16(b0, b1);
    // SAFETY: `mins` is 8 readable bytes; no alignment needs.
    let m = vreinterpretq_s16_u16(vmovl_u8(unsafe { vld1_u8(mins.as_ptr()) }));
    vaddvq_s32(dot_i16(q8sums, m))
}

/// `ggml_vec_dot_q4_K_q8_K`: `d·sc·q − dmin·m` per 32 weights.
#[inline]
#[target_feature(enable = "neon")]
fn q4_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    let m4 = vdupq_n_u8(0x0f);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let dy = y.d.to_f32();
        let (sc, m) = scales_mins_k4(&b.scales);
        let summs = mins_k4(y, &m);
        let mut sumi = 0i32;
        for j in 0..4 {
            let (q4a, q4b) = (load_u8(&b.qs, 32 * j), load_u8(&b.qs, 32 * j + 16));
            let q8 = &y.qs[64 * j..64 * j + 64];
            let lo = dot2::<D>(
                s8(vandq_u8(q4a, m4)),
                load_i8(q8, 0),
                s8(vandq_u8(q4b, m4)),
                load_i8(q8, 16),
            );
            let hi = dot2::<D>(
                s8(vshrq_n_u8::<4>(q4a)),
                load_i8(q8, 32),
                s8(vshrq_n_u8::<4>(q4b)),
                load_i8(q8, 48),
            );
            sumi += lo * i32::from(sc[2 * j]) + hi * i32::from(sc[2 * j + 1]);
        }
        sumf += h(b.d) * dy * sumi as f32 - h(b.dmin) * dy * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_q5_K_q8_K`: Q4_K with the fifth bit from `qh`.
#[inline]
#[target_feature(enable = "neon")]
fn q5_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5K>(n, w, x);
    let m4 = vdupq_n_u8(0x0f);
    let (one, two) = (vdupq_n_u8(1), vdupq_n_u8(2));
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let dy = y.d.to_f32();
        let (sc, m) = scales_mins_k4(&b.scales);
        let summs = mins_k4(y, &m);
        let (mut qh0, mut qh1) = (load_u8(&b.qh, 0), load_u8(&b.qh, 16));
        let mut sumi = 0i32;
        for j in 0..4 {
            let (q5a, q5b) = (load_u8(&b.qs, 32 * j), load_u8(&b.qs, 32 * j + 16));
            let q8 = &y.qs[64 * j..64 * j + 64];
            // Bit 2j of qh byte l is weight l's fifth bit, bit 2j+1 weight l+32's.
            let h0 = vshlq_n_u8::<4>(vandq_u8(one, qh0));
            let h1 = vshlq_n_u8::<4>(vandq_u8(one, qh1));
            let h2 = vshlq_n_u8::<3>(vandq_u8(two, qh0));
            let h3 = vshlq_n_u8::<3>(vandq_u8(two, qh1));
            qh0 = vshrq_n_u8::<2>(qh0);
            qh1 = vshrq_n_u8::<2>(qh1);
            let lo = dot2::<D>(
                s8(vorrq_u8(vandq_u8(q5a, m4), h0)),
                load_i8(q8, 0),
                s8(vorrq_u8(vandq_u8(q5b, m4), h1)),
                load_i8(q8, 16),
            );
            let hi = dot2::<D>(
                s8(vorrq_u8(vshrq_n_u8::<4>(q5a), h2)),
                load_i8(q8, 32),
                s8(vorrq_u8(vshrq_n_u8::<4>(q5b), h3)),
                load_i8(q8, 48),
            );
            sumi += lo * i32::from(sc[2 * j]) + hi * i32::from(sc[2 * j + 1]);
        }
        sumf += h(b.d) * dy * sumi as f32 - h(b.dmin) * dy * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_q6_K_q8_K`: `d·sc·(q − 32)` per 16 weights. The quants go in
/// unsigned (0..64) and the −32 comes back through the block sums:
/// `Σ sc·q·x − 32·Σ sc·bsum`.
#[inline]
#[target_feature(enable = "neon")]
fn q6_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ6K>(n, w, x);
    let (m4, m3) = (vdupq_n_u8(0x0f), vdupq_n_u8(3));
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let (bs0, bs1) = bsums(y);
        let sc = load_i8(&b.scales, 0);
        let isum_mins = vaddvq_s32(vaddq_s32(
            dot_i16(bs0, vmovl_s8(vget_low_s8(sc))),
            dot_i16(bs1, vmovl_high_s8(sc)),
        ));
        let mut isum = 0i32;
        for half in 0..2 {
            let ql = &b.ql[64 * half..64 * half + 64];
            let (qh0, qh1) = (load_u8(&b.qh, 32 * half), load_u8(&b.qh, 32 * half + 16));
            let q8 = &y.qs[128 * half..128 * half + 128];
            let s = &b.scales[8 * half..8 * half + 8];
            let l = [
                load_u8(ql, 0),
                load_u8(ql, 16),
                load_u8(ql, 32),
                load_u8(ql, 48),
            ];
            // Sub-blocks k = 0..8 of this half: weights 16k..16k+16.
            let hbits = |qh: uint8x16_t, shift: usize| -> uint8x16_t {
                let v = match shift {
                    0 => qh,
                    2 => vshrq_n_u8::<2>(qh),
                    4 => vshrq_n_u8::<4>(qh),
                    _ => vshrq_n_u8::<6>(qh),
                };
                vshlq_n_u8::<4>(vandq_u8(v, m3))
            };
            let q6 = [
                vorrq_u8(vandq_u8(l[0], m4), hbits(qh0, 0)),
                vorrq_u8(vandq_u8(l[1], m4), hbits(qh1, 0)),
                vorrq_u8(vandq_u8(l[2], m4), hbits(qh0, 2)),
                vorrq_u8(vandq_u8(l[3], m4), hbits(qh1, 2)),
                vorrq_u8(vshrq_n_u8::<4>(l[0]), hbits(qh0, 4)),
                vorrq_u8(vshrq_n_u8::<4>(l[1]), hbits(qh1, 4)),
                vorrq_u8(vshrq_n_u8::<4>(l[2]), hbits(qh0, 6)),
                vorrq_u8(vshrq_n_u8::<4>(l[3]), hbits(qh1, 6)),
            ];
            for (k, q) in q6.into_iter().enumerate() {
                isum += dot1::<D>(s8(q), load_i8(q8, 16 * k)) * i32::from(s[k]);
            }
        }
        sumf += h(b.d) * y.d.to_f32() * (isum - 32 * isum_mins) as f32;
    }
    sumf
}

/// The sixteen Q3_K scales, offset by −32.
#[inline(always)]
fn scales_q3_k(s: &[u8; 12]) -> [i8; 16] {
    unpack_q3_k(s).map(|v| v as i8 - 32)
}

/// `ggml_vec_dot_q3_K_q8_K`: `d·(sc − 32)·(q − 4·[hmask bit clear])` per 16.
#[inline]
#[target_feature(enable = "neon")]
fn q3_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ3K>(n, w, x);
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let sc = scales_q3_k(&b.scales);
        let (mut hm0, mut hm1) = (load_u8(&b.hmask, 0), load_u8(&b.hmask, 16));
        let mut isum = 0i32;
        for half in 0..2 {
            let (qa, qb) = (load_u8(&b.qs, 32 * half), load_u8(&b.qs, 32 * half + 16));
            let q8 = &y.qs[128 * half..128 * half + 128];
            let s = &sc[8 * half..8 * half + 8];
            // Shift `shift` of the 2-bit quants pairs with hmask bit `shift`
            // (of the half): 4 where that bit is clear.
            for shift in 0..4 {
                let (ta, tb) = match shift {
                    0 => (qa, qb),
                    1 => (vshrq_n_u8::<2>(qa), vshrq_n_u8::<2>(qb)),
                    2 => (vshrq_n_u8::<4>(qa), vshrq_n_u8::<4>(qb)),
                    _ => (vshrq_n_u8::<6>(qa), vshrq_n_u8::<6>(qb)),
                };
                let bit = vdupq_n_u8(1 << shift);
                let four = |hm: uint8x16_t| {
                    s8(vshlq_n_u8::<2>(vshrq_n_u8::<7>(vceqzq_u8(vandq_u8(
                        hm, bit,
                    )))))
                };
                let a = vsubq_s8(s8(vandq_u8(ta, m3)), four(hm0));
                let c = vsubq_s8(s8(vandq_u8(tb, m3)), four(hm1));
                isum += dot1::<D>(a, load_i8(q8, 32 * shift)) * i32::from(s[2 * shift]);
                isum += dot1::<D>(c, load_i8(q8, 32 * shift + 16)) * i32::from(s[2 * shift + 1]);
            }
            hm0 = vshrq_n_u8::<4>(hm0);
            hm1 = vshrq_n_u8::<4>(hm1);
        }
        sumf += h(b.d) * y.d.to_f32() * isum as f32;
    }
    sumf
}

/// `ggml_vec_dot_q2_K_q8_K`: `d·(sc & 15)·q − dmin·(sc >> 4)` per 16.
#[inline]
#[target_feature(enable = "neon")]
fn q2_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ2K>(n, w, x);
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let scm = load_u8(&b.scales, 0);
        let mins = vshrq_n_u8::<4>(scm);
        let (bs0, bs1) = bsums(y);
        let summs = vaddvq_s32(vaddq_s32(
            dot_i16(bs0, vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)))),
            dot_i16(bs1, vreinterpretq_s16_u16(vmovl_high_u8(mins))),
        ));
        let sc: [u8; 16] = std::array::from_fn(|j| b.scales[j] & 0x0f);
        let mut isum = 0i32;
        for half in 0..2 {
            let (qa, qb) = (load_u8(&b.qs, 32 * half), load_u8(&b.qs, 32 * half + 16));
            let q8 = &y.qs[128 * half..128 * half + 128];
            let s = &sc[8 * half..8 * half + 8];
            for shift in 0..4 {
                let (ta, tb) = match shift {
                    0 => (qa, qb),
                    1 => (vshrq_n_u8::<2>(qa), vshrq_n_u8::<2>(qb)),
                    2 => (vshrq_n_u8::<4>(qa), vshrq_n_u8::<4>(qb)),
                    _ => (vshrq_n_u8::<6>(qa), vshrq_n_u8::<6>(qb)),
                };
                let a = dot1::<D>(s8(vandq_u8(ta, m3)), load_i8(q8, 32 * shift));
                let c = dot1::<D>(s8(vandq_u8(tb, m3)), load_i8(q8, 32 * shift + 16));
                isum += a * i32::from(s[2 * shift]) + c * i32::from(s[2 * shift + 1]);
            }
        }
        let dy = y.d.to_f32();
        sumf += dy * h(b.d) * isum as f32 - dy * h(b.dmin) * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_iq4_xs_q8_K`: `d·(ls − 32)·kvalues_iq4nl[q]` per 32 weights.
#[inline]
#[target_feature(enable = "neon")]
fn iq4_xs<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockIQ4XS>(n, w, x);
    let table = load_i8(&KVALUES_IQ4NL, 0);
    let m4 = vdupq_n_u8(0x0f);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let hs = u32::from(u16::from_le_bytes(b.scales_h));
        let mut isum = 0i32;
        for ib in 0..8 {
            let q = load_u8(&b.qs, 16 * ib);
            let q8 = &y.qs[32 * ib..32 * ib + 32];
            let p = dot2::<D>(
                vqtbl1q_s8(table, vandq_u8(q, m4)),
                load_i8(q8, 0),
                vqtbl1q_s8(table, vshrq_n_u8::<4>(q)),
                load_i8(q8, 16),
            );
            let low = u32::from(b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let ls = (low | (((hs >> (2 * ib)) & 3) << 4)) as i32 - 32;
            isum += p * ls;
        }
        sumf += h(b.d) * y.d.to_f32() * isum as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::super::super::scalar_kquants::{self, test_support::*};
    use super::*;
    use crate::quant::kquants::scale_min_k4;

    fn scalar() -> QuantDots {
        let mut t = QuantDots::reference();
        scalar_kquants::install(&mut t);
        t
    }

    fn pick(d: &QuantDots, name: &str) -> super::super::super::quant_dots::VecDot {
        match name {
            "q2_k" => d.q2_k,
            "q3_k" => d.q3_k,
            "q4_k" => d.q4_k,
            "q5_k" => d.q5_k,
            "q6_k" => d.q6_k,
            _ => d.iq4_xs,
        }
    }

    fn check(dotprod: bool) {
        let reference = scalar();
        let mut ours = scalar();
        install(&mut ours, dotprod);
        for nb in [1, 2, 3, 5] {
            let n = 256 * nb;
            let x = activations(n, nb as u64);
            for (name, size, halves) in TYPES {
                let w = weights(size, halves, nb, 7 + nb as u64, |i| 0.01 + 0.003 * i as f32);
                let (a, b) = (
                    pick(&reference, name)(n, &w, &x),
                    pick(&ours, name)(n, &w, &x),
                );
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{name} nb={nb} dotprod={dotprod}: {a} vs {b}"
                );
            }
        }
        // Extremes: every bit set, largest activations of both signs.
        for q8 in [127i8, -128] {
            let x = constant_activations(3, q8, 0.5);
            for (name, size, halves) in TYPES {
                let w = saturated_weights(size, halves, 3);
                let (a, b) = (
                    pick(&reference, name)(768, &w, &x),
                    pick(&ours, name)(768, &w, &x),
                );
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{name} q8={q8} dotprod={dotprod}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn plain_neon_matches_scalar() {
        check(false);
    }

    #[test]
    fn dotprod_matches_scalar() {
        if !std::arch::is_aarch64_feature_detected!("dotprod") {
            eprintln!("no dotprod on this CPU: skipped");
            return;
        }
        check(true);
    }

    #[test]
    fn scale_unpacking_matches_the_reference() {
        for seed in 0..64u64 {
            let s: [u8; 12] = bytes(12, seed).try_into().unwrap();
            let (sc, m) = scales_mins_k4(&s);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), scale_min_k4(j, &s), "seed {seed} j {j}");
            }
            assert_eq!(
                scales_q3_k(&s),
                scalar_kquants::scales_q3_k(&s),
                "seed {seed}"
            );
        }
    }
}
