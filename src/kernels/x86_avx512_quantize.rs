//! AVX-512 activation quantizers for Q8_0 and Q8_1, bit for bit equal to
//! `kernels::activations` (llama.cpp's x86 formulation, the scalar
//! definition), and for Q8_K, equal to `quantize_row_q8_K_ref` (see
//! [`quantize_q8_k`]). Q8_0 and Q8_1:
//!
//! - `amax` = max |x| with NaN ignored (Rust's `f32::max`; `vmaxps` returns
//!   its second operand when the first is NaN, so the running max goes
//!   second);
//! - `d = amax / 127`, `id = 127 / amax` (0 when `amax` is 0), in scalar f32;
//! - `q = round_ties_even(x · id) as i8`: `vrndscaleps` to nearest even;
//!   Rust's saturating `as i8` as a clamp to [−128, 127] with NaN sent to 0
//!   first.
//!
//! Safety: every function is `#[target_feature(enable = "avx512f,avx512bw,
//! avx512vl")]`; `install` runs after `dispatch` confirmed those features.

use super::activations::append_q8_blocks;
use super::dispatch::{ActQuantizers, Kernels};
use crate::quant::BlockQ8K;
use crate::quant::float::{F32Le, I16Le};
use bytemuck::Zeroable;
use std::arch::x86_64::*;

pub(super) fn install(k: &mut Kernels) {
    k.quantizers = ActQuantizers {
        q8_0: Some(quantize_q8_0),
        q8_1: Some(quantize_q8_1),
        q8_k: Some(quantize_q8_k),
    };
}

/// One block of 32: `(d, qs, Σ qs)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn block(x: &[f32; 32]) -> (f32, [i8; 32], i32) {
    // SAFETY: `x` is 32 readable f32s; unaligned loads.
    let v = unsafe {
        [
            _mm512_loadu_ps(x.as_ptr()),
            _mm512_loadu_ps(x.as_ptr().add(16)),
        ]
    };
    let m = _mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_setzero_ps());
    let m = _mm512_max_ps(_mm512_abs_ps(v[1]), m);
    let amax = _mm512_reduce_max_ps(m);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm512_set1_ps(id);
    let (lo, hi) = (_mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
    let mut qs = [0i8; 32];
    let mut sum = _mm512_setzero_si512();
    for (h, &v) in v.iter().enumerate() {
        let x = _mm512_mul_ps(v, idv);
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r);
        let r = _mm512_maskz_mov_ps(ordered, r);
        let r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
        let q = _mm512_cvtps_epi32(r);
        sum = _mm512_add_epi32(sum, q);
        // SAFETY: 16 bytes into `qs[16h..16h + 16]`.
        unsafe { _mm_storeu_si128(qs.as_mut_ptr().add(16 * h).cast(), _mm512_cvtepi32_epi8(q)) };
    }
    (d, qs, _mm512_reduce_add_epi32(sum))
}

/// `activations::quantize_q8_0`, appended to `out`.
pub(super) fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn inner(x: &[f32], out: &mut Vec<u8>) {
        append_q8_blocks(x, false, out, |b| block(b));
    }
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { inner(x, out) }
}

/// `activations::quantize_q8_1` (`s = f16(Σq · d)`, the f32 `d`), appended to `out`.
pub(super) fn quantize_q8_1(x: &[f32], out: &mut Vec<u8>) {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn inner(x: &[f32], out: &mut Vec<u8>) {
        append_q8_blocks(x, true, out, |b| block(b));
    }
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { inner(x, out) }
}

/// `BlockQ8K::quantize` (`quantize_row_q8_K_ref`) for whole blocks of 256,
/// appended to `out`, in its own arithmetic: `max` the first value of
/// largest magnitude (NaN never is), `iscale = −127 / max` and `d = 1 /
/// iscale` in scalar f32, `q = min(127, nearest_int(iscale · x))` through
/// the same `+ 1.5·2²³` bit trick (so NaN and infinities give what the
/// scalar code gives), the sums of each 16 quants. The scalar form took
/// 2.7 ns an element, 6% of a 1B Q4_K model's prefill.
pub(super) fn quantize_q8_k(x: &[f32], out: &mut Vec<u8>) {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn inner(x: &[f32], out: &mut Vec<u8>) {
        let (blocks, _) = x.as_chunks::<256>();
        out.reserve(blocks.len() * size_of::<BlockQ8K>());
        for b in blocks {
            // SAFETY: 16 loads of 16 f32 inside the block.
            let v: [__m512; 16] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_ps(b.as_ptr().add(16 * i)) });
            let m = v.iter().fold(_mm512_setzero_ps(), |m, &v| {
                _mm512_max_ps(_mm512_abs_ps(v), m)
            });
            let amax = _mm512_reduce_max_ps(m);
            let mut block = BlockQ8K::zeroed();
            if amax == 0.0 {
                out.extend_from_slice(bytemuck::bytes_of(&block));
                continue;
            }
            // The first element of largest magnitude: the first vector with
            // one, its lowest lane.
            let at = v
                .iter()
                .enumerate()
                .find_map(|(i, &v)| {
                    let hits =
                        _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(v), _mm512_set1_ps(amax));
                    (hits != 0).then(|| 16 * i + hits.trailing_zeros() as usize)
                })
                .expect("amax is one of the magnitudes");
            let max = b[at];
            let iscale = -127.0 / max;
            let (scale, magic) = (_mm512_set1_ps(iscale), _mm512_set1_ps(12_582_912.0));
            let (mantissa, bias, top) = (
                _mm512_set1_epi32(0x007f_ffff),
                _mm512_set1_epi32(0x0040_0000),
                _mm512_set1_epi32(127),
            );
            for (i, &v) in v.iter().enumerate() {
                let shifted = _mm512_castps_si512(_mm512_add_ps(_mm512_mul_ps(scale, v), magic));
                let q = _mm512_sub_epi32(_mm512_and_si512(shifted, mantissa), bias);
                let q = _mm512_min_epi32(q, top);
                block.bsums[i] = I16Le::new(_mm512_reduce_add_epi32(q) as i16);
                // SAFETY: 16 bytes into `qs[16i..16i + 16]`.
                unsafe {
                    _mm_storeu_si128(
                        block.qs.as_mut_ptr().add(16 * i).cast(),
                        _mm512_cvtepi32_epi8(q),
                    )
                };
            }
            block.d = F32Le::from_f32(1.0 / iscale);
            out.extend_from_slice(bytemuck::bytes_of(&block));
        }
    }
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { inner(x, out) }
}

#[cfg(test)]
/// Blocks that exercise every rounding path: random scales, exact
/// halves (amax 127 makes `id` 1), zeros, signed zeros, subnormals,
/// huge values, infinities and NaNs.
pub(super) fn test_inputs() -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for seed in 0..200u64 {
        let scale = [1e-3f32, 1.0, 37.5, 1e30][seed as usize % 4];
        let v: Vec<f32> = crate::kernels::test_rng::values(64, seed)
            .iter()
            .map(|v| v * scale)
            .collect();
        out.push(v);
    }
    let halves: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).chain([127.0]).collect();
    let mut h = halves[1..].to_vec();
    h.truncate(32);
    out.push(h.clone());
    out.push(h.iter().map(|v| -v).collect());
    out.push(vec![0.0; 32]);
    out.push(
        (0..32)
            .map(|i| if i % 2 == 0 { -0.0 } else { 0.0 })
            .collect(),
    );
    out.push((0..32).map(|i| f32::from_bits(i + 1)).collect());
    out.push((0..32).map(|i| (i as f32 - 16.0) * 1e37).collect());
    let mut specials: Vec<f32> = (0..32).map(|i| i as f32).collect();
    specials[3] = f32::INFINITY;
    out.push(specials.clone());
    specials[3] = f32::NAN;
    out.push(specials.clone());
    specials[5] = f32::NEG_INFINITY;
    out.push(specials);
    out.push(vec![f32::NAN; 32]);
    out
}

/// Blocks of 256 for the Q8_K quantizers: [`test_inputs`] run together,
/// ties for the largest magnitude of either sign, zeros, and NaNs with a
/// payload (whose bits the `+ 1.5·2²³` trick turns into quants).
#[cfg(test)]
pub(super) fn test_q8_k_blocks() -> Vec<Vec<f32>> {
    let mut blocks: Vec<Vec<f32>> = test_inputs()
        .concat()
        .chunks_exact(256)
        .map(<[f32]>::to_vec)
        .collect();
    let mut tied: Vec<f32> = (0..256).map(|i| (i % 7) as f32 - 3.0).collect();
    tied[40] = -9.0;
    tied[200] = 9.0;
    blocks.push(tied.clone());
    tied[40] = 9.0;
    tied[200] = -9.0;
    blocks.push(tied.clone());
    tied[7] = f32::from_bits(0x7fc0_1234);
    tied[100] = f32::from_bits(0xffc0_0042);
    tied[101] = f32::from_bits(0x7f80_0001);
    blocks.push(tied);
    blocks.push(vec![0.0; 256]);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;

    use super::test_inputs as inputs;

    #[test]
    fn q8_quantizers_equal_the_scalar_ones_bit_for_bit() {
        if !crate::kernels::Simd::Avx512.is_supported() {
            return;
        }
        for x in inputs() {
            type Quantize = fn(&[f32], &mut Vec<u8>);
            for (ty, ours, scalar) in [
                (
                    GgmlType::Q8_0,
                    quantize_q8_0 as Quantize,
                    crate::kernels::activations::quantize_q8_0 as Quantize,
                ),
                (
                    GgmlType::Q8_1,
                    quantize_q8_1,
                    crate::kernels::activations::quantize_q8_1,
                ),
            ] {
                let mut want = Vec::new();
                scalar(&x, &mut want);
                let mut got = Vec::new();
                ours(&x, &mut got);
                assert_eq!(got, want, "{ty} {x:?}");
            }
        }
    }

    /// Q8_K over blocks of 256 built from the inputs above (specials,
    /// ties for the largest magnitude of either sign included) against
    /// `BlockQ8K::quantize`.
    #[test]
    fn q8_k_quantizer_equals_the_scalar_one_bit_for_bit() {
        if !crate::kernels::Simd::Avx512.is_supported() {
            return;
        }
        for x in test_q8_k_blocks() {
            let mut want = Vec::new();
            crate::quant::quantize_row(GgmlType::Q8_K, &x, &mut want).unwrap();
            let mut got = Vec::new();
            quantize_q8_k(&x, &mut got);
            assert_eq!(got, want, "{x:?}");
        }
    }
}
