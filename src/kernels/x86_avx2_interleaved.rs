//! AVX2 kernels for the row-interleaved Q4_0 and Q4_K layouts of
//! [`super::interleaved`] (its module doc has the layouts and the orders,
//! its `group_dot*` the meaning), for CPUs without AVX-512 VNNI: llama.cpp
//! repacks these types on AVX2 too, and reads them eight rows at a time.
//!
//! A group's sixteen rows are two 256-bit halves (rows 0–7 and 8–15 of each
//! 64-byte part). One or two tokens take both halves in one pass over the
//! group's records (each activation broadcast serves both, and the records
//! stream by once, as decode wants them); three or four tokens take a pass
//! per half, so their accumulators stay in registers (the group's records,
//! 18–80 KB at our shapes, are still in L1/L2 for the second pass). Either
//! way the next group is prefetched while this one is summed.
//!
//! Without `vpdpbusd`, four products per 32-bit lane are `vpmaddubsw`
//! (unsigned nibble × signed activation, pairs into i16) and a `vpmaddwd`
//! that sums the pairs into i32 — multiplying by the Q4_K sub-block scale
//! at the same time. The i16 sums cannot saturate: a lane adds at most 16
//! products of a nibble (≤ 15) and an activation (|x| ≤ 128), ≤ 30 720.
//! The integer sums are exact, so every result is bit for bit the
//! reference's.
//!
//! Safety: the kernels are `#[target_feature]` on avx2, fma, f16c;
//! `dispatch` installs them only after confirming those features. Every
//! load reads through a fixed-size array reference taken from a
//! bounds-checked slice.

use super::interleaved::{
    GROUP_ROWS, GroupLayout, InterleavedDots, K_DMIN, K_MINS, K_PREPARED_BLOCK, K_QS, K_RECORD,
    K_SCALES, PREPARED_BLOCK, install_layouts,
};
use std::arch::x86_64::*;

/// Bytes of one Q4_0 block record of a group.
const RECORD: usize = GROUP_ROWS * 18;

/// Rows per half of a group (one per 32-bit lane of a 256-bit register).
const HALF: usize = GROUP_ROWS / 2;

pub(super) fn install(dots: &mut InterleavedDots) {
    install_layouts::<Q4_0, Q4K<false>, Q4K<true>>(dots);
}

/// A layout's kernel over halves `first..first + H` of a group by `T`
/// tokens, into `out`.
trait Halves {
    const ELEMENTS: usize;
    const RECORD: usize;
    const X_BLOCK: usize;
    /// # Safety
    /// As [`GroupLayout::run`].
    unsafe fn halves<const T: usize, const H: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
        first: usize,
        out: &mut [[f32; GROUP_ROWS]; T],
    );
}

/// One or two tokens take both halves in one pass, more a pass per half.
impl<K: Halves> GroupLayout for K {
    const ELEMENTS: usize = K::ELEMENTS;
    const RECORD: usize = K::RECORD;
    const X_BLOCK: usize = K::X_BLOCK;
    const WIDEST: usize = 4;
    unsafe fn run<const T: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
    ) -> [[f32; GROUP_ROWS]; T] {
        let mut out = [[0f32; GROUP_ROWS]; T];
        // SAFETY: forwarded (see the trait).
        unsafe {
            if T <= 2 {
                K::halves::<T, 2>(nb, group, xs, 0, &mut out);
            } else {
                K::halves::<T, 1>(nb, group, xs, 0, &mut out);
                K::halves::<T, 1>(nb, group, xs, 1, &mut out);
            }
        }
        out
    }
}

struct Q4_0;
impl Halves for Q4_0 {
    const ELEMENTS: usize = 32;
    const RECORD: usize = RECORD;
    const X_BLOCK: usize = PREPARED_BLOCK;
    unsafe fn halves<const T: usize, const H: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
        first: usize,
        out: &mut [[f32; GROUP_ROWS]; T],
    ) {
        // SAFETY: forwarded (see the trait).
        unsafe { q4_0_halves::<T, H>(nb, group, xs, first, out) }
    }
}

struct Q4K<const PER_CHUNK: bool>;
impl<const PER_CHUNK: bool> Halves for Q4K<PER_CHUNK> {
    const ELEMENTS: usize = 256;
    const RECORD: usize = K_RECORD;
    const X_BLOCK: usize = K_PREPARED_BLOCK;
    unsafe fn halves<const T: usize, const H: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
        first: usize,
        out: &mut [[f32; GROUP_ROWS]; T],
    ) {
        // SAFETY: forwarded (see the trait).
        unsafe { q4_k_halves::<T, H, PER_CHUNK>(nb, group, xs, first, out) }
    }
}

/// Asks for the part of record `b` of the group after `group` that halves
/// `first..first + H` of it read (groups are contiguous; past the last one
/// the hint is merely wasted), so memory streams while this group's
/// records, already in cache, are summed: the hardware prefetcher alone
/// left the Q4_K kernel at half the memory's speed when the weights come
/// from DRAM, as in every decode step.
#[inline(always)]
fn prefetch_next_group<const H: usize>(group: &[u8], record: usize, b: usize, first: usize) {
    let per_half = record.div_ceil(128);
    let at = group.as_ptr().wrapping_add(group.len() + b * record);
    for line in first * per_half..(first + H) * per_half {
        // A prefetch is a hint, never a load: any address is fine, and SSE
        // is part of the x86-64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64 * line).cast()) };
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load(p: &[u8]) -> __m256i {
    let a: &[u8; 32] = p[..32].try_into().unwrap();
    // SAFETY: `a` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// Eight f16 at `p` as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16x8(p: &[u8]) -> __m256 {
    let a: &[u8; 16] = p[..16].try_into().unwrap();
    // SAFETY: `a` is 16 readable bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(a.as_ptr().cast()) })
}

/// The four bytes at `p` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
fn broadcast4(p: &[u8]) -> __m256i {
    _mm256_set1_epi32(i32::from_le_bytes(p[..4].try_into().unwrap()))
}

/// Eight scale bytes at `p`, each as a pair of equal i16 in its lane (the
/// second operand of a `vpmaddwd` that scales both halves of a pair sum).
#[inline]
#[target_feature(enable = "avx2")]
fn scale_pairs(p: &[u8]) -> __m256i {
    let a: &[u8; 8] = p[..8].try_into().unwrap();
    // SAFETY: `a` is 8 readable bytes; the load is unaligned.
    let v = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(a.as_ptr().cast()) });
    _mm256_or_si256(v, _mm256_slli_epi32::<16>(v))
}

/// Stores the eight rows of half `half` of one token's results.
#[inline]
#[target_feature(enable = "avx2")]
fn store(out: &mut [f32; GROUP_ROWS], half: usize, v: __m256) {
    let o: &mut [f32; HALF] = (&mut out[HALF * half..HALF * (half + 1)])
        .try_into()
        .unwrap();
    // SAFETY: `o` is 8 writable f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
}

/// Halves `first..first + H` of a Q4_0 group (rows `8 first..8 (first +
/// H)`) by `T` tokens, into `out`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_halves<const T: usize, const H: usize>(
    nb: usize,
    group: &[u8],
    xs: [&[u8]; T],
    first: usize,
    out: &mut [[f32; GROUP_ROWS]; T],
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for (b, rec) in group.chunks_exact(RECORD).take(nb).enumerate() {
        prefetch_next_group::<H>(group, RECORD, b, first);
        let dw: [__m256; H] = std::array::from_fn(|h| f16x8(&rec[2 * HALF * (first + h)..]));
        let xb: [&[u8]; T] = xs.map(|x| &x[b * PREPARED_BLOCK..(b + 1) * PREPARED_BLOCK]);
        let mut sum = [[_mm256_setzero_si256(); H]; T];
        for k in 0..4 {
            let xl = xb.map(|x| broadcast4(&x[4 * k..]));
            let xh = xb.map(|x| broadcast4(&x[16 + 4 * k..]));
            for h in 0..H {
                let q = load(&rec[32 + 64 * k + 32 * (first + h)..]);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                for t in 0..T {
                    let products = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, xl[t]),
                        _mm256_maddubs_epi16(hi, xh[t]),
                    );
                    sum[t][h] = _mm256_add_epi16(sum[t][h], products);
                }
            }
        }
        for t in 0..T {
            let seed = _mm256_set1_epi32(i32::from_le_bytes(xb[t][36..40].try_into().unwrap()));
            let dx = _mm256_set1_ps(f32::from_le_bytes(xb[t][32..36].try_into().unwrap()));
            for h in 0..H {
                let isum = _mm256_add_epi32(_mm256_madd_epi16(sum[t][h], ones), seed);
                let scale = _mm256_mul_ps(dw[h], dx);
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t][h]);
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        for (h, v) in acc.into_iter().enumerate() {
            store(out, first + h, v);
        }
    }
}

/// Halves `first..first + H` of a Q4_K group by `T` tokens, into `out`, in
/// ggml's gemv order or (`PER_CHUNK`) its gemm order.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_halves<const T: usize, const H: usize, const PER_CHUNK: bool>(
    nb: usize,
    group: &[u8],
    xs: [&[u8]; T],
    first: usize,
    out: &mut [[f32; GROUP_ROWS]; T],
) {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    let mut acc_m = [[_mm256_setzero_ps(); H]; T];
    for (b, rec) in group.chunks_exact(K_RECORD).take(nb).enumerate() {
        prefetch_next_group::<H>(group, K_RECORD, b, first);
        let rows = |h: usize| 2 * HALF * (first + h);
        let dw: [__m256; H] = std::array::from_fn(|h| f16x8(&rec[rows(h)..]));
        let dminw: [__m256; H] = std::array::from_fn(|h| f16x8(&rec[K_DMIN + rows(h)..]));
        let xb: [&[u8]; T] = xs.map(|x| &x[b * K_PREPARED_BLOCK..(b + 1) * K_PREPARED_BLOCK]);
        let dx = xb.map(|x| _mm256_set1_ps(f32::from_le_bytes(x[256..260].try_into().unwrap())));
        let mut isum = [[_mm256_setzero_si256(); H]; T];
        let mut msum = [[_mm256_setzero_si256(); H]; T];
        for k in 0..4 {
            // Sub-block 2k in the low nibbles, 2k + 1 in the high ones.
            let mut lo = [[_mm256_setzero_si256(); H]; T];
            let mut hi = [[_mm256_setzero_si256(); H]; T];
            for p in 0..8 {
                let xl = xb.map(|x| broadcast4(&x[64 * k + 4 * p..]));
                let xh = xb.map(|x| broadcast4(&x[64 * k + 32 + 4 * p..]));
                for h in 0..H {
                    let q = load(&rec[K_QS + 512 * k + 64 * p + 32 * (first + h)..]);
                    let l = _mm256_and_si256(q, m4);
                    let u = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    for t in 0..T {
                        lo[t][h] = _mm256_add_epi16(lo[t][h], _mm256_maddubs_epi16(l, xl[t]));
                        hi[t][h] = _mm256_add_epi16(hi[t][h], _mm256_maddubs_epi16(u, xh[t]));
                    }
                }
            }
            let xm = xb.map(|x| broadcast4(&x[260 + 4 * k..]));
            for h in 0..H {
                let scales = K_SCALES + HALF * (first + h);
                let sc_lo = scale_pairs(&rec[scales + 16 * (2 * k)..]);
                let sc_hi = scale_pairs(&rec[scales + 16 * (2 * k + 1)..]);
                let mins = load(&rec[K_MINS + 64 * k + 32 * (first + h)..]);
                for t in 0..T {
                    let chunk = _mm256_add_epi32(
                        _mm256_madd_epi16(lo[t][h], sc_lo),
                        _mm256_madd_epi16(hi[t][h], sc_hi),
                    );
                    let m = _mm256_madd_epi16(mins, xm[t]);
                    if PER_CHUNK {
                        let d = _mm256_mul_ps(dw[h], dx[t]);
                        let dmin = _mm256_mul_ps(dminw[h], dx[t]);
                        acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk), d, acc[t][h]);
                        acc_m[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), dmin, acc_m[t][h]);
                    } else {
                        isum[t][h] = _mm256_add_epi32(isum[t][h], chunk);
                        msum[t][h] = _mm256_add_epi32(msum[t][h], m);
                    }
                }
            }
        }
        if !PER_CHUNK {
            for t in 0..T {
                for h in 0..H {
                    let d = _mm256_mul_ps(dw[h], dx[t]);
                    let dmin = _mm256_mul_ps(dminw[h], dx[t]);
                    let (i, m) = (isum[t][h], msum[t][h]);
                    acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, acc[t][h]);
                    acc_m[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), dmin, acc_m[t][h]);
                }
            }
        }
    }
    for ((out, acc), acc_m) in out.iter_mut().zip(acc).zip(acc_m) {
        for (h, (a, m)) in acc.into_iter().zip(acc_m).enumerate() {
            store(out, first + h, _mm256_sub_ps(a, m));
        }
    }
}
