//! The table of row dot products for every weight type, and which activation
//! format each one takes (ggml's `vec_dot_type`).
//!
//! ggml never multiplies quantized weights by f32 activations directly: the
//! activation row is first quantized to the type's `vec_dot_type` (Q8_0 for the
//! 32-element formats, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants and IQ4_XS,
//! f16/bf16 for those float types), and the dot product runs on integers. To
//! match llama.cpp's numbers we do the same.

use crate::gguf::GgmlType;
use crate::quant::{self, QuantBlock};
use half::{bf16, f16};

/// Dot product of one weight row with one activation row, both raw bytes: `w`
/// holds `n` elements in the weight type, `x` the same `n` elements in the
/// type's [`vec_dot_type`]. `n` is a multiple of the block size and both slices
/// have exactly the right length (checked once by the callers in `matmul`).
pub type VecDot = fn(n: usize, w: &[u8], x: &[u8]) -> f32;

/// A [`VecDot`] of one weight row with four tokens' activations at once.
pub type VecDot4 = fn(n: usize, w: &[u8], xs: [&[u8]; 4]) -> [f32; 4];

/// Weight rows per call of a [`VecDotRows`].
pub const ROWS: usize = 4;

/// A [`VecDot`] of [`ROWS`] consecutive weight rows (`row_bytes` each, in
/// `w`) with one token's activations at once.
pub type VecDotRows = fn(n: usize, w: &[u8], row_bytes: usize, x: &[u8]) -> [f32; ROWS];

/// The activation format the dot product of weight type `ty` consumes, or
/// `None` when `ty` cannot be used as a weight.
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    Some(match ty {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => Q8_K,
        _ => return None,
    })
}

/// One [`VecDot`] per weight type.
#[derive(Debug, Clone, Copy)]
pub struct QuantDots {
    pub f32: VecDot,
    pub f16: VecDot,
    pub bf16: VecDot,
    pub q4_0: VecDot,
    pub q4_1: VecDot,
    pub q5_0: VecDot,
    pub q5_1: VecDot,
    pub q8_0: VecDot,
    pub q2_k: VecDot,
    pub q3_k: VecDot,
    pub q4_k: VecDot,
    pub q5_k: VecDot,
    pub q6_k: VecDot,
    pub iq4_nl: VecDot,
    pub iq4_xs: VecDot,
    pub mxfp4: VecDot,
}

impl QuantDots {
    /// The dot product for weight type `ty`, if it can be a weight.
    pub fn get(&self, ty: GgmlType) -> Option<VecDot> {
        use GgmlType::*;
        Some(match ty {
            F32 => self.f32,
            F16 => self.f16,
            BF16 => self.bf16,
            Q4_0 => self.q4_0,
            Q4_1 => self.q4_1,
            Q5_0 => self.q5_0,
            Q5_1 => self.q5_1,
            Q8_0 => self.q8_0,
            Q2_K => self.q2_k,
            Q3_K => self.q3_k,
            Q4_K => self.q4_k,
            Q5_K => self.q5_k,
            Q6_K => self.q6_k,
            IQ4_NL => self.iq4_nl,
            IQ4_XS => self.iq4_xs,
            MXFP4 => self.mxfp4,
            _ => return None,
        })
    }

    /// The scalar reference: every entry defined by dequantizing both rows
    /// block by block and summing the products in f32. Family modules replace
    /// entries with ggml's integer formulation and SIMD versions.
    pub(super) fn reference() -> Self {
        use crate::quant::*;
        QuantDots {
            f32: dot_floats::<f32>,
            f16: dot_floats::<f16>,
            bf16: dot_floats::<bf16>,
            q4_0: dot_dequantized::<BlockQ4_0, BlockQ8_0>,
            q4_1: dot_dequantized::<BlockQ4_1, BlockQ8_1>,
            q5_0: dot_dequantized::<BlockQ5_0, BlockQ8_0>,
            q5_1: dot_dequantized::<BlockQ5_1, BlockQ8_1>,
            q8_0: dot_dequantized::<BlockQ8_0, BlockQ8_0>,
            q2_k: dot_dequantized::<BlockQ2K, BlockQ8K>,
            q3_k: dot_dequantized::<BlockQ3K, BlockQ8K>,
            q4_k: dot_dequantized::<BlockQ4K, BlockQ8K>,
            q5_k: dot_dequantized::<BlockQ5K, BlockQ8K>,
            q6_k: dot_dequantized::<BlockQ6K, BlockQ8K>,
            iq4_nl: dot_dequantized::<BlockIQ4NL, BlockQ8_0>,
            iq4_xs: dot_dequantized::<BlockIQ4XS, BlockQ8K>,
            mxfp4: dot_dequantized::<BlockMXFP4, BlockQ8_0>,
        }
    }
}

/// Reads a row of `T` from bytes that may not be aligned for `T`.
pub(super) fn as_slice<T: bytemuck::Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(
            bytes
                .chunks_exact(size_of::<T>())
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        ),
    }
}

/// Runs a typed float dot product on raw row bytes (for the [`QuantDots`]
/// float entries of the SIMD modules).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
pub(super) fn on_bytes<T: bytemuck::Pod>(
    n: usize,
    w: &[u8],
    x: &[u8],
    dot: fn(&[T], &[T]) -> f32,
) -> f32 {
    let (w, x) = (as_slice::<T>(w), as_slice::<T>(x));
    dot(&w[..n.min(w.len())], &x[..n.min(x.len())])
}

/// A float element that converts to f32.
pub(super) trait Float: bytemuck::Pod {
    fn to_f32(self) -> f32;
}
impl Float for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}
impl Float for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}
impl Float for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

fn dot_floats<T: Float>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = (as_slice::<T>(w), as_slice::<T>(x));
    w.iter()
        .zip(x.iter())
        .take(n)
        .map(|(a, b)| a.to_f32() * b.to_f32())
        .sum()
}

/// Σ over blocks of Σ w·x, both sides dequantized: the reference meaning of
/// every quantized dot product.
fn dot_dequantized<W: QuantBlock, X: QuantBlock>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(
        W::ELEMENTS % X::ELEMENTS,
        0,
        "activation blocks tile weight blocks"
    );
    let (w, x) = (as_slice::<W>(w), as_slice::<X>(x));
    let mut wf = vec![0f32; W::ELEMENTS];
    let mut xf = vec![0f32; W::ELEMENTS];
    let per = W::ELEMENTS / X::ELEMENTS;
    let mut sum = 0f32;
    for (i, wb) in w.iter().enumerate().take(n / W::ELEMENTS) {
        wb.dequantize(&mut wf);
        for (j, xb) in x[i * per..(i + 1) * per].iter().enumerate() {
            xb.dequantize(&mut xf[j * X::ELEMENTS..(j + 1) * X::ELEMENTS]);
        }
        sum += wf.iter().zip(&xf).map(|(a, b)| a * b).sum::<f32>();
    }
    sum
}

/// Quantizes an f32 activation row into `ty`'s activation format.
pub fn quantize_activations(
    weight_type: GgmlType,
    x: &[f32],
    out: &mut Vec<u8>,
) -> Result<(), quant::QuantError> {
    let target = vec_dot_type(weight_type).ok_or(quant::QuantError::UnsupportedType {
        tensor: String::new(),
        ty: weight_type,
        action: "multiplied",
    })?;
    out.clear();
    match target {
        // llama.cpp's x86 activation quantizers (see `activations`).
        GgmlType::Q8_0 if x.len().is_multiple_of(32) => super::activations::quantize_q8_0(x, out),
        GgmlType::Q8_1 if x.len().is_multiple_of(32) => super::activations::quantize_q8_1(x, out),
        _ => return quant::quantize_row(target, x, out),
    }
    Ok(())
}
