//! ggml's integer formulation of the K-quant dot products (Q2_K … Q6_K) and
//! IQ4_XS, each against Q8_K activations, in plain Rust (every target).
//!
//! Per super-block of 256 weights: integer sums of `q8 · q` per sub-block,
//! times the sub-block's integer scale, summed to one `i32`; the minimums
//! (Q2_K, Q4_K, Q5_K) come in through Q8_K's `bsums` (sums of each 16
//! activations) as a second integer; only then does f32 enter, once per block:
//! `d_w · d_x · isum − dmin_w · d_x · summs`. Every product and sum up to that
//! point is exact, so the SIMD variants differ from this only in the order of
//! the f32 sums across blocks.
//!
//! Sources: `ggml_vec_dot_q{2..6}_K_q8_K_generic` and
//! `ggml_vec_dot_iq4_xs_q8_K_generic` in ggml/src/ggml-cpu/quants.c.

use super::quant_dots::QuantDots;
use crate::quant::iq::KVALUES_IQ4NL;
use crate::quant::kquants::scale_min_k4;
use crate::quant::{BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

/// Installs this module's kernels into the table.
pub(super) fn install(dots: &mut QuantDots) {
    dots.q2_k = dot_q2_k;
    dots.q3_k = dot_q3_k;
    dots.q4_k = dot_q4_k;
    dots.q5_k = dot_q5_k;
    dots.q6_k = dot_q6_k;
    dots.iq4_xs = dot_iq4_xs;
}

/// The weight and activation blocks of one row pair (alignment-1 structs:
/// the casts cannot fail for any address; lengths are checked by `matmul`).
#[inline]
pub(super) fn blocks<'a, W: bytemuck::Pod>(
    n: usize,
    w: &'a [u8],
    x: &'a [u8],
) -> (&'a [W], &'a [BlockQ8K]) {
    let nb = n / 256;
    let w: &[W] = bytemuck::cast_slice(w);
    let x: &[BlockQ8K] = bytemuck::cast_slice(x);
    (&w[..nb], &x[..nb])
}

/// The 16 block sums of a Q8_K block.
#[inline]
pub(super) fn bsums(y: &BlockQ8K) -> [i32; 16] {
    std::array::from_fn(|j| i32::from(y.bsums[j].get()))
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block.
#[inline]
pub(super) fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, s);
    }
    (sc, m)
}

/// ggml's `utmp` unpacking of a Q4_K/Q5_K scale field: bytes 0..8 are the
/// eight 6-bit scales, bytes 8..16 the eight 6-bit mins (same values as
/// [`scales_mins_k4`], a few word operations instead of a loop).
#[inline]
pub(super) fn unpack_k4(s: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let words = [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// ggml's word-wise unpacking of the Q3_K scale field: the sixteen 6-bit
/// scales, before the −32 offset (same values as [`scales_q3_k`] + 32).
#[inline]
pub(super) fn unpack_q3_k(s: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, a2) = (u(0), u(1), u(2));
    let words = [
        (a0 & KMASK2) | ((a2 & KMASK1) << 4),
        (a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The sixteen Q3_K scales, already offset by −32 (range −32..=31).
#[inline]
pub(super) fn scales_q3_k(s: &[u8; 12]) -> [i8; 16] {
    std::array::from_fn(|j| {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

/// The eight IQ4_XS sub-block scales, offset by −32 (range −32..=31).
#[inline]
pub(super) fn scales_iq4_xs(b: &BlockIQ4XS) -> [i8; 8] {
    let h = u16::from_le_bytes(b.scales_h);
    std::array::from_fn(|ib| {
        let low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = ((h >> (2 * ib)) & 3) as u8;
        (low | (high << 4)) as i8 - 32
    })
}

/// The eight raw IQ4_XS scales (before −32) as the bytes of a u64, with word
/// operations: byte i = nibble i of `scales_l` | bits 2i..2i+2 of `scales_h` << 4.
#[inline]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
pub(super) fn unpack_iq4_xs(b: &BlockIQ4XS) -> u64 {
    let mut lo = u64::from(u32::from_le_bytes(b.scales_l));
    lo = (lo | (lo << 16)) & 0x0000_ffff_0000_ffff;
    lo = (lo | (lo << 8)) & 0x00ff_00ff_00ff_00ff;
    lo = (lo | (lo << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    let mut hi = u64::from(u16::from_le_bytes(b.scales_h));
    hi = (hi | (hi << 24)) & 0x0000_00ff_0000_00ff;
    hi = (hi | (hi << 12)) & 0x000f_000f_000f_000f;
    hi = (hi | (hi << 6)) & 0x0303_0303_0303_0303;
    lo | (hi << 4)
}

/// Σ a·b over two equally long byte runs.
#[inline]
fn dot_i8(q: impl Iterator<Item = i32>, q8: &[i8]) -> i32 {
    q.zip(q8).map(|(a, &b)| a * i32::from(b)).sum()
}

/// `ggml_vec_dot_q2_K_q8_K`: `x = d·(sc & 15)·q − dmin·(sc >> 4)`.
pub(super) fn dot_q2_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ2K>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let bs = bsums(y);
        let summs: i32 = (0..16).map(|j| bs[j] * i32::from(b.scales[j] >> 4)).sum();
        let dall = y.d.to_f32() * b.d.to_f32();
        let dmin = y.d.to_f32() * b.dmin.to_f32();
        let mut isum = 0i32;
        let mut is = 0;
        for (half, q2) in b.qs.chunks_exact(32).enumerate() {
            for shift in 0..4 {
                let q8 = &y.qs[128 * half + 32 * shift..][..32];
                for part in 0..2 {
                    let sc = i32::from(b.scales[is] & 0x0f);
                    is += 1;
                    let q = q2[16 * part..16 * part + 16]
                        .iter()
                        .map(|&v| i32::from((v >> (2 * shift)) & 3));
                    isum += sc * dot_i8(q, &q8[16 * part..16 * part + 16]);
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_q3_K_q8_K`: `x = d·(sc − 32)·(q − 4·[hmask bit clear])`.
pub(super) fn dot_q3_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ3K>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let scales = scales_q3_k(&b.scales);
        let mut isum = 0i32;
        let mut is = 0;
        for (half, q3) in b.qs.chunks_exact(32).enumerate() {
            for shift in 0..4 {
                let m = 1u8 << (4 * half + shift);
                let q8 = &y.qs[128 * half + 32 * shift..][..32];
                for part in 0..2 {
                    let r = 16 * part..16 * part + 16;
                    let q = q3[r.clone()]
                        .iter()
                        .zip(&b.hmask[r.clone()])
                        .map(|(&v, &h)| {
                            i32::from((v >> (2 * shift)) & 3) - if h & m != 0 { 0 } else { 4 }
                        });
                    isum += i32::from(scales[is]) * dot_i8(q, &q8[r]);
                    is += 1;
                }
            }
        }
        sumf += b.d.to_f32() * y.d.to_f32() * isum as f32;
    }
    sumf
}

/// Q4_K and Q5_K: `x = d·sc·q − dmin·m` per 32 weights; `high` gives the
/// fifth bit (0 or 16) of weight `l` of 64-weight chunk `c`, sub-block `s`.
#[inline]
fn dot_q45_k(
    d: f32,
    dmin: f32,
    scales: &[u8; 12],
    qs: &[u8; 128],
    high: impl Fn(usize, usize, usize) -> i32,
    y: &BlockQ8K,
) -> f32 {
    let (sc, m) = scales_mins_k4(scales);
    let bs = bsums(y);
    let summs: i32 = (0..16).map(|j| bs[j] * i32::from(m[j / 2])).sum();
    let mut isum = 0i32;
    for (c, q4) in qs.chunks_exact(32).enumerate() {
        let q8 = &y.qs[64 * c..64 * c + 64];
        let lo = q4
            .iter()
            .enumerate()
            .map(|(l, &v)| i32::from(v & 0x0f) + high(c, 0, l));
        let hi = q4
            .iter()
            .enumerate()
            .map(|(l, &v)| i32::from(v >> 4) + high(c, 1, l));
        isum += i32::from(sc[2 * c]) * dot_i8(lo, &q8[..32]);
        isum += i32::from(sc[2 * c + 1]) * dot_i8(hi, &q8[32..]);
    }
    let dx = y.d.to_f32();
    d * dx * isum as f32 - dmin * dx * summs as f32
}

/// `ggml_vec_dot_q4_K_q8_K`.
pub(super) fn dot_q4_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    w.iter()
        .zip(x)
        .map(|(b, y)| {
            dot_q45_k(
                b.d.to_f32(),
                b.dmin.to_f32(),
                &b.scales,
                &b.qs,
                |_, _, _| 0,
                y,
            )
        })
        .sum()
}

/// `ggml_vec_dot_q5_K_q8_K`.
pub(super) fn dot_q5_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5K>(n, w, x);
    w.iter()
        .zip(x)
        .map(|(b, y)| {
            let high = |c: usize, s: usize, l: usize| {
                if b.qh[l] & (1 << (2 * c + s)) != 0 {
                    16
                } else {
                    0
                }
            };
            dot_q45_k(b.d.to_f32(), b.dmin.to_f32(), &b.scales, &b.qs, high, y)
        })
        .sum()
}

/// `ggml_vec_dot_q6_K_q8_K`: `x = d·sc·(q − 32)` per 16 weights.
pub(super) fn dot_q6_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ6K>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let mut q = [0i32; 256];
        for (h, (ql, qh)) in b.ql.chunks_exact(64).zip(b.qh.chunks_exact(32)).enumerate() {
            let a = &mut q[128 * h..128 * h + 128];
            for l in 0..32 {
                a[l] = i32::from((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
                a[l + 32] = i32::from((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                a[l + 64] = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                a[l + 96] = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            }
        }
        let isum: i32 = (0..16)
            .map(|j| {
                let r = 16 * j..16 * j + 16;
                i32::from(b.scales[j]) * dot_i8(q[r.clone()].iter().copied(), &y.qs[r])
            })
            .sum();
        sumf += b.d.to_f32() * y.d.to_f32() * isum as f32;
    }
    sumf
}

/// `ggml_vec_dot_iq4_xs_q8_K`: `x = d·(ls − 32)·kvalues_iq4nl[q]` per 32 weights.
pub(super) fn dot_iq4_xs(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockIQ4XS>(n, w, x);
    let mut sumf = 0f32;
    for (b, y) in w.iter().zip(x) {
        let ls = scales_iq4_xs(b);
        let mut isum = 0i32;
        for (ib, qs) in b.qs.chunks_exact(16).enumerate() {
            let q8 = &y.qs[32 * ib..32 * ib + 32];
            let lo = qs
                .iter()
                .map(|&v| i32::from(KVALUES_IQ4NL[usize::from(v & 0x0f)]));
            let hi = qs
                .iter()
                .map(|&v| i32::from(KVALUES_IQ4NL[usize::from(v >> 4)]));
            isum += i32::from(ls[ib]) * (dot_i8(lo, &q8[..16]) + dot_i8(hi, &q8[16..]));
        }
        sumf += b.d.to_f32() * y.d.to_f32() * isum as f32;
    }
    sumf
}

/// Block and activation builders shared by this family's unit tests.
#[cfg(test)]
pub(super) mod test_support {
    use crate::gguf::GgmlType;
    use crate::quant::float::{F32Le, I16Le};
    use crate::quant::{BlockQ8K, quantize_row};

    pub(in crate::kernels) use super::super::test_rng::bytes;

    /// The six weight types: name, block bytes, offsets of the f16 fields.
    pub(in crate::kernels) const TYPES: [(&str, usize, &[usize]); 6] = [
        ("q2_k", 84, &[80, 82]),
        ("q3_k", 110, &[108]),
        ("q4_k", 144, &[0, 2]),
        ("q5_k", 176, &[0, 2]),
        ("q6_k", 210, &[208]),
        ("iq4_xs", 136, &[0]),
    ];

    /// `nb` blocks of random quants and scales, with finite f16 factors
    /// (`d` then `dmin`) taken from `f16s`.
    pub(in crate::kernels) fn weights(
        size: usize,
        halves: &[usize],
        nb: usize,
        seed: u64,
        f16s: impl Fn(usize) -> f32,
    ) -> Vec<u8> {
        let mut w = bytes(size * nb, seed);
        for b in 0..nb {
            for (k, &off) in halves.iter().enumerate() {
                let v = half::f16::from_f32(f16s(2 * b + k)).to_le_bytes();
                w[b * size + off..b * size + off + 2].copy_from_slice(&v);
            }
        }
        w
    }

    /// `nb` blocks with every quant, scale and min bit set (the largest
    /// values each field can hold) and f16 scales of 2 and -3.
    pub(in crate::kernels) fn saturated_weights(
        size: usize,
        halves: &[usize],
        nb: usize,
    ) -> Vec<u8> {
        let mut w = weights(size, halves, nb, 1, |i| if i % 2 == 0 { 2.0 } else { -3.0 });
        for block in w.chunks_mut(size) {
            for (i, v) in block.iter_mut().enumerate() {
                if !halves.iter().any(|&h| i == h || i == h + 1) {
                    *v = 0xff;
                }
            }
        }
        w
    }

    /// A Q8_K row from f32 values in [-1, 1) with a few outliers.
    pub(in crate::kernels) fn activations(n: usize, seed: u64) -> Vec<u8> {
        let v: Vec<f32> = bytes(n, seed)
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let v = f32::from(b) / 128.0 - 1.0;
                if i % 37 == 0 { v * 9.0 } else { v }
            })
            .collect();
        let mut out = Vec::new();
        quantize_row(GgmlType::Q8_K, &v, &mut out).unwrap();
        out
    }

    /// Σ |w·x| over the dequantized rows: the scale that summation-order
    /// differences are relative to.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
    pub(in crate::kernels) fn magnitude(name: &str, w: &[u8], x: &[u8]) -> f32 {
        let ty = match name {
            "q2_k" => GgmlType::Q2_K,
            "q3_k" => GgmlType::Q3_K,
            "q4_k" => GgmlType::Q4_K,
            "q5_k" => GgmlType::Q5_K,
            "q6_k" => GgmlType::Q6_K,
            _ => GgmlType::IQ4_XS,
        };
        let n = x.len() / 292 * 256;
        let (mut wf, mut xf) = (vec![0f32; n], vec![0f32; n]);
        crate::quant::dequantize_row(ty, w, &mut wf).unwrap();
        crate::quant::dequantize_row(GgmlType::Q8_K, x, &mut xf).unwrap();
        wf.iter().zip(&xf).map(|(a, b)| (a * b).abs()).sum()
    }

    /// A Q8_K row whose every quant is `q` (bsums consistent), scale `d`.
    pub(in crate::kernels) fn constant_activations(nb: usize, q: i8, d: f32) -> Vec<u8> {
        let block = BlockQ8K {
            d: F32Le::from_f32(d),
            qs: [q; 256],
            bsums: [I16Le::new(16 * i16::from(q)); 16],
        };
        (0..nb)
            .flat_map(|_| bytemuck::bytes_of(&block).to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! The integer formulation against the dequantizing reference.
    use super::test_support::*;
    use super::*;

    fn table() -> (QuantDots, QuantDots) {
        let reference = QuantDots::reference();
        let mut ours = QuantDots::reference();
        install(&mut ours);
        (reference, ours)
    }

    fn pick(d: &QuantDots, name: &str) -> super::super::quant_dots::VecDot {
        match name {
            "q2_k" => d.q2_k,
            "q3_k" => d.q3_k,
            "q4_k" => d.q4_k,
            "q5_k" => d.q5_k,
            "q6_k" => d.q6_k,
            _ => d.iq4_xs,
        }
    }

    #[test]
    fn integer_formulation_matches_dequantized_reference() {
        let (reference, ours) = table();
        for nb in [1, 2, 5] {
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
                    "{name} nb={nb}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn unpack_k4_matches_scale_min_k4() {
        for seed in 0..50 {
            let s: [u8; 12] = bytes(12, seed).try_into().unwrap();
            let (sc, m) = scales_mins_k4(&s);
            let u = unpack_k4(&s);
            assert_eq!((&u[..8], &u[8..]), (&sc[..], &m[..]), "{s:?}");
        }
    }

    #[test]
    fn unpack_q3_k_matches_scales_q3_k() {
        for seed in 0..50 {
            let s: [u8; 12] = bytes(12, 100 + seed).try_into().unwrap();
            let want = scales_q3_k(&s).map(|v| (v + 32) as u8);
            assert_eq!(unpack_q3_k(&s), want, "{s:?}");
        }
    }

    #[test]
    fn unpack_iq4_xs_matches_scales_iq4_xs() {
        for seed in 0..50 {
            let raw = bytes(136, 200 + seed);
            let b: &BlockIQ4XS = bytemuck::from_bytes(&raw);
            let want = scales_iq4_xs(b).map(|v| (v + 32) as u8);
            assert_eq!(unpack_iq4_xs(b).to_le_bytes(), want);
        }
    }

    #[test]
    fn extreme_quants_scales_and_mins() {
        let (reference, ours) = table();
        for q8 in [127i8, -127] {
            let x = constant_activations(3, q8, 0.5);
            for (name, size, halves) in TYPES {
                let w = saturated_weights(size, halves, 3);
                let (a, b) = (
                    pick(&reference, name)(768, &w, &x),
                    pick(&ours, name)(768, &w, &x),
                );
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{name} q8={q8}: {a} vs {b}"
                );
            }
        }
    }
}
