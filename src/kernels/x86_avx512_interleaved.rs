//! AVX-512 VNNI kernel for the row-interleaved Q4_0 layout of
//! [`super::interleaved`] (its module doc has the layout and the order,
//! its `group_dot` the meaning): sixteen rows in the lanes of one register,
//! up to [`GROUP_TOKENS`] tokens per call sharing each decoded block.
//!
//! Safety: the kernel is `#[target_feature]` on avx512f/bw/vnni, avx2, fma,
//! f16c; [`install`] runs only after `dispatch` confirmed avx512f/bw/vl,
//! avx2, fma, f16c and itself checks avx512vnni. Every load reads through a
//! fixed-size array reference taken from a bounds-checked slice.

use super::interleaved::{GROUP_ROWS, GROUP_TOKENS, InterleavedDots, PREPARED_BLOCK};
use std::arch::x86_64::*;

/// Bytes of one block record of a group.
const RECORD: usize = GROUP_ROWS * 18;

pub(super) fn install(dots: &mut InterleavedDots) {
    if is_x86_feature_detected!("avx512vnni") {
        dots.q4_0 = Some(group_dots);
    }
}

fn group_dots(
    n: usize,
    group: &[u8],
    xs: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [[f32; GROUP_ROWS]; GROUP_TOKENS],
) {
    let nb = n / 32;
    assert!(group.len() >= nb * RECORD && tokens <= GROUP_TOKENS);
    assert!(x_bytes >= nb * PREPARED_BLOCK && xs.len() >= tokens * x_bytes);
    let x = |t: usize| &xs[t * x_bytes..t * x_bytes + nb * PREPARED_BLOCK];
    let mut t = 0;
    // SAFETY: installed only on CPUs with these features (module doc); the
    // slices are long enough (asserted above).
    unsafe {
        while tokens - t >= 8 {
            let o = q4_0_group::<8>(nb, group, std::array::from_fn(|i| x(t + i)));
            out[t..t + 8].copy_from_slice(&o);
            t += 8;
        }
        if tokens - t >= 4 {
            let o = q4_0_group::<4>(nb, group, std::array::from_fn(|i| x(t + i)));
            out[t..t + 4].copy_from_slice(&o);
            t += 4;
        }
        while t < tokens {
            let [o] = q4_0_group::<1>(nb, group, [x(t)]);
            out[t] = o;
            t += 1;
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load(p: &[u8; 64]) -> __m512i {
    // SAFETY: `p` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

/// The four activation bytes at `p` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn broadcast4(p: &[u8]) -> __m512i {
    _mm512_set1_epi32(i32::from_le_bytes(p[..4].try_into().unwrap()))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn q4_0_group<const T: usize>(nb: usize, group: &[u8], xs: [&[u8]; T]) -> [[f32; GROUP_ROWS]; T] {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, rec) in group.chunks_exact(RECORD).take(nb).enumerate() {
        let d: &[u8; 32] = rec[..32].try_into().unwrap();
        // SAFETY: `d` is 32 readable bytes; the load is unaligned.
        let dw = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) });
        let q: [__m512i; 4] =
            std::array::from_fn(|k| load(rec[32 + 64 * k..96 + 64 * k].try_into().unwrap()));
        let lo = q.map(|q| _mm512_and_si512(q, m4));
        let hi = q.map(|q| _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4));
        for (t, x) in xs.iter().enumerate() {
            let xb = &x[b * PREPARED_BLOCK..(b + 1) * PREPARED_BLOCK];
            // Two independent chains (low and high nibbles), then one sum.
            let mut s0 = _mm512_set1_epi32(i32::from_le_bytes(xb[36..40].try_into().unwrap()));
            let mut s1 = _mm512_setzero_si512();
            for k in 0..4 {
                s0 = _mm512_dpbusd_epi32(s0, lo[k], broadcast4(&xb[4 * k..]));
                s1 = _mm512_dpbusd_epi32(s1, hi[k], broadcast4(&xb[16 + 4 * k..]));
            }
            let isum = _mm512_add_epi32(s0, s1);
            let dx = f32::from_le_bytes(xb[32..36].try_into().unwrap());
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
        }
    }
    acc.map(|a| {
        let mut o = [0f32; GROUP_ROWS];
        // SAFETY: `o` is 16 writable f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
        o
    })
}
