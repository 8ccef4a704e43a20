//! AVX2 activation quantizers: Q8_K ([`quantize_q8_k`]), and Q8_0 and
//! Q8_1, bit for bit equal to `kernels::activations` (llama.cpp's x86
//! formulation, which this is: `quantize_row_q8_0`/`q8_1` of
//! `arch/x86/quants.c`, AVX2 branch), the AVX-512 ones' arithmetic on
//! eight lanes:
//!
//! - `amax` = max |x| with NaN ignored (`vmaxps` returns its second operand
//!   when the first is NaN, so the running max goes second);
//! - `d = amax / 127`, `id = 127 / amax` (0 when `amax` is 0), scalar f32;
//! - `q = round_ties_even(x · id) as i8`: `vroundps` to nearest even, NaN
//!   sent to 0 and the rest clamped to [−128, 127] (Rust's saturating `as`).
//!
//! Without them a machine with AVX2 but no AVX-512 quantized with the
//! scalar code (`round_ties_even` is a library call on baseline x86-64):
//! 7 ms per 512 × 2048 activations, 7% of a 1B Q8_0 model's prefill.
//!
//! Safety: every function is `#[target_feature(enable = "avx2,fma,f16c")]`;
//! `install` runs after `dispatch` confirmed those features.

use super::activations::append_q8_blocks;
use super::dispatch::Kernels;
use crate::quant::BlockQ8K;
use crate::quant::float::{F32Le, I16Le};
use bytemuck::Zeroable;
use std::arch::x86_64::*;

/// Installs the quantizers of the formats the AVX2 kernels read.
pub(super) fn install(k: &mut Kernels) {
    k.quantizers.q8_0 = Some(quantize_q8_0);
    k.quantizers.q8_1 = Some(quantize_q8_1);
    k.quantizers.q8_k = Some(quantize_q8_k);
}

/// One block of 32: `(d, qs, Σ qs)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block(x: &[f32; 32]) -> (f32, [i8; 32], i32) {
    // SAFETY: `x` is 32 readable f32s; unaligned loads.
    let v: [__m256; 4] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) });
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
        _mm256_max_ps(_mm256_and_ps(v, abs), m)
    });
    // Never NaN from here on: every lane started at 0 and kept its max.
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    let q: [__m256i; 4] = v.map(|v| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, idv),
        );
        let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
    });
    let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let sum = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let sum = _mm_add_epi32(sum, _mm_unpackhi_epi64(sum, sum));
    let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01>(sum));
    // The packs work per 128-bit lane; the permute puts the bytes back in
    // element order.
    let bytes = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let mut qs = [0i8; 32];
    // SAFETY: 32 bytes into `qs`.
    unsafe { _mm256_storeu_si256(qs.as_mut_ptr().cast(), bytes) };
    (d, qs, _mm_cvtsi128_si32(sum))
}

/// `activations::quantize_q8_0`, appended to `out`.
pub(super) fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(x: &[f32], out: &mut Vec<u8>) {
        append_q8_blocks(x, false, out, |b| block(b));
    }
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { inner(x, out) }
}

/// `activations::quantize_q8_1` (`s = f16(Σq · d)`, the f32 `d`), appended to `out`.
pub(super) fn quantize_q8_1(x: &[f32], out: &mut Vec<u8>) {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(x: &[f32], out: &mut Vec<u8>) {
        append_q8_blocks(x, true, out, |b| block(b));
    }
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { inner(x, out) }
}

/// `BlockQ8K::quantize` (`quantize_row_q8_K_ref`) for whole blocks of 256,
/// appended to `out`: the AVX-512 quantizer's arithmetic
/// (`x86_avx512_quantize::quantize_q8_k`, whose doc has the rules) on
/// eight lanes. The quants lie in [−127, 127] (|iscale · x| ≤ 127; a NaN
/// gives 0 to 127), so the saturating packs store them as the scalar
/// code's `as i8` does.
///
/// Without it a machine with AVX2 but no AVX-512 quantized Q8_K with the
/// scalar code. Measured on Zen 3 (AVX2, 2 threads, `RUSTY_LLM_PROFILE=1
/// rusty-llm models/bench/llama-1b-q4_k.gguf --bench --bench-gen-tokens
/// 0`): `quantize activations (Q8_K)` 1.10–1.21 → 0.76–0.86 ms a call of
/// the 512-token prefill, 2.5% → 1.8% of it.
pub(super) fn quantize_q8_k(x: &[f32], out: &mut Vec<u8>) {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(x: &[f32], out: &mut Vec<u8>) {
        let (blocks, _) = x.as_chunks::<256>();
        out.reserve(blocks.len() * size_of::<BlockQ8K>());
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for b in blocks {
            // SAFETY: 32 loads of 8 f32 inside the block.
            let v: [__m256; 32] =
                std::array::from_fn(|i| unsafe { _mm256_loadu_ps(b.as_ptr().add(8 * i)) });
            // NaN never wins: `vmaxps` returns its second operand (the
            // running max, from 0) when the first is NaN.
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
                _mm256_max_ps(_mm256_and_ps(v, abs), m)
            });
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let mut block = BlockQ8K::zeroed();
            if amax == 0.0 {
                out.extend_from_slice(bytemuck::bytes_of(&block));
                continue;
            }
            // The first element of largest magnitude: the first vector with
            // one, its lowest lane.
            let target = _mm256_set1_ps(amax);
            let at = v
                .iter()
                .enumerate()
                .find_map(|(i, &v)| {
                    let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                        _mm256_and_ps(v, abs),
                        target,
                    ));
                    (hits != 0).then(|| 8 * i + hits.trailing_zeros() as usize)
                })
                .expect("amax is one of the magnitudes");
            let iscale = -127.0 / b[at];
            let (scale, magic) = (_mm256_set1_ps(iscale), _mm256_set1_ps(12_582_912.0));
            let (mantissa, bias, top) = (
                _mm256_set1_epi32(0x007f_ffff),
                _mm256_set1_epi32(0x0040_0000),
                _mm256_set1_epi32(127),
            );
            let quants = |v: __m256| {
                let shifted = _mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(scale, v), magic));
                _mm256_min_epi32(
                    _mm256_sub_epi32(_mm256_and_si256(shifted, mantissa), bias),
                    top,
                )
            };
            for (i, pair) in v.chunks_exact(2).enumerate() {
                let (lo, hi) = (quants(pair[0]), quants(pair[1]));
                let sum = _mm256_add_epi32(lo, hi);
                let sum = _mm_add_epi32(
                    _mm256_castsi256_si128(sum),
                    _mm256_extracti128_si256(sum, 1),
                );
                let sum = _mm_add_epi32(sum, _mm_unpackhi_epi64(sum, sum));
                let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01>(sum));
                block.bsums[i] = I16Le::new(_mm_cvtsi128_si32(sum) as i16);
                // The packs work per 128-bit lane; the permute puts the
                // values back in element order.
                let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo, hi));
                let bytes = _mm_packs_epi16(
                    _mm256_castsi256_si128(words),
                    _mm256_extracti128_si256(words, 1),
                );
                // SAFETY: 16 bytes into `qs[16i..16i + 16]`.
                unsafe { _mm_storeu_si128(block.qs.as_mut_ptr().add(16 * i).cast(), bytes) };
            }
            block.d = F32Le::from_f32(1.0 / iscale);
            out.extend_from_slice(bytemuck::bytes_of(&block));
        }
    }
    // SAFETY: installed only on CPUs with these features (module doc).
    unsafe { inner(x, out) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;

    #[test]
    fn q8_quantizers_equal_the_scalar_ones_bit_for_bit() {
        if !crate::kernels::Simd::Avx2.is_supported() {
            return;
        }
        for x in super::super::x86_avx512_quantize::test_inputs() {
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

    /// Q8_K against `BlockQ8K::quantize`, on the AVX-512 quantizer's blocks.
    #[test]
    fn q8_k_quantizer_equals_the_scalar_one_bit_for_bit() {
        if !crate::kernels::Simd::Avx2.is_supported() {
            return;
        }
        for x in super::super::x86_avx512_quantize::test_q8_k_blocks() {
            let mut want = Vec::new();
            crate::quant::quantize_row(GgmlType::Q8_K, &x, &mut want).unwrap();
            let mut got = Vec::new();
            quantize_q8_k(&x, &mut got);
            assert_eq!(got, want, "{x:?}");
        }
    }
}
