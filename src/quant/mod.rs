//! Quantized block formats and their scalar reference, bit-exact with ggml.
//!
//! A ggml tensor row is a sequence of fixed-size blocks; each block packs
//! [`QuantBlock::ELEMENTS`] weights with their scales. Every supported block
//! type is a `#[repr(C)]` struct of alignment 1 whose bytes are exactly ggml's,
//! so a row straight out of a memory map is viewed as `&[Block]` with
//! `bytemuck` (no copies, no `unsafe`).
//!
//! - [`float`]: little-endian scalar fields, ggml's conversions and rounding
//!   (`nearest_int`, f16/bf16, e8m0), and the F32/F16/BF16 rows;
//! - [`legacy`]: the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1;
//! - [`kquants`]: the 256-element super-blocks Q2_K … Q6_K and Q8_K;
//! - [`kquants_ref`]: ggml's reference quantizers for Q4_K, Q5_K and Q6_K;
//! - [`iq`]: the non-linear 4-bit formats IQ4_NL, IQ4_XS and MXFP4.
//! - [`convert`]: whole-file conversion (`rusty-llm quantize`), with llama.cpp's
//!   per-tensor type rules.
//!
//! The rest of the project uses the row functions below; the block traits are
//! the reference the SIMD kernels are tested against.

pub mod convert;
pub mod float;
pub mod iq;
pub mod kquants;
pub mod kquants_ref;
pub mod legacy;

use crate::gguf::{GgmlType, TensorView};
use bytemuck::{Pod, Zeroable};

pub use float::{BlockBF16, BlockF16, BlockF32, F16Le};
pub use iq::{BlockIQ4NL, BlockIQ4XS, BlockMXFP4};
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// One block of a ggml type: its bytes are ggml's block struct, byte for byte.
pub trait QuantBlock: Pod + Zeroable {
    /// The ggml type whose blocks these are.
    const TYPE: GgmlType;
    /// Weights per block.
    const ELEMENTS: usize;

    /// Writes the block's [`Self::ELEMENTS`] values to `out[..ELEMENTS]`
    /// exactly as ggml's `dequantize_row_*` does (same operations, same order).
    ///
    /// Panics if `out` is shorter than `ELEMENTS`; the row functions
    /// ([`dequantize_row`]) check lengths and never panic.
    fn dequantize(&self, out: &mut [f32]);
}

/// A block type we can quantize to, with ggml's reference quantizer
/// (`quantize_row_*_ref`), bit for bit.
pub trait QuantizeBlock: QuantBlock {
    /// Quantizes `src[..ELEMENTS]`. Panics if `src` is shorter; the row
    /// function ([`quantize_row`]) checks lengths and never panics.
    fn quantize(src: &[f32]) -> Self;
}

/// Why a row or tensor could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{}ggml type {ty} cannot be {action} by this build", tensor_prefix(.tensor))]
    UnsupportedType {
        /// The tensor's name, empty when the caller converted a bare row.
        tensor: String,
        ty: GgmlType,
        /// `"dequantized"` or `"quantized to"`.
        action: &'static str,
    },
    #[error(
        "{}a row of {len} values is not a whole number of {ty} blocks ({block} values each)",
        tensor_prefix(.tensor)
    )]
    RaggedRow {
        tensor: String,
        ty: GgmlType,
        len: usize,
        block: usize,
    },
    #[error(
        "{}{elements} {ty} values take {expected} bytes, but {actual} were given",
        tensor_prefix(.tensor)
    )]
    ByteLength {
        tensor: String,
        ty: GgmlType,
        elements: usize,
        expected: usize,
        actual: usize,
    },
}

fn tensor_prefix(tensor: &str) -> String {
    if tensor.is_empty() {
        String::new()
    } else {
        format!("tensor {tensor}: ")
    }
}

impl QuantError {
    /// The same error, naming the tensor it happened in.
    pub fn in_tensor(mut self, name: &str) -> Self {
        let (QuantError::UnsupportedType { tensor, .. }
        | QuantError::RaggedRow { tensor, .. }
        | QuantError::ByteLength { tensor, .. }) = &mut self;
        *tensor = name.to_owned();
        self
    }
}

/// Whether [`dequantize_row`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
            | MXFP4
    )
}

/// Whether a tensor of type `ty` can be used as model weights: everything we
/// dequantize except the activation-only formats Q8_1 and Q8_K (ggml never
/// stores weights in them).
pub fn is_supported(ty: GgmlType) -> bool {
    can_dequantize(ty) && !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K)
}

/// Whether [`quantize_row`] handles `ty`: the activation formats Q8_0, Q8_1,
/// Q8_K, the weight formats Q4_0, Q4_K, Q5_K, Q6_K, and F32/F16/BF16.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q8_0 | Q8_1 | Q4_K | Q5_K | Q6_K | Q8_K
    )
}

/// Dequantizes one row (or several back-to-back rows) of type `ty`:
/// `out.len()` values from `bytes`, which must hold exactly that many.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    match ty {
        F32 => dequantize_blocks::<BlockF32>(bytes, out),
        F16 => dequantize_blocks::<BlockF16>(bytes, out),
        BF16 => dequantize_blocks::<BlockBF16>(bytes, out),
        Q4_0 => dequantize_blocks::<BlockQ4_0>(bytes, out),
        Q4_1 => dequantize_blocks::<BlockQ4_1>(bytes, out),
        Q5_0 => dequantize_blocks::<BlockQ5_0>(bytes, out),
        Q5_1 => dequantize_blocks::<BlockQ5_1>(bytes, out),
        Q8_0 => dequantize_blocks::<BlockQ8_0>(bytes, out),
        Q8_1 => dequantize_blocks::<BlockQ8_1>(bytes, out),
        Q2_K => dequantize_blocks::<BlockQ2K>(bytes, out),
        Q3_K => dequantize_blocks::<BlockQ3K>(bytes, out),
        Q4_K => dequantize_blocks::<BlockQ4K>(bytes, out),
        Q5_K => dequantize_blocks::<BlockQ5K>(bytes, out),
        Q6_K => dequantize_blocks::<BlockQ6K>(bytes, out),
        Q8_K => dequantize_blocks::<BlockQ8K>(bytes, out),
        IQ4_NL => dequantize_blocks::<BlockIQ4NL>(bytes, out),
        IQ4_XS => dequantize_blocks::<BlockIQ4XS>(bytes, out),
        MXFP4 => dequantize_blocks::<BlockMXFP4>(bytes, out),
        IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ3_S | IQ2_S | IQ1_M | TQ1_0 | TQ2_0 | I8 | I16
        | I32 | I64 | F64 => Err(QuantError::UnsupportedType {
            tensor: String::new(),
            ty,
            action: "dequantized",
        }),
    }
}

/// Quantizes `src` (one or several back-to-back rows) to `ty`, appending the
/// blocks' bytes to `out`. `src.len()` must be a whole number of blocks.
pub fn quantize_row(ty: GgmlType, src: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    use GgmlType::*;
    match ty {
        F32 => quantize_blocks::<BlockF32>(src, out),
        F16 => quantize_blocks::<BlockF16>(src, out),
        BF16 => quantize_blocks::<BlockBF16>(src, out),
        Q4_0 => quantize_blocks::<BlockQ4_0>(src, out),
        Q8_0 => quantize_blocks::<BlockQ8_0>(src, out),
        Q8_1 => quantize_blocks::<BlockQ8_1>(src, out),
        Q4_K => quantize_blocks::<BlockQ4K>(src, out),
        Q5_K => quantize_blocks::<BlockQ5K>(src, out),
        Q6_K => quantize_blocks::<BlockQ6K>(src, out),
        Q8_K => quantize_blocks::<BlockQ8K>(src, out),
        _ => Err(QuantError::UnsupportedType {
            tensor: String::new(),
            ty,
            action: "quantized to",
        }),
    }
}

/// Dequantizes a whole tensor into a new buffer; errors name the tensor.
pub fn dequantize_tensor(view: &TensorView<'_>) -> Result<Vec<f32>, QuantError> {
    let info = view.info;
    let fail = |e: QuantError| e.in_tensor(&info.name);
    if !can_dequantize(info.ggml_type) {
        return Err(fail(QuantError::UnsupportedType {
            tensor: String::new(),
            ty: info.ggml_type,
            action: "dequantized",
        }));
    }
    // Check the byte count before allocating, so a hostile element count
    // cannot ask for more memory than the file backs.
    let elements = usize::try_from(info.elements()).unwrap_or(usize::MAX);
    let expected = expected_bytes(info.ggml_type, elements).map_err(fail)?;
    if expected != view.data.len() {
        return Err(fail(QuantError::ByteLength {
            tensor: String::new(),
            ty: info.ggml_type,
            elements,
            expected,
            actual: view.data.len(),
        }));
    }
    let mut out = vec![0.0; elements];
    dequantize_row(info.ggml_type, view.data, &mut out).map_err(fail)?;
    Ok(out)
}

/// Bytes that `elements` values of `ty` take, or the error for a ragged count.
fn expected_bytes(ty: GgmlType, elements: usize) -> Result<usize, QuantError> {
    let block = ty.block_elements() as usize;
    let per_block = ty.block_bytes() as usize;
    if !elements.is_multiple_of(block) {
        return Err(QuantError::RaggedRow {
            tensor: String::new(),
            ty,
            len: elements,
            block,
        });
    }
    // elements / block * per_block never exceeds 4.5 × elements / … for any
    // type, but a hostile count near usize::MAX must still not wrap.
    (elements / block)
        .checked_mul(per_block)
        .ok_or(QuantError::ByteLength {
            tensor: String::new(),
            ty,
            elements,
            expected: usize::MAX,
            actual: 0,
        })
}

fn dequantize_blocks<B: QuantBlock>(bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let expected = expected_bytes(B::TYPE, out.len())?;
    let length_error = || QuantError::ByteLength {
        tensor: String::new(),
        ty: B::TYPE,
        elements: out.len(),
        expected,
        actual: bytes.len(),
    };
    if bytes.len() != expected {
        return Err(length_error());
    }
    // Alignment-1 structs with no padding: the cast succeeds for any address.
    let blocks: &[B] = bytemuck::try_cast_slice(bytes).map_err(|_| length_error())?;
    for (block, values) in blocks.iter().zip(out.chunks_exact_mut(B::ELEMENTS)) {
        block.dequantize(values);
    }
    Ok(())
}

fn quantize_blocks<B: QuantizeBlock>(src: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    let expected = expected_bytes(B::TYPE, src.len())?;
    out.reserve(expected);
    for values in src.chunks_exact(B::ELEMENTS) {
        out.extend_from_slice(bytemuck::bytes_of(&B::quantize(values)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_geometry<B: QuantBlock>() {
        assert_eq!(B::ELEMENTS as u64, B::TYPE.block_elements(), "{}", B::TYPE);
        assert_eq!(size_of::<B>() as u64, B::TYPE.block_bytes(), "{}", B::TYPE);
        assert_eq!(align_of::<B>(), 1, "{}", B::TYPE);
    }

    #[test]
    fn block_structs_match_ggml_geometry() {
        check_geometry::<BlockF32>();
        check_geometry::<BlockF16>();
        check_geometry::<BlockBF16>();
        check_geometry::<BlockQ4_0>();
        check_geometry::<BlockQ4_1>();
        check_geometry::<BlockQ5_0>();
        check_geometry::<BlockQ5_1>();
        check_geometry::<BlockQ8_0>();
        check_geometry::<BlockQ8_1>();
        check_geometry::<BlockQ2K>();
        check_geometry::<BlockQ3K>();
        check_geometry::<BlockQ4K>();
        check_geometry::<BlockQ5K>();
        check_geometry::<BlockQ6K>();
        check_geometry::<BlockQ8K>();
        check_geometry::<BlockIQ4NL>();
        check_geometry::<BlockIQ4XS>();
        check_geometry::<BlockMXFP4>();
    }

    #[test]
    fn every_type_either_dequantizes_or_says_unsupported() {
        for ty in GgmlType::ALL {
            let block = ty.block_elements() as usize;
            let bytes = vec![0u8; ty.block_bytes() as usize];
            let mut out = vec![0.0; block];
            let r = dequantize_row(ty, &bytes, &mut out);
            assert_eq!(r.is_ok(), can_dequantize(ty), "{ty}");
            let r = quantize_row(ty, &out, &mut Vec::new());
            assert_eq!(r.is_ok(), can_quantize(ty), "{ty}");
        }
    }
}
