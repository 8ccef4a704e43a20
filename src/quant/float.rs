//! Scalar building blocks every format shares: little-endian f16/f32/i16
//! fields with alignment 1 (so block structs can be viewed straight out of a
//! memory map), ggml's scalar conversions, ggml's `nearest_int`, and the
//! unquantized row types F32, F16 and BF16 as one-element "blocks".

use super::{QuantBlock, QuantizeBlock};
use crate::gguf::GgmlType;
use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

/// An IEEE half stored as its two little-endian bytes (ggml's `ggml_half`).
/// Alignment 1, so structs holding it have no padding and any byte offset works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    /// `GGML_FP16_TO_FP32`: exact (every half is an f32).
    #[inline]
    pub fn to_f32(self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.0)).to_f32()
    }

    /// `GGML_FP32_TO_FP16`: round to nearest, ties to even.
    #[inline]
    pub fn from_f32(x: f32) -> Self {
        Self(f16::from_f32(x).to_bits().to_le_bytes())
    }
}

/// An f32 stored as its four little-endian bytes (Q8_K's scale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F32Le(pub [u8; 4]);

impl F32Le {
    #[inline]
    pub fn to_f32(self) -> f32 {
        f32::from_le_bytes(self.0)
    }

    #[inline]
    pub fn from_f32(x: f32) -> Self {
        Self(x.to_le_bytes())
    }
}

/// An i16 stored as its two little-endian bytes (Q8_K's block sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct I16Le(pub [u8; 2]);

impl I16Le {
    #[inline]
    pub fn get(self) -> i16 {
        i16::from_le_bytes(self.0)
    }

    #[inline]
    pub fn new(v: i16) -> Self {
        Self(v.to_le_bytes())
    }
}

/// ggml's `nearest_int`: adds 1.5·2²³ so the float unit rounds the value to an
/// integer (ties to even) and reads it back from the mantissa bits. Valid for
/// |x| ≤ 4194303, the only range ggml calls it with; outside it the result is
/// garbage exactly as in ggml (never a panic).
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let bits = (x + 12_582_912.0_f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// C's `roundf`: halfway cases away from zero (Rust's `f32::round`).
#[inline]
pub fn roundf(x: f32) -> f32 {
    x.round()
}

/// `GGML_E8M0_TO_FP32_HALF`: an MXFP4 block scale 2^(e−127), halved because
/// ggml's `kvalues_mxfp4` table holds E2M1 values doubled. e = 0 and 1 are the
/// subnormals 2⁻¹²⁸ and 2⁻¹²⁷.
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000_u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// An F32 tensor element (4 little-endian bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockF32 {
    pub v: F32Le,
}
const _: () = assert!(size_of::<BlockF32>() == 4);

/// An F16 tensor element (IEEE half, 2 little-endian bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockF16 {
    pub v: F16Le,
}
const _: () = assert!(size_of::<BlockF16>() == 2);

/// A BF16 tensor element: the top 16 bits of an f32, 2 little-endian bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockBF16 {
    pub bits: [u8; 2],
}
const _: () = assert!(size_of::<BlockBF16>() == 2);

impl QuantBlock for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMENTS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.v.to_f32();
    }
}

impl QuantizeBlock for BlockF32 {
    fn quantize(src: &[f32]) -> Self {
        Self {
            v: F32Le::from_f32(src[0]),
        }
    }
}

impl QuantBlock for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMENTS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.v.to_f32();
    }
}

impl QuantizeBlock for BlockF16 {
    /// `ggml_fp32_to_fp16_row`: round to nearest even.
    fn quantize(src: &[f32]) -> Self {
        Self {
            v: F16Le::from_f32(src[0]),
        }
    }
}

impl QuantBlock for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMENTS: usize = 1;
    /// `GGML_BF16_TO_FP32`: the bits shifted into the top half of an f32.
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = bf16::from_bits(u16::from_le_bytes(self.bits)).to_f32();
    }
}

impl QuantizeBlock for BlockBF16 {
    /// `GGML_FP32_TO_BF16`: round to nearest even, NaNs made quiet (the `half`
    /// crate's conversion is bit-identical to ggml's).
    fn quantize(src: &[f32]) -> Self {
        Self {
            bits: bf16::from_f32(src[0]).to_bits().to_le_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-3.7), -4);
        assert_eq!(nearest_int(127.49), 127);
    }

    #[test]
    fn e8m0_half_is_two_to_e_minus_128() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        // Subnormals: 2^-127 and 2^-128 (powi would underflow getting there).
        assert_eq!(e8m0_to_f32_half(1), f32::from_bits(0x0040_0000));
        assert_eq!(e8m0_to_f32_half(0), f32::from_bits(0x0020_0000));
        assert_eq!(e8m0_to_f32_half(2), 2f32.powi(-126));
        assert_eq!(e8m0_to_f32_half(254), 2f32.powi(126));
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        let q = |x: f32| BlockBF16::quantize(&[x]).bits;
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even (1.0) wins.
        assert_eq!(q(1.0 + 2f32.powi(-8)), 0x3f80_u16.to_le_bytes());
        assert_eq!(q(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82_u16.to_le_bytes());
        let nan = f32::from_bits(0x7f80_0001);
        assert_eq!(u16::from_le_bytes(q(nan)), 0x7fc0);
    }
}
