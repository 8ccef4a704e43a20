//! The k-quant super-blocks (256 weights each): layouts and ggml's
//! `dequantize_row_q{2..6}_K`, plus Q8_K, the activation format of the k-quant
//! dot products, with `quantize_row_q8_K_ref`. The weight quantizers are in
//! [`super::kquants_ref`].
//!
//! Each super-block is split into sub-blocks (16 of 16 weights, or 8 of 32)
//! with their own small integer scale (and minimum), themselves scaled by the
//! f16 `d` (and `dmin`) of the super-block.

use super::float::{F16Le, F32Le, I16Le, nearest_int};
use super::{QuantBlock, QuantizeBlock};
use crate::gguf::GgmlType;
use bytemuck::{Pod, Zeroable};

/// Weights per super-block (`QK_K`).
pub const QK_K: usize = 256;

/// Q2_K (84 bytes): `x = d · sc − dmin · m` per 16-weight sub-block, q in 0..4.
/// ```text
///  0  scales  16 bytes: sub-block j's scale (low nibble) and min (high nibble)
/// 16  qs      64 bytes: 2-bit quants; per 128 weights, 32 bytes whose bit
///             pairs 0,2,4,6 hold weights l, l+32, l+64, l+96
/// 80  d       f16 scale of the scales
/// 82  dmin    f16 scale of the mins
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: F16Le,
    pub dmin: F16Le,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// Q3_K (110 bytes): `x = d · (sc − 32) · (q − 4)` per 16-weight sub-block,
/// q in 0..8 (two low bits in `qs`, the third in `hmask`).
/// ```text
///   0  hmask   32 bytes: bit b of byte l is the high bit of weight 32·b + l
///  32  qs      64 bytes: low 2 bits, laid out as Q2_K
///  96  scales  12 bytes: sixteen 6-bit scales (low nibbles in bytes 0..8,
///              high bit pairs in bytes 8..12)
/// 108  d       f16 super-block scale
/// ```
/// A *clear* hmask bit subtracts 4: ggml stores the high bit inverted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: F16Le,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// Q4_K (144 bytes): `x = d · sc · q − dmin · m` per 32-weight sub-block,
/// q in 0..16, with 6-bit `sc` and `m` (see [`scale_min_k4`]).
/// ```text
///  0  d       f16 scale of the scales
///  2  dmin    f16 scale of the mins
///  4  scales  12 bytes: eight 6-bit scales and eight 6-bit mins
/// 16  qs      128 bytes: per 64 weights, 32 bytes; low nibbles are weights
///             0..32 of the chunk, high nibbles weights 32..64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q5_K (176 bytes): Q4_K with a fifth bit per weight, q in 0..32.
/// ```text
///  0  d, dmin, scales  as Q4_K
/// 16  qh      32 bytes: bit 2c (2c+1) of byte l is the fifth bit of weight l
///             (l + 32) of 64-weight chunk c
/// 48  qs      128 bytes: low nibbles, as Q4_K
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: F16Le,
    pub dmin: F16Le,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// Q6_K (210 bytes): `x = d · sc · (q − 32)` per 16-weight sub-block, q in
/// 0..64, `sc` a signed byte.
/// ```text
///   0  ql      128 bytes: low 4 bits; per 128 weights, 64 bytes where byte l
///              holds weights l (low nibble) and l+64 (high), byte l+32 holds
///              weights l+32 and l+96
/// 128  qh      64 bytes: high 2 bits; per 128 weights, 32 bytes whose bit
///              pairs 0,2,4,6 belong to weights l, l+32, l+64, l+96
/// 192  scales  16 × i8
/// 208  d       f16 super-block scale
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: F16Le,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// Q8_K (292 bytes): activations for the k-quant dot products; `x = d · q`.
/// ```text
///   0  d      f32 scale (not f16)
///   4  qs     256 × i8
/// 260  bsums  16 × i16: sums of each 16 quants, for the mins' contribution
/// ```
/// ggml's struct has alignment 4; the bytes are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: F32Le,
    pub qs: [i8; 256],
    pub bsums: [I16Le; 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8)
/// of a Q4_K/Q5_K block. Sub-blocks 0..4 sit in the low six bits of bytes j
/// and j+4; 4..8 take their low four bits from byte j+4 and their top two from
/// the spare high bits of bytes j−4 and j.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// The 6-bit scale of Q3_K sub-block `j` (0..16), before the −32 offset.
#[inline]
fn q3k_scale(j: usize, s: &[u8; 12]) -> i8 {
    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8
}

impl QuantBlock for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_q2_K`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let mut is = 0;
        let mut y = 0;
        for q in self.qs.chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                for half in [&q[..16], &q[16..]] {
                    let sc = self.scales[is];
                    is += 1;
                    let dl = d * f32::from(sc & 0x0f);
                    let ml = min * f32::from(sc >> 4);
                    for &b in half {
                        out[y] = dl * f32::from((b >> shift) & 3) - ml;
                        y += 1;
                    }
                }
            }
        }
    }
}

impl QuantBlock for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_q3_K`.
    fn dequantize(&self, out: &mut [f32]) {
        let d_all = self.d.to_f32();
        let mut is = 0;
        let mut y = 0;
        // The hmask bit walks 0..8 across both 128-weight halves.
        let mut m = 1u8;
        for q in self.qs.chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                for (q, hm) in [(&q[..16], &self.hmask[..16]), (&q[16..], &self.hmask[16..])] {
                    let dl = d_all * f32::from(q3k_scale(is, &self.scales) - 32);
                    is += 1;
                    for (&b, &h) in q.iter().zip(hm) {
                        let low = i32::from((b >> shift) & 3);
                        let high = if h & m != 0 { 0 } else { 4 };
                        out[y] = dl * (low - high) as f32;
                        y += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

impl QuantBlock for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_q4_K`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (c, (q, y)) in self
            .qs
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            for (l, &b) in q.iter().enumerate() {
                y[l] = d1 * f32::from(b & 0x0f) - m1;
                y[l + 32] = d2 * f32::from(b >> 4) - m2;
            }
        }
    }
}

impl QuantBlock for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_q5_K`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (c, (ql, y)) in self
            .qs
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for (l, (&b, &h)) in ql.iter().zip(&self.qh).enumerate() {
                let hi1 = if h & u1 != 0 { 16 } else { 0 };
                let hi2 = if h & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * f32::from((b & 0x0f) + hi1) - m1;
                y[l + 32] = d2 * f32::from((b >> 4) + hi2) - m2;
            }
        }
    }
}

impl QuantBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_q6_K`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let chunks = self
            .ql
            .chunks_exact(64)
            .zip(self.qh.chunks_exact(32))
            .zip(self.scales.chunks_exact(8))
            .zip(out.chunks_exact_mut(128));
        for (((ql, qh), sc), y) in chunks {
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                y[l] = d * f32::from(sc[is]) * f32::from(q1);
                y[l + 32] = d * f32::from(sc[is + 2]) * f32::from(q2);
                y[l + 64] = d * f32::from(sc[is + 4]) * f32::from(q3);
                y[l + 96] = d * f32::from(sc[is + 6]) * f32::from(q4);
            }
        }
    }
}

impl QuantBlock for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_q8_K`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * f32::from(q);
        }
    }
}

impl QuantizeBlock for BlockQ8K {
    /// `quantize_row_q8_K_ref`: the signed value of largest magnitude maps to
    /// −127 (`iscale = −127/max`, `q = min(127, nearest_int(iscale · x))`),
    /// `d = 1/iscale` kept as f32, and the sums of each 16 quants.
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK_K];
        let (mut amax, mut max) = (0.0_f32, 0.0_f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut block = Self::zeroed();
        if amax == 0.0 {
            return block;
        }
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, qs) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = I16Le::new(qs.iter().map(|&q| i16::from(q)).sum());
        }
        block.d = F32Le::from_f32(1.0 / iscale);
        block
    }
}
