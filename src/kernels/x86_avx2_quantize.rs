//! AVX2 activation quantizers for Q8_0 and Q8_1, bit for bit equal to
//! `kernels::activations` (llama.cpp's x86 formulation, which this is:
//! `quantize_row_q8_0`/`q8_1` of `arch/x86/quants.c`, AVX2 branch), the
//! AVX-512 ones' arithmetic on eight lanes:
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
use std::arch::x86_64::*;

/// Installs the quantizers of the formats the AVX2 kernels read.
pub(super) fn install(k: &mut Kernels) {
    k.quantizers.q8_0 = Some(quantize_q8_0);
    k.quantizers.q8_1 = Some(quantize_q8_1);
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
}
