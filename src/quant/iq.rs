//! 4-bit formats whose levels come from a fixed non-uniform table rather
//! than `q − offset`: IQ4_NL and IQ4_XS (`kvalues_iq4nl`, levels spaced for
//! bell-shaped weights) and MXFP4 (OCP microscaling: E2M1 values with a shared
//! power-of-two E8M0 scale). Dequantization only.

use super::QuantBlock;
use super::float::{F16Le, e8m0_to_f32_half};
use super::kquants::QK_K;
use crate::gguf::GgmlType;
use bytemuck::{Pod, Zeroable};

/// ggml's `kvalues_iq4nl`: the 16 levels of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `kvalues_mxfp4`: the E2M1 values 0, 0.5, 1, 1.5, 2, 3, 4, 6 and
/// their negatives, doubled to integers (the scale is halved to match).
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// IQ4_NL (18 bytes, 32 weights): `x = d · kvalues_iq4nl[q]`.
/// ```text
/// 0  d   f16 scale
/// 2  qs  16 bytes: element j low nibble, element j+16 high nibble
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: F16Le,
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockIQ4NL>() == 18);

/// IQ4_XS (136 bytes, 256 weights): IQ4_NL's levels with a 6-bit scale per
/// 32-weight sub-block: `x = d · (ls − 32) · kvalues_iq4nl[q]`.
/// ```text
///  0  d         f16 super-block scale
///  2  scales_h  u16 (little-endian): bits 2i..2i+2 are the top bits of ls_i
///  4  scales_l  4 bytes: low nibble of ls_i in byte i/2, nibble i%2
///  8  qs        128 bytes: per sub-block 16 bytes, weights j (low nibble)
///               and j+16 (high nibble)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: F16Le,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockIQ4XS>() == 136);

/// MXFP4 (17 bytes, 32 weights): `x = 2^(e−128) · kvalues_mxfp4[q]`.
/// ```text
/// 0  e   E8M0 shared exponent (biased by 127)
/// 1  qs  16 bytes: element j low nibble, element j+16 high nibble
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockMXFP4 {
    pub e: u8,
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockMXFP4>() == 17);

/// The 32 values `d · table[q]` of a nibble-packed 32-weight group.
#[inline]
fn dequantize_nibbles(d: f32, table: &[i8; 16], qs: &[u8], out: &mut [f32]) {
    for (j, &q) in qs.iter().enumerate() {
        out[j] = d * f32::from(table[usize::from(q & 0x0f)]);
        out[j + 16] = d * f32::from(table[usize::from(q >> 4)]);
    }
}

impl QuantBlock for BlockIQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_iq4_nl`.
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_nibbles(self.d.to_f32(), &KVALUES_IQ4NL, &self.qs, out);
    }
}

impl QuantBlock for BlockIQ4XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const ELEMENTS: usize = QK_K;
    /// `dequantize_row_iq4_xs`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let scales_h = u16::from_le_bytes(self.scales_h);
        for (ib, (qs, y)) in self
            .qs
            .chunks_exact(16)
            .zip(out.chunks_exact_mut(32))
            .enumerate()
        {
            let low = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let high = ((scales_h >> (2 * ib)) & 3) as u8;
            let ls = i32::from(low | (high << 4));
            let dl = d * (ls - 32) as f32;
            dequantize_nibbles(dl, &KVALUES_IQ4NL, qs, y);
        }
    }
}

impl QuantBlock for BlockMXFP4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    const ELEMENTS: usize = 32;
    /// `dequantize_row_mxfp4`: `x0 · d` with `d = GGML_E8M0_TO_FP32_HALF(e)`.
    fn dequantize(&self, out: &mut [f32]) {
        let d = e8m0_to_f32_half(self.e);
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = f32::from(KVALUES_MXFP4[usize::from(q & 0x0f)]) * d;
            out[j + 16] = f32::from(KVALUES_MXFP4[usize::from(q >> 4)]) * d;
        }
    }
}
