//! NEON dot products of the 32-element formats: Q8_0, Q4_0, Q5_0, IQ4_NL and
//! MXFP4 against Q8_0 activations, Q4_1 and Q5_1 against Q8_1, after ggml's
//! `ggml_vec_dot_*_q8_{0,1}` in ggml/src/ggml-cpu/arch/arm/quants.c.
//!
//! Per block: the weights become 32 signed (or, for the `_1` types, small
//! unsigned) bytes in two registers, two [`I8Dot`] steps give the exact
//! integer sum in four `i32` lanes, and f32 enters once, as `d_w · d_x` times
//! those lanes; blocks alternate between two f32 accumulators. The `_1` types
//! add `m_w · s_x` per block in scalar f32, as ggml does. Only the order of
//! the f32 sums differs from `scalar_legacy`.

use super::super::quant_dots::QuantDots;
use super::{I8Dot, f16_to_f32, flavours, load_i8, load_u8};
use crate::quant::float::{F16Le, e8m0_to_f32_half};
use crate::quant::iq::{KVALUES_IQ4NL, KVALUES_MXFP4};
use crate::quant::{
    BlockIQ4NL, BlockMXFP4, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};
use std::arch::aarch64::*;

/// Installs this family's kernels: the `sdot` flavour when `dotprod` was
/// detected, else the plain NEON one.
pub(super) fn install(dots: &mut QuantDots, dotprod: bool) {
    if dotprod {
        dots.q8_0 = q8_0_sdot;
        dots.q4_0 = q4_0_sdot;
        dots.q5_0 = q5_0_sdot;
        dots.q4_1 = q4_1_sdot;
        dots.q5_1 = q5_1_sdot;
        dots.iq4_nl = iq4_nl_sdot;
        dots.mxfp4 = mxfp4_sdot;
    } else {
        dots.q8_0 = q8_0_mull;
        dots.q4_0 = q4_0_mull;
        dots.q5_0 = q5_0_mull;
        dots.q4_1 = q4_1_mull;
        dots.q5_1 = q5_1_mull;
        dots.iq4_nl = iq4_nl_mull;
        dots.mxfp4 = mxfp4_mull;
    }
}

flavours!(q8_0 => q8_0_mull, q8_0_sdot);
flavours!(q4_0 => q4_0_mull, q4_0_sdot);
flavours!(q5_0 => q5_0_mull, q5_0_sdot);
flavours!(q4_1 => q4_1_mull, q4_1_sdot);
flavours!(q5_1 => q5_1_mull, q5_1_sdot);
flavours!(iq4_nl => iq4_nl_mull, iq4_nl_sdot);
flavours!(mxfp4 => mxfp4_mull, mxfp4_sdot);

/// The `n / 32` weight and activation blocks of one row pair. Alignment-1
/// structs: the casts cannot fail for any address; `matmul` checked lengths.
#[inline(always)]
fn blocks<'a, W: bytemuck::Pod, X: bytemuck::Pod>(
    n: usize,
    w: &'a [u8],
    x: &'a [u8],
) -> (&'a [W], &'a [X]) {
    let nb = n / 32;
    let w: &[W] = bytemuck::cast_slice(w);
    let x: &[X] = bytemuck::cast_slice(x);
    (&w[..nb], &x[..nb])
}

#[inline(always)]
fn h(v: F16Le) -> f32 {
    f16_to_f32(u16::from_le_bytes(v.0))
}

/// Σ over `nb` blocks of `scale · Σ lanes`, where `block(i)` gives block
/// `i`'s integer lanes and f32 scale; even and odd blocks go to separate
/// accumulators (two independent chains, as in ggml).
#[inline]
#[target_feature(enable = "neon")]
fn sum_blocks(nb: usize, mut block: impl FnMut(usize) -> (int32x4_t, f32)) -> f32 {
    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i + 2 <= nb {
        let (p, d) = block(i);
        a0 = vmlaq_n_f32(a0, vcvtq_f32_s32(p), d);
        let (p, d) = block(i + 1);
        a1 = vmlaq_n_f32(a1, vcvtq_f32_s32(p), d);
        i += 2;
    }
    if i < nb {
        let (p, d) = block(i);
        a0 = vmlaq_n_f32(a0, vcvtq_f32_s32(p), d);
    }
    vaddvq_f32(vaddq_f32(a0, a1))
}

/// Σ over 32 elements: `lo`/`hi` (elements 0..16 and 16..32) times the
/// activations `q8`.
#[inline]
#[target_feature(enable = "neon")]
fn dot32<D: I8Dot>(lo: int8x16_t, hi: int8x16_t, q8: &[i8; 32]) -> int32x4_t {
    let p = D::dot(vdupq_n_s32(0), lo, load_i8(q8, 0));
    D::dot(p, hi, load_i8(q8, 16))
}

/// The 16 nibble bytes of a block as (low nibbles, high nibbles): elements
/// 0..16 and 16..32.
#[inline]
#[target_feature(enable = "neon")]
fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let q = load_u8(qs, 0);
    (vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q))
}

/// The fifth bits of a Q5 block as byte masks (0xff where set) for elements
/// 0..16 and 16..32: bit `j` of the little-endian `qh` is element `j`'s.
/// ggml expands them through a 2 KiB table; a byte shuffle and a bit test do
/// it in registers.
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    const LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let v = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
    let (lo, hi, bit) = (load_u8(&LO, 0), load_u8(&HI, 0), load_u8(&BIT, 0));
    (
        vtstq_u8(vqtbl1q_u8(v, lo), bit),
        vtstq_u8(vqtbl1q_u8(v, hi), bit),
    )
}

#[inline]
#[target_feature(enable = "neon")]
fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// `ggml_vec_dot_q8_0_q8_0`.
#[inline]
#[target_feature(enable = "neon")]
fn q8_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ8_0, BlockQ8_0>(n, w, x);
    sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        let p = dot32::<D>(load_i8(&b.qs, 0), load_i8(&b.qs, 16), &y.qs);
        (p, h(b.d) * h(y.d))
    })
}

/// `ggml_vec_dot_q4_0_q8_0`: `q − 8`.
#[inline]
#[target_feature(enable = "neon")]
fn q4_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4_0, BlockQ8_0>(n, w, x);
    sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        let (lo, hi) = nibbles(&b.qs);
        let eight = vdupq_n_s8(8);
        let p = dot32::<D>(vsubq_s8(s8(lo), eight), vsubq_s8(s8(hi), eight), &y.qs);
        (p, h(b.d) * h(y.d))
    })
}

/// `ggml_vec_dot_q5_0_q8_0`: `(q | fifth << 4) − 16`, i.e. `q − 16` where the
/// fifth bit is clear.
#[inline]
#[target_feature(enable = "neon")]
fn q5_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5_0, BlockQ8_0>(n, w, x);
    sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        let (lo, hi) = nibbles(&b.qs);
        let (set_lo, set_hi) = fifth_bits(b.qh);
        let sixteen = vdupq_n_u8(0x10);
        let lo = vsubq_s8(s8(lo), s8(vbicq_u8(sixteen, set_lo)));
        let hi = vsubq_s8(s8(hi), s8(vbicq_u8(sixteen, set_hi)));
        (dot32::<D>(lo, hi, &y.qs), h(b.d) * h(y.d))
    })
}

/// `ggml_vec_dot_q4_1_q8_1`: `d·q + m`; the minimum meets Q8_1's `s`.
#[inline]
#[target_feature(enable = "neon")]
fn q4_1<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4_1, BlockQ8_1>(n, w, x);
    let mut summs = 0f32;
    let sum = sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        summs += h(b.m) * h(y.s);
        let (lo, hi) = nibbles(&b.qs);
        (dot32::<D>(s8(lo), s8(hi), &y.qs), h(b.d) * h(y.d))
    });
    sum + summs
}

/// `ggml_vec_dot_q5_1_q8_1`: `d·(q | fifth << 4) + m`.
#[inline]
#[target_feature(enable = "neon")]
fn q5_1<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5_1, BlockQ8_1>(n, w, x);
    let mut summs = 0f32;
    let sum = sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        summs += h(b.m) * h(y.s);
        let (lo, hi) = nibbles(&b.qs);
        let (set_lo, set_hi) = fifth_bits(b.qh);
        let sixteen = vdupq_n_u8(0x10);
        let lo = vorrq_u8(lo, vandq_u8(sixteen, set_lo));
        let hi = vorrq_u8(hi, vandq_u8(sixteen, set_hi));
        (dot32::<D>(s8(lo), s8(hi), &y.qs), h(b.d) * h(y.d))
    });
    sum + summs
}

/// Nibbles looked up in a 16-entry table of signed levels (`tbl`).
#[inline]
#[target_feature(enable = "neon")]
fn table_nibbles(table: int8x16_t, qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(qs);
    (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
}

/// `ggml_vec_dot_iq4_nl_q8_0`: `d·kvalues_iq4nl[q]`.
#[inline]
#[target_feature(enable = "neon")]
fn iq4_nl<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockIQ4NL, BlockQ8_0>(n, w, x);
    let table = load_i8(&KVALUES_IQ4NL, 0);
    sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        let (lo, hi) = table_nibbles(table, &b.qs);
        (dot32::<D>(lo, hi, &y.qs), h(y.d) * h(b.d))
    })
}

/// `ggml_vec_dot_mxfp4_q8_0`: `2^(e−128)·kvalues_mxfp4[q]`.
#[inline]
#[target_feature(enable = "neon")]
fn mxfp4<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockMXFP4, BlockQ8_0>(n, w, x);
    let table = load_i8(&KVALUES_MXFP4, 0);
    sum_blocks(w.len(), |i| {
        let (b, y) = (&w[i], &x[i]);
        let (lo, hi) = table_nibbles(table, &b.qs);
        (dot32::<D>(lo, hi, &y.qs), h(y.d) * e8m0_to_f32_half(b.e))
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::scalar_legacy;
    use super::super::super::scalar_legacy::test_support::check_against;
    use super::*;

    fn scalar() -> QuantDots {
        let mut t = QuantDots::reference();
        scalar_legacy::install(&mut t);
        t
    }

    #[test]
    fn plain_neon_matches_scalar() {
        let mut ours = scalar();
        install(&mut ours, false);
        check_against(&scalar(), &ours, "neon", false);
    }

    #[test]
    fn dotprod_matches_scalar() {
        if !std::arch::is_aarch64_feature_detected!("dotprod") {
            eprintln!("no dotprod on this CPU: skipped");
            return;
        }
        let mut ours = scalar();
        install(&mut ours, true);
        check_against(&scalar(), &ours, "neon+dotprod", false);
    }
}
