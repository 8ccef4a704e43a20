//! Activation quantization for the integer dot products, as llama.cpp runs
//! it on x86 — which is not quite ggml's reference quantizer.
//!
//! ggml's `quantize_row_q8_0_ref`/`q8_1_ref` compute `id = 1/(amax/127)` and
//! round half away from zero (`roundf`); the x86 build that produced our
//! reference logits uses `quantize_row_q8_0`/`q8_1` from `arch/x86/quants.c`
//! instead: `id = 127/amax` and `_mm256_round_ps(_MM_ROUND_NEAREST)` (half to
//! even). The two differ by one ulp of `id` and on exact ties, which flips an
//! occasional activation by one step — enough to move Gemma 3 270M's logits
//! by 0.02 sd. We follow the x86 formulation everywhere (ARM's ggml uses
//! `1/d` with half-to-even rounding: the same except for that ulp). Q8_K has
//! no SIMD quantizer in ggml, so it uses the reference (`quant::quantize_row`).

use crate::gguf::GgmlType;
use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8K, F16Le, QuantizeBlock};

/// The scalar quantizer into `act_type`, for variants without one of their
/// own (so a batch is still quantized on the pool, see `matmul`).
pub(crate) fn scalar_quantizer(act_type: GgmlType) -> Option<super::Quantize> {
    match act_type {
        GgmlType::Q8_0 => Some(quantize_q8_0),
        GgmlType::Q8_1 => Some(quantize_q8_1),
        GgmlType::Q8_K => Some(quantize_q8_k),
        _ => None,
    }
}

/// Appends the Q8_0 blocks (or Q8_1: `s = f16(Σq · d)`) of `x` (whole
/// blocks of 32) to `out`, each block's `(d, qs, Σ qs)` from `block`: the
/// SIMD quantizers' common tail.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
#[inline(always)]
pub(super) fn append_q8_blocks(
    x: &[f32],
    q8_1: bool,
    out: &mut Vec<u8>,
    mut block: impl FnMut(&[f32; 32]) -> (f32, [i8; 32], i32),
) {
    let (blocks, _) = x.as_chunks::<32>();
    out.reserve(blocks.len() * if q8_1 { 36 } else { 34 });
    for b in blocks {
        let (d, qs, sum) = block(b);
        out.extend_from_slice(&F16Le::from_f32(d).0);
        if q8_1 {
            out.extend_from_slice(&F16Le::from_f32(sum as f32 * d).0);
        }
        out.extend_from_slice(bytemuck::cast_slice(&qs));
    }
}

/// Appends the Q8_K blocks of `x` (length a multiple of 256) to `out`:
/// ggml's reference, `quantize_row_q8_K_ref`.
pub fn quantize_q8_k(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(256) {
        out.extend_from_slice(bytemuck::bytes_of(&BlockQ8K::quantize(block)));
    }
}

/// The scale and reciprocal of one 32-element block: `d = amax/127`,
/// `id = 127/amax` (0 for an all-zero block).
#[inline]
fn scales(block: &[f32]) -> (f32, f32) {
    let amax = block.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (amax / 127.0, id)
}

/// Appends the Q8_0 blocks of `x` (length a multiple of 32) to `out`.
pub fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(32) {
        let (d, id) = scales(block);
        let mut q = BlockQ8_0 {
            d: F16Le::from_f32(d),
            qs: [0; 32],
        };
        for (q, &v) in q.qs.iter_mut().zip(block) {
            *q = (v * id).round_ties_even() as i8;
        }
        out.extend_from_slice(bytemuck::bytes_of(&q));
    }
}

/// Appends the Q8_1 blocks of `x` (Q8_0 plus `s = f16(d · Σq)`) to `out`.
pub fn quantize_q8_1(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(32) {
        let (d, id) = scales(block);
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(block) {
            *q = (v * id).round_ties_even() as i8;
        }
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        let q = BlockQ8_1 {
            d: F16Le::from_f32(d),
            s: F16Le::from_f32(d * sum as f32),
            qs,
        };
        out.extend_from_slice(bytemuck::bytes_of(&q));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even_with_127_over_amax() {
        // amax 127 makes id exactly 1: 2.5 → 2 and −3.5 → −4 (half to even);
        // ggml's reference would give 3 and −4.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let mut out = Vec::new();
        quantize_q8_0(&x, &mut out);
        let b: &BlockQ8_0 = bytemuck::from_bytes(&out);
        assert_eq!(&b.qs[..4], &[127, 2, -4, 0]);
        assert_eq!(b.d.to_f32(), 1.0);

        out.clear();
        quantize_q8_1(&x, &mut out);
        let b: &BlockQ8_1 = bytemuck::from_bytes(&out);
        assert_eq!(&b.qs[..4], &[127, 2, -4, 0]);
        assert_eq!(b.s.to_f32(), 125.0);
    }

    #[test]
    fn zero_block_is_zero() {
        let mut out = Vec::new();
        quantize_q8_0(&[0.0; 64], &mut out);
        assert!(out.iter().all(|&b| b == 0));
        assert_eq!(out.len(), 68);
    }
}
