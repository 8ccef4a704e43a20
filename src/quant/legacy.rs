//! ggml's original 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1 (weights) and
//! Q8_0, Q8_1 (weights, and the activation formats their dot products use).
//!
//! In every 4- and 5-bit layout, byte `j` of `qs` holds element `j` in its low
//! nibble and element `j + 16` in its high nibble. Quantizers: Q4_0, Q8_0 and
//! Q8_1 (`quantize_row_*_ref`).

use super::float::{F16Le, roundf};
use super::{QuantBlock, QuantizeBlock};
use crate::gguf::GgmlType;
use bytemuck::{Pod, Zeroable};

/// Q4_0 (18 bytes, 32 weights): `x = d · (q − 8)`, q in 0..16.
/// ```text
/// 0  d   f16 scale
/// 2  qs  16 bytes: element j low nibble, element j+16 high nibble
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: F16Le,
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// Q4_1 (20 bytes, 32 weights): `x = d · q + m`, q in 0..16.
/// ```text
/// 0  d   f16 scale
/// 2  m   f16 minimum
/// 4  qs  16 bytes of nibbles (as Q4_0)
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// Q5_0 (22 bytes, 32 weights): `x = d · (q − 16)`, q in 0..32.
/// ```text
/// 0  d   f16 scale
/// 2  qh  u32 (little-endian): bit j is the fifth bit of element j
/// 6  qs  16 bytes: the low four bits (as Q4_0)
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// Q5_1 (24 bytes, 32 weights): `x = d · q + m`, q in 0..32.
/// ```text
/// 0  d   f16 scale
/// 2  m   f16 minimum
/// 4  qh  u32 fifth bits (as Q5_0)
/// 8  qs  16 bytes of low nibbles
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: F16Le,
    pub m: F16Le,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Q8_0 (34 bytes, 32 values): `x = d · q`, q in −127..=127.
/// ```text
/// 0  d   f16 scale (max |x| / 127)
/// 2  qs  32 × i8
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: F16Le,
    pub qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// Q8_1 (36 bytes, 32 values): Q8_0 plus the f16 of `d · Σq`, which the
/// Q4_1/Q5_1 dot products use to apply the weights' minimum.
/// ```text
/// 0  d   f16 scale
/// 2  s   f16 d · sum(qs)
/// 4  qs  32 × i8
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: F16Le,
    pub s: F16Le,
    pub qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

/// The fifth bits of Q5_0/Q5_1 as `(bit of element j, bit of element j+16)`,
/// each already shifted to 0x10 (`dequantize_row_q5_0`).
#[inline]
fn q5_high_bits(qh: [u8; 4], j: usize) -> (u8, u8) {
    let qh = u32::from_le_bytes(qh);
    let lo = (((qh >> j) << 4) & 0x10) as u8;
    let hi = ((qh >> (j + 12)) & 0x10) as u8;
    (lo, hi)
}

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_q4_0`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (i32::from(q & 0x0f) - 8) as f32 * d;
            out[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ4_0 {
    /// `quantize_row_q4_0_ref`: the signed value of largest magnitude maps to
    /// −8, and `q = min(15, trunc(x/d + 8.5))`.
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..32];
        let (mut amax, mut max) = (0.0_f32, 0.0_f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // `(int8_t)(x + 8.5f)` truncates toward zero; `as i8` does too (and
        // saturates where C would be undefined).
        let q = |v: f32| (v * id + 8.5) as i8;
        let mut qs = [0u8; 16];
        for (j, byte) in qs.iter_mut().enumerate() {
            let lo = q(x[j]).min(15) as u8;
            let hi = q(x[j + 16]).min(15) as u8;
            *byte = lo | (hi << 4);
        }
        Self {
            d: F16Le::from_f32(d),
            qs,
        }
    }
}

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_q4_1`.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = f32::from(q & 0x0f) * d + m;
            out[j + 16] = f32::from(q >> 4) * d + m;
        }
    }
}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_q5_0`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            let (h0, h1) = q5_high_bits(self.qh, j);
            out[j] = (i32::from((q & 0x0f) | h0) - 16) as f32 * d;
            out[j + 16] = (i32::from((q >> 4) | h1) - 16) as f32 * d;
        }
    }
}

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_q5_1`.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            let (h0, h1) = q5_high_bits(self.qh, j);
            out[j] = f32::from((q & 0x0f) | h0) * d + m;
            out[j + 16] = f32::from((q >> 4) | h1) * d + m;
        }
    }
}

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_q8_0`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// The shared core of `quantize_row_q8_0_ref` and `quantize_row_q8_1_ref`:
/// `d = max|x| / 127`, `q = roundf(x / d)` (halves away from zero).
fn quantize_q8(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x[..32].iter().fold(0.0_f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = roundf(v * id) as i8;
    }
    (d, qs)
}

impl QuantizeBlock for BlockQ8_0 {
    /// `quantize_row_q8_0_ref`.
    fn quantize(src: &[f32]) -> Self {
        let (d, qs) = quantize_q8(src);
        Self {
            d: F16Le::from_f32(d),
            qs,
        }
    }
}

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMENTS: usize = 32;
    /// `d · q`, as Q8_0 (ggml has no row dequantizer for Q8_1; `s` is
    /// redundant).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_1 {
    /// `quantize_row_q8_1_ref`: Q8_0's rounding, plus `s = f16(Σq · d)` with
    /// the f32 `d` from before its f16 rounding.
    fn quantize(src: &[f32]) -> Self {
        let (d, qs) = quantize_q8(src);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        Self {
            d: F16Le::from_f32(d),
            s: F16Le::from_f32(sum as f32 * d),
            qs,
        }
    }
}
