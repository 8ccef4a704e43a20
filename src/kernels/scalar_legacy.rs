//! ggml's integer formulation of the 32-element dot products, in plain Rust
//! (every target): Q4_0, Q5_0, Q8_0, IQ4_NL and MXFP4 against Q8_0
//! activations, Q4_1 and Q5_1 against Q8_1.
//!
//! Per block of 32: the integer sum of `q_w · q_x` (exact in `i32`), then f32
//! enters once: `sumi · d_w · d_x`, plus `m_w · s_x` for the `_1` types, whose
//! weights are `d·q + m` (Q8_1's `s = d_x · Σq_x` carries the activation sum).
//! The block terms are summed in f32 in block order, exactly as ggml's scalar
//! code does, with its operand order per type; the SIMD variants differ from
//! this only in the order of those f32 sums.
//!
//! Sources: `ggml_vec_dot_{q4_0,q5_0,q8_0,iq4_nl,mxfp4}_q8_0_generic` and
//! `ggml_vec_dot_{q4_1,q5_1}_q8_1_generic` in ggml/src/ggml-cpu/quants.c.

use super::quant_dots::QuantDots;
use crate::quant::float::e8m0_to_f32_half;
use crate::quant::iq::{KVALUES_IQ4NL, KVALUES_MXFP4};
use crate::quant::{
    BlockIQ4NL, BlockMXFP4, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};

/// Installs this module's kernels into the table.
pub(super) fn install(dots: &mut QuantDots) {
    dots.q4_0 = dot_q4_0;
    dots.q4_1 = dot_q4_1;
    dots.q5_0 = dot_q5_0;
    dots.q5_1 = dot_q5_1;
    dots.q8_0 = dot_q8_0;
    dots.iq4_nl = dot_iq4_nl;
    dots.mxfp4 = dot_mxfp4;
}

/// The `n / 32` weight and activation blocks of one row pair. Alignment-1
/// structs: the casts cannot fail for any address; `matmul` checked lengths.
#[inline]
pub(super) fn blocks<'a, W: bytemuck::Pod, X: bytemuck::Pod>(
    n: usize,
    w: &'a [u8],
    x: &'a [u8],
) -> (&'a [W], &'a [X]) {
    let nb = n / 32;
    let w: &[W] = bytemuck::cast_slice(w);
    let x: &[X] = bytemuck::cast_slice(x);
    (&w[..nb], &x[..nb])
}

/// Σ q(j)·x[j] + Σ q(j+16)·x[j+16] over one nibble-packed block, where
/// `lo`/`hi` turn byte `j` into the values of elements `j` and `j + 16`.
#[inline]
fn nibble_sum(
    qs: &[u8; 16],
    x: &[i8; 32],
    lo: impl Fn(u8, usize) -> i32,
    hi: impl Fn(u8, usize) -> i32,
) -> i32 {
    let (mut s0, mut s1) = (0i32, 0i32);
    for (j, &q) in qs.iter().enumerate() {
        s0 += lo(q, j) * i32::from(x[j]);
        s1 += hi(q, j) * i32::from(x[j + 16]);
    }
    s0 + s1
}

/// The fifth bits of a Q5 block as 0 or 16, for elements `j` and `j + 16`.
#[inline]
fn q5_high(qh: [u8; 4]) -> impl Fn(usize) -> (i32, i32) {
    let qh = u32::from_le_bytes(qh);
    move |j| {
        (
            ((qh >> j) << 4 & 0x10) as i32,
            ((qh >> (j + 12)) & 0x10) as i32,
        )
    }
}

/// `ggml_vec_dot_q4_0_q8_0`: `x = d·(q − 8)`.
pub(super) fn dot_q4_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4_0, BlockQ8_0>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let sumi = nibble_sum(
            &b.qs,
            &y.qs,
            |q, _| i32::from(q & 0x0f) - 8,
            |q, _| i32::from(q >> 4) - 8,
        );
        sumf += sumi as f32 * b.d.to_f32() * y.d.to_f32();
    }
    sumf
}

/// `ggml_vec_dot_q4_1_q8_1`: `x = d·q + m`.
pub(super) fn dot_q4_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4_1, BlockQ8_1>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let sumi = nibble_sum(
            &b.qs,
            &y.qs,
            |q, _| i32::from(q & 0x0f),
            |q, _| i32::from(q >> 4),
        );
        sumf += (b.d.to_f32() * y.d.to_f32()) * sumi as f32 + b.m.to_f32() * y.s.to_f32();
    }
    sumf
}

/// `ggml_vec_dot_q5_0_q8_0`: `x = d·(q − 16)`, q with its fifth bit from `qh`.
pub(super) fn dot_q5_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5_0, BlockQ8_0>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let h = q5_high(b.qh);
        let sumi = nibble_sum(
            &b.qs,
            &y.qs,
            |q, j| (i32::from(q & 0x0f) | h(j).0) - 16,
            |q, j| (i32::from(q >> 4) | h(j).1) - 16,
        );
        sumf += (b.d.to_f32() * y.d.to_f32()) * sumi as f32;
    }
    sumf
}

/// `ggml_vec_dot_q5_1_q8_1`: `x = d·q + m`, q with its fifth bit from `qh`.
pub(super) fn dot_q5_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5_1, BlockQ8_1>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let h = q5_high(b.qh);
        let sumi = nibble_sum(
            &b.qs,
            &y.qs,
            |q, j| i32::from(q & 0x0f) | h(j).0,
            |q, j| i32::from(q >> 4) | h(j).1,
        );
        sumf += (b.d.to_f32() * y.d.to_f32()) * sumi as f32 + b.m.to_f32() * y.s.to_f32();
    }
    sumf
}

/// `ggml_vec_dot_q8_0_q8_0`: `x = d·q`.
pub(super) fn dot_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ8_0, BlockQ8_0>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let sumi: i32 =
            b.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &c)| i32::from(a) * i32::from(c))
                .sum();
        sumf += sumi as f32 * (b.d.to_f32() * y.d.to_f32());
    }
    sumf
}

/// `ggml_vec_dot_iq4_nl_q8_0`: `x = d·kvalues_iq4nl[q]`.
pub(super) fn dot_iq4_nl(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockIQ4NL, BlockQ8_0>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let d = y.d.to_f32() * b.d.to_f32();
        let sumi = nibble_sum(
            &b.qs,
            &y.qs,
            |q, _| i32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]),
            |q, _| i32::from(KVALUES_IQ4NL[usize::from(q >> 4)]),
        );
        sumf += d * sumi as f32;
    }
    sumf
}

/// `ggml_vec_dot_mxfp4_q8_0`: `x = 2^(e−128)·kvalues_mxfp4[q]`.
pub(super) fn dot_mxfp4(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockMXFP4, BlockQ8_0>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let d = y.d.to_f32() * e8m0_to_f32_half(b.e);
        let sumi = nibble_sum(
            &b.qs,
            &y.qs,
            |q, _| i32::from(KVALUES_MXFP4[usize::from(q & 0x0f)]),
            |q, _| i32::from(KVALUES_MXFP4[usize::from(q >> 4)]),
        );
        sumf += d * sumi as f32;
    }
    sumf
}

/// Row builders and checks shared by this family's unit tests (scalar and
/// SIMD modules).
#[cfg(test)]
pub(super) mod test_support {
    use super::super::quant_dots::{QuantDots, VecDot};
    use crate::gguf::GgmlType;
    use crate::quant::quantize_row;

    pub(in crate::kernels) use super::super::test_rng::bytes;

    /// A weight type of this family: name, block bytes, scale layout, the
    /// activation type, and its entry in a table.
    pub(in crate::kernels) struct Type {
        pub name: &'static str,
        pub size: usize,
        /// Offsets of the f16 fields (`d`, then `m`); empty for MXFP4.
        pub halves: &'static [usize],
        pub act: GgmlType,
        pub pick: fn(&QuantDots) -> VecDot,
    }

    pub(in crate::kernels) const TYPES: [Type; 7] = [
        Type {
            name: "q4_0",
            size: 18,
            halves: &[0],
            act: GgmlType::Q8_0,
            pick: |d| d.q4_0,
        },
        Type {
            name: "q4_1",
            size: 20,
            halves: &[0, 2],
            act: GgmlType::Q8_1,
            pick: |d| d.q4_1,
        },
        Type {
            name: "q5_0",
            size: 22,
            halves: &[0],
            act: GgmlType::Q8_0,
            pick: |d| d.q5_0,
        },
        Type {
            name: "q5_1",
            size: 24,
            halves: &[0, 2],
            act: GgmlType::Q8_1,
            pick: |d| d.q5_1,
        },
        Type {
            name: "q8_0",
            size: 34,
            halves: &[0],
            act: GgmlType::Q8_0,
            pick: |d| d.q8_0,
        },
        Type {
            name: "iq4_nl",
            size: 18,
            halves: &[0],
            act: GgmlType::Q8_0,
            pick: |d| d.iq4_nl,
        },
        Type {
            name: "mxfp4",
            size: 17,
            halves: &[],
            act: GgmlType::Q8_0,
            pick: |d| d.mxfp4,
        },
    ];

    /// `nb` blocks of random quants with f16 factors from `f16s` (index
    /// `2·block + field`); MXFP4 exponents from `exps`.
    pub(in crate::kernels) fn weights(
        t: &Type,
        nb: usize,
        seed: u64,
        f16s: impl Fn(usize) -> f32,
        exps: impl Fn(usize) -> u8,
    ) -> Vec<u8> {
        let mut w = bytes(t.size * nb, seed);
        for b in 0..nb {
            let blk = &mut w[b * t.size..(b + 1) * t.size];
            if t.halves.is_empty() {
                blk[0] = exps(b);
            }
            for (k, &off) in t.halves.iter().enumerate() {
                let v = half::f16::from_f32(f16s(2 * b + k)).to_le_bytes();
                blk[off..off + 2].copy_from_slice(&v);
            }
        }
        w
    }

    /// An activation row of `ty` (Q8_0 or Q8_1) from values in [-1, 1) with
    /// outliers, times `scale`.
    pub(in crate::kernels) fn activations(
        ty: GgmlType,
        n: usize,
        seed: u64,
        scale: f32,
    ) -> Vec<u8> {
        let v: Vec<f32> = bytes(n, seed)
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let v = f32::from(b) / 128.0 - 1.0;
                scale * if i % 37 == 0 { v * 9.0 } else { v }
            })
            .collect();
        let mut out = Vec::new();
        quantize_row(ty, &v, &mut out).unwrap();
        out
    }

    /// Σ|w·x| of the dequantized rows: the scale the tolerance is relative
    /// to. With `s_rounding`, plus the f16 rounding of Q8_1's `s` as the `_1`
    /// types use it (Σ|m·s|·2⁻¹¹), which the dequantizing reference lacks.
    pub(in crate::kernels) fn magnitude(
        t: &Type,
        n: usize,
        w: &[u8],
        x: &[u8],
        s_rounding: bool,
    ) -> f32 {
        let ty = GgmlType::from_name(&t.name.to_uppercase()).unwrap();
        let (mut wf, mut xf) = (vec![0f32; n], vec![0f32; n]);
        crate::quant::dequantize_row(ty, w, &mut wf).unwrap();
        crate::quant::dequantize_row(t.act, x, &mut xf).unwrap();
        let mut m: f32 = wf.iter().zip(&xf).map(|(a, b)| (a * b).abs()).sum();
        if s_rounding && t.act == GgmlType::Q8_1 {
            for (wb, xb) in w.chunks_exact(t.size).zip(x.chunks_exact(36)) {
                let h = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                m += (h(&wb[2..]) * h(&xb[2..])).abs() * 1e5 / 2048.0;
            }
        }
        m
    }

    /// Checks `ours` against `reference` for every type on rows of 1, 2, 3,
    /// 5, 7, 8, 9 and 67 blocks, with ordinary and extreme scales.
    pub(in crate::kernels) fn check_against(
        reference: &QuantDots,
        ours: &QuantDots,
        what: &str,
        s_rounding: bool,
    ) {
        for nb in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 67] {
            let n = 32 * nb;
            for t in &TYPES {
                let cases: [(Vec<u8>, f32); 4] = [
                    (
                        weights(
                            t,
                            nb,
                            7 + nb as u64,
                            |i| 0.01 + 0.003 * i as f32,
                            |b| 120 + b as u8 % 9,
                        ),
                        1.0,
                    ),
                    // Largest f16 scales, large exponents (products stay finite).
                    (
                        weights(
                            t,
                            nb,
                            3,
                            |i| if i % 2 == 0 { 65504.0 } else { -65504.0 },
                            |_| 200,
                        ),
                        1.0,
                    ),
                    // Subnormal f16 scales and exponents 0 and 1, large activations.
                    (
                        weights(t, nb, 5, |i| 6e-8 * (1 + i % 3) as f32, |b| (b % 2) as u8),
                        100.0,
                    ),
                    // Every quant bit set (largest q, all fifth bits).
                    (
                        {
                            let mut w = weights(t, nb, 9, |i| 0.5 - 0.1 * (i % 3) as f32, |_| 127);
                            for b in 0..nb {
                                let start = if t.halves.is_empty() {
                                    1
                                } else {
                                    2 * t.halves.len()
                                };
                                for v in &mut w[b * t.size + start..(b + 1) * t.size] {
                                    *v = 0xff;
                                }
                            }
                            w
                        },
                        1.0,
                    ),
                ];
                for (case, (w, scale)) in cases.iter().enumerate() {
                    let x = activations(t.act, n, 100 + nb as u64, *scale);
                    let a = (t.pick)(reference)(n, w, &x);
                    let b = (t.pick)(ours)(n, w, &x);
                    let m = magnitude(t, n, w, &x, s_rounding);
                    assert!(
                        (a - b).abs() <= 1e-5 * m.max(f32::MIN_POSITIVE) || a == b,
                        "{what} {} nb={nb} case {case}: {a} vs {b} (Σ|w·x| = {m})",
                        t.name
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The integer formulation against the dequantizing reference.
    use super::test_support::*;
    use super::*;

    #[test]
    fn integer_formulation_matches_dequantized_reference() {
        let reference = QuantDots::reference();
        let mut ours = QuantDots::reference();
        install(&mut ours);
        check_against(&reference, &ours, "scalar", true);
    }

    #[test]
    fn one_block_is_exact() {
        // Q8_0 × Q8_0 with d = 1: every product is an exact integer.
        let mut w = vec![0u8; 34];
        w[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        let mut x = w.clone();
        for j in 0..32 {
            w[2 + j] = (j as i8 - 16) as u8;
            x[2 + j] = 3;
        }
        let want: i32 = (0..32).map(|j| (j - 16) * 3).sum();
        assert_eq!(dot_q8_0(32, &w, &x), want as f32);
    }
}
