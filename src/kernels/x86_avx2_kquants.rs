//! AVX2 + FMA dot products of the K-quants (Q2_K … Q6_K) and IQ4_XS with Q8_K
//! activations, after ggml's AVX2 kernels (ggml/src/ggml-cpu/arch/x86/quants.c).
//!
//! The weights' quants are unsigned (Q3_K and Q6_K are offset, IQ4_XS goes
//! through its table), so `_mm256_maddubs_epi16` multiplies 32 of them by 32
//! signed activations into 16 pair sums, and `_mm256_madd_epi16` applies the
//! sub-block scales while widening to i32. Offsets and minimums come in
//! through Q8_K's `bsums`: `Σ q8·(q − o) = Σ q8·q − o·bsum`, so Q3_K and Q6_K
//! need one `maddubs` per 32 weights, like Q4_K. Every block ends in one
//! exact i32 vector, converted and scaled once: the same integers as
//! [`super::scalar_kquants`], only the f32 sums across blocks are ordered
//! differently.
//!
//! Safety: every kernel is `#[target_feature(enable = "avx2,fma,f16c")]`; `dispatch`
//! installs this module only after `is_x86_feature_detected!` confirmed avx2,
//! fma and f16c, which is the safety argument for each call into them. Loads
//! read whole fixed-size arrays through references, so they stay in bounds.

use super::quant_dots::QuantDots;
use super::scalar_kquants::{blocks, unpack_iq4_xs, unpack_k4, unpack_q3_k};
use crate::quant::float::F16Le;
use crate::quant::iq::KVALUES_IQ4NL;
use crate::quant::{BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use std::arch::x86_64::*;

/// Installs this module's kernels into the table.
pub(super) fn install(dots: &mut QuantDots) {
    dots.q2_k = dot_q2_k;
    dots.q3_k = dot_q3_k;
    dots.q4_k = dot_q4_k;
    dots.q5_k = dot_q5_k;
    dots.q6_k = dot_q6_k;
    dots.iq4_xs = dot_iq4_xs;
}

/// Installs the kernels in the order of ggml's batch matmuls.
pub(super) fn install_batch(batch: &mut super::dispatch::BatchDots) {
    batch.q4_k_repacked = Some((dot_q4_k_gemv, dot_q4_k_gemm));
    batch.four_tokens = [
        Some((dot_q4_k_gemv, dot_q4_k_gemv4)),
        Some((dot_q6_k, dot_q6_k4)),
    ];
    batch.q4_k_tiled = Some(dot_q4_k_tiled);
    batch.q6_k_tiled = Some(dot_q6_k_tiled);
    batch.q5_k_tiled = Some(dot_q5_k_tiled);
    batch.q3_k_tiled = Some(dot_q3_k_tiled);
}

/// 32 bytes at `s[off..off + 32]` (bounds checked; free for constant offsets).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ld<T: bytemuck::Pod>(s: &[T], off: usize) -> __m256i {
    let b: &[u8] = bytemuck::cast_slice(s);
    let a: &[u8; 32] = b[off..off + 32].try_into().unwrap();
    // SAFETY: `a` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// 16 bytes at `s[off..off + 16]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ld128<T: bytemuck::Pod>(s: &[T], off: usize) -> __m128i {
    let b: &[u8] = bytemuck::cast_slice(s);
    let a: &[u8; 16] = b[off..off + 16].try_into().unwrap();
    // SAFETY: `a` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(a.as_ptr().cast()) }
}

/// The 16 block sums of a Q8_K block as i16 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ld_bsums(y: &BlockQ8K) -> __m256i {
    ld(&y.bsums, 0)
}

/// `GGML_FP16_TO_FP32` with the F16C instruction (exact, like every
/// conversion of a half to f32), inline instead of through `half`'s run-time
/// detection.
///
/// In assembly because the intrinsics (`_mm_cvtph_ps(_mm_cvtsi32_si128(h))`)
/// let LLVM see that one lane is used and insert the half into whatever
/// register is at hand (`vpinsrw $0, mem, %xmm0, %xmm4`), often a live
/// accumulator: a false dependency that chained every block of a dot
/// product to the previous block's FMA. Measured on Zen 3 (AVX2 only), 1B
/// Q4_0 2048→8192 matrix × vector: 4.0 GB/s on one core, 16 cycles a block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16(h: F16Le) -> f32 {
    let v: __m128;
    // SAFETY: two register-only instructions of the enabled F16C/AVX.
    unsafe {
        std::arch::asm!(
            "vmovd {v}, {h:e}",
            "vcvtph2ps {v}, {v}",
            h = in(reg) u32::from(u16::from_le_bytes(h.0)),
            v = out(xmm_reg) v,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    _mm_cvtss_f32(v)
}

/// Sums the 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    hsum128(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps(v, 1),
    ))
}

/// Sums the 4 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// A pshufb pattern that puts i16 lane `k` (of each 128-bit half) in every
/// lane: applied to a vector holding eight i16 scales in both halves.
#[inline]
#[target_feature(enable = "avx2")]
fn pick_i16(k: i32) -> __m256i {
    _mm256_set1_epi16((((2 * k + 1) << 8) | (2 * k)) as i16)
}

/// The sixteen i8 scales of a block's 16-weight sub-blocks as i16, the
/// even ones in the low 128-bit half and the odd ones in the high half:
/// [`scale_pair`] then picks the pair of sub-block scales for 32 weights
/// with one in-lane shuffle. Rebuilding each pair from the bytes
/// (`vpshufb` + `vpmovsxbw` for each of a block's eight, as ggml's
/// `get_scale_shuffle` does) kept the shuffle pipes busiest: `llvm-mca
/// -mcpu=znver3` gave the one-token Q6_K block 36.7 cycles, bound on them.
#[inline]
#[target_feature(enable = "avx2")]
fn scales_even_odd(scales: __m128i) -> __m256i {
    let even_odd = _mm_set_epi8(15, 13, 11, 9, 7, 5, 3, 1, 14, 12, 10, 8, 6, 4, 2, 0);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, even_odd))
}

/// Sixteen i16 lanes: scale `2i` eight times, then scale `2i + 1` eight
/// times: the scales of two 16-weight sub-blocks, one per 128-bit half, for
/// 32 weights (ggml's `get_scale_shuffle` widened), from
/// [`scales_even_odd`].
///
/// In assembly because LLVM rewrites the intrinsic's constant `vpshufb` as
/// `vpshuflw` + `vpshufd`, two shuffles on the pipes this is short of.
#[inline]
#[target_feature(enable = "avx2")]
fn scale_pair(even_odd: __m256i, i: i32) -> __m256i {
    let pair: __m256i;
    // SAFETY: one register-only instruction of the enabled AVX2.
    unsafe {
        std::arch::asm!(
            "vpshufb {p}, {v}, {m}",
            p = lateout(ymm_reg) pair,
            v = in(ymm_reg) even_odd,
            m = in(ymm_reg) pick_i16(i),
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    pair
}

/// Bits `from..from + width` of every byte of `v`, moved to bits
/// `to..to + width` (the rest zero). The shifts are on 16-bit lanes; the
/// mask keeps only bits that came from the same byte.
#[inline]
#[target_feature(enable = "avx2")]
fn field(v: __m256i, from: usize, to: usize, width: u32) -> __m256i {
    let moved = if from >= to {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128((from - to) as i32))
    } else {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128((to - from) as i32))
    };
    _mm256_and_si256(
        moved,
        _mm256_set1_epi8((((1u32 << width) - 1) << to) as u8 as i8),
    )
}

/// Quants `32i..32i + 32` of a Q3_K block as `q2 | h << 2` (0..8; the −4 of
/// a clear `hmask` bit is applied through the block sums).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q3_k_quants(b: &BlockQ3K, i: usize) -> __m256i {
    let q2 = field(ld(&b.qs, 32 * (i / 4)), 2 * (i % 4), 0, 2);
    _mm256_or_si256(q2, field(ld(&b.hmask, 0), i, 2, 1))
}

/// Quants `32i..32i + 32` of a Q4_K block (0..16): the low nibbles of
/// `qs[32c..32c + 32]` are quants `64c..64c + 32`, the high ones the next 32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q4_k_quants(b: &BlockQ4K, i: usize) -> __m256i {
    field(ld(&b.qs, 32 * (i / 2)), 4 * (i % 2), 0, 4)
}

/// Quants `32i..32i + 32` of a Q5_K block (0..32): Q4_K's nibbles, and bit
/// `i` of `qh[l]` as the fifth bit of quant `32i + l`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q5_k_quants(b: &BlockQ5K, i: usize) -> __m256i {
    let low = field(ld(&b.qs, 32 * (i / 2)), 4 * (i % 2), 0, 4);
    _mm256_or_si256(low, field(ld(&b.qh, 0), i, 4, 1))
}

/// Quants `32i..32i + 32` of a Q6_K block (0..64; the −32 is applied
/// through the block sums): per 128 quants `j`, the low nibbles of
/// `ql[64j..64j + 64]` then its high nibbles, with two bits each of
/// `qh[32j..32j + 32]` on top.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q6_k_quants(b: &BlockQ6K, i: usize) -> __m256i {
    let (j, k) = (i / 4, i % 4);
    let low = field(ld(&b.ql, 64 * j + 32 * (k % 2)), 4 * (k / 2), 0, 4);
    _mm256_or_si256(low, field(ld(&b.qh, 32 * j), 2 * k, 4, 2))
}

/// `ggml_vec_dot_q2_K_q8_K`.
pub(super) fn dot_q2_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ2K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { q2_k(w, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q2_k(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let dx = y.d.to_f32();
        let dall = dx * f16(b.d);
        let dmin = -(dx * f16(b.dmin));
        let sc = ld128(&b.scales, 0);
        let scales = scales_even_odd(_mm_and_si128(sc, m4));
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4));
        let summs = _mm256_madd_epi16(mins, ld_bsums(y));
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summs), acc_m);

        let mut sumi = _mm256_setzero_si256();
        for j in 0..2 {
            let mut q2 = ld(&b.qs, 32 * j);
            for k in 0..4 {
                let q8 = ld(&y.qs, 128 * j + 32 * k);
                let p = _mm256_maddubs_epi16(_mm256_and_si256(q2, m3), q8);
                let p = _mm256_madd_epi16(p, scale_pair(scales, (4 * j + k) as i32));
                sumi = _mm256_add_epi32(sumi, p);
                q2 = _mm256_srli_epi16(q2, 2);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dall), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(_mm256_add_ps(acc, acc_m))
}

/// `ggml_vec_dot_q3_K_q8_K`: quants taken as `q2 | h << 2` in 0..8, with the
/// offset −4 applied through the block sums.
pub(super) fn dot_q3_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ3K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { q3_k(w, x) }
}

/// The eight i32 lanes of one Q3_K block as ggml's AVX2 kernel forms them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q3_k_ints(b: &BlockQ3K, y: &BlockQ8K) -> __m256i {
    let sc = unpack_q3_k(&b.scales);
    let scales = _mm_sub_epi8(ld128(&sc, 0), _mm_set1_epi8(32));
    // −4 · Σ sc · bsum.
    let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), ld_bsums(y));
    let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 2));
    let pairs = scales_even_odd(scales);
    for i in 0..8 {
        let p = _mm256_maddubs_epi16(q3_k_quants(b, i), ld(&y.qs, 32 * i));
        let p = _mm256_madd_epi16(p, scale_pair(pairs, i as i32));
        sumi = _mm256_add_epi32(sumi, p);
    }
    sumi
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q3_k(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let d = y.d.to_f32() * f16(b.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(q3_k_ints(b, y)), acc);
    }
    hsum(acc)
}

/// Q3_K in the order of ggml's tiled K-quant matmul (batches of 8 or more):
/// per block `acc = fma(Σ·d_w, d_x, acc)`.
pub(super) fn dot_q3_k_tiled(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (b, y) in w.iter().zip(x) {
            let r = hsum_i32(q3_k_ints(b, y)) as f32 * f16(b.d);
            acc = r.mul_add(y.d.to_f32(), acc);
        }
        acc
    }
    let (w, x) = blocks::<BlockQ3K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { inner(w, x) }
}

/// `ggml_vec_dot_q4_K_q8_K`.
pub(super) fn dot_q4_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { q4_k(w, x) }
}

/// `dmin · Σ m · bsums` of a Q4_K/Q5_K block: the mins are i16 lanes 8..16
/// of `mins_scales`, each covering two block sums. Returns 4 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn mins_k4(mins_scales: __m256i, y: &BlockQ8K) -> __m128i {
    let bs = ld_bsums(y);
    let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    _mm_madd_epi16(_mm256_extracti128_si256(mins_scales, 1), pairs)
}

/// The integers of one Q4_K block: per 64-weight chunk `j` (ggml's `sb`),
/// the scaled products `Σ sc·q·x` of its two sub-blocks as eight i32 lanes
/// (lane `l`: weights `4l..4l + 4` of each 32), and `Σ m·bsum` of the two
/// sub-blocks in lane `j` of the second value.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_ints(b: &BlockQ4K, y: &BlockQ8K) -> ([__m256i; 4], __m128i) {
    let u = unpack_k4(&b.scales);
    let mins_scales = _mm256_cvtepu8_epi16(ld128(&u, 0));
    let summs = mins_k4(mins_scales, y);
    let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(mins_scales));
    let chunk = |j: usize| {
        let pl = _mm256_maddubs_epi16(q4_k_quants(b, 2 * j), ld(&y.qs, 64 * j));
        let ph = _mm256_maddubs_epi16(q4_k_quants(b, 2 * j + 1), ld(&y.qs, 64 * j + 32));
        let pl = _mm256_madd_epi16(pl, _mm256_shuffle_epi8(scales, pick_i16(2 * j as i32)));
        let ph = _mm256_madd_epi16(ph, _mm256_shuffle_epi8(scales, pick_i16(2 * j as i32 + 1)));
        _mm256_add_epi32(pl, ph)
    };
    ([chunk(0), chunk(1), chunk(2), chunk(3)], summs)
}

/// Sum of the eight i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// Sum of the four i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32_4(s: __m128i) -> i32 {
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// `ggml_vec_dot_q4_K_q8_K` (AVX2): per block, `acc += d · lanes` over
/// eight lanes and `acc_m += −dmin · mins` over four; `hsum(acc) + hsum(acc_m)`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let dx = y.d.to_f32();
        let d = f16(b.d) * dx;
        let dmin = -(f16(b.dmin) * dx);
        let (v, summs) = q4_k_ints(b, y);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(summs), acc_m);
        let sumi = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) + hsum128(acc_m)
}

/// Q4_K in the order of ggml's repacked decode kernel
/// (`ggml_gemv_q4_K_8x8_q8_K`, `arch/x86/repack.cpp`), which llama.cpp uses
/// on AVX2 CPUs for Q4_K weights whose row count is a multiple of 8, one
/// token at a time (and for the last `n % 4` tokens of a batch): per block,
/// one exact integer for the products and one for the minimums, then
/// `acc = fma(Σ, d_w·d_x, acc)`, `acc_m = fma(Σm, dmin_w·d_x, acc_m)`, and
/// `acc − acc_m`.
pub(super) fn dot_q4_k_gemv(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    let [v] = unsafe { q4_k_repacked::<false, 1>(w, [x]) };
    v
}

/// [`blocks`] of one weight row and four tokens' activations.
fn blocks4<'a, W: bytemuck::Pod>(
    n: usize,
    w: &'a [u8],
    xs: [&'a [u8]; 4],
) -> (&'a [W], [&'a [BlockQ8K]; 4]) {
    (
        blocks::<W>(n, w, xs[0]).0,
        xs.map(|x| blocks::<W>(n, w, x).1),
    )
}

/// [`dot_q4_k_gemv`] of one row with four tokens at once: each token's
/// arithmetic unchanged (bit for bit), the weight block read once for all.
pub(super) fn dot_q4_k_gemv4(n: usize, w: &[u8], xs: [&[u8]; 4]) -> [f32; 4] {
    let (w, xs) = blocks4::<BlockQ4K>(n, w, xs);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { q4_k_repacked::<false, 4>(w, xs) }
}

/// Q4_K in the order of `ggml_gemm_q4_K_8x8_q8_K`, the repacked kernel for
/// batches (tokens in whole groups of four): like [`dot_q4_k_gemv`] but the
/// two FMAs run once per 64-weight chunk instead of once per block.
pub(super) fn dot_q4_k_gemm(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    let [v] = unsafe { q4_k_repacked::<true, 1>(w, [x]) };
    v
}

/// The repacked kernels' arithmetic for `N` tokens (each independent).
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_repacked<const PER_CHUNK: bool, const N: usize>(
    w: &[BlockQ4K],
    xs: [&[BlockQ8K]; N],
) -> [f32; N] {
    let mut acc = [0f32; N];
    let mut acc_m = [0f32; N];
    for (i, b) in w.iter().enumerate() {
        let bd = f16(b.d);
        let bdmin = f16(b.dmin);
        for t in 0..N {
            let y = &xs[t][i];
            let dx = y.d.to_f32();
            let d = bd * dx;
            let dmin = bdmin * dx;
            let (v, summs) = q4_k_ints(b, y);
            if PER_CHUNK {
                let m: [i32; 4] = bytemuck::cast(summs);
                for (v, m) in v.into_iter().zip(m) {
                    acc[t] = (hsum_i32(v) as f32).mul_add(d, acc[t]);
                    acc_m[t] = (m as f32).mul_add(dmin, acc_m[t]);
                }
            } else {
                let sumi =
                    _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
                acc[t] = (hsum_i32(sumi) as f32).mul_add(d, acc[t]);
                acc_m[t] = (hsum_i32_4(summs) as f32).mul_add(dmin, acc_m[t]);
            }
        }
    }
    std::array::from_fn(|t| acc[t] - acc_m[t])
}

/// Q4_K in the order of ggml's tiled K-quant matmul (`tiled/tiled.cpp`,
/// `tiled_run_micro_vnni_8x16`), which llama.cpp uses for batches of at
/// least 8 tokens when the weights are not repacked (row count not a
/// multiple of 8): per block `r = fnmadd(dmin_w, Σm, Σ·d_w)`, then
/// `acc = fma(r, d_x, acc)` (GCC contracts the `acc + r·d_x` it writes).
pub(super) fn dot_q4_k_tiled(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (b, y) in w.iter().zip(x) {
            let (v, summs) = q4_k_ints(b, y);
            let sumi = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
            let r =
                (-f16(b.dmin)).mul_add(hsum_i32_4(summs) as f32, hsum_i32(sumi) as f32 * f16(b.d));
            acc = r.mul_add(y.d.to_f32(), acc);
        }
        acc
    }
    let (w, x) = blocks::<BlockQ4K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { inner(w, x) }
}

/// `ggml_vec_dot_q5_K_q8_K`.
pub(super) fn dot_q5_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ5K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { q5_k(w, x) }
}

/// The integers of one Q5_K block: the eight i32 lanes of the scaled
/// products and the four `Σ m·bsum` lanes (as `q4_k_ints`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_ints(b: &BlockQ5K, y: &BlockQ8K) -> (__m256i, __m128i) {
    let u = unpack_k4(&b.scales);
    let mins_scales = _mm256_cvtepu8_epi16(ld128(&u, 0));
    let summs = mins_k4(mins_scales, y);
    let scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(mins_scales));
    let mut sumi = _mm256_setzero_si256();
    for j in 0..4 {
        let pl = _mm256_maddubs_epi16(q5_k_quants(b, 2 * j), ld(&y.qs, 64 * j));
        let ph = _mm256_maddubs_epi16(q5_k_quants(b, 2 * j + 1), ld(&y.qs, 64 * j + 32));
        let pl = _mm256_madd_epi16(pl, _mm256_shuffle_epi8(scales, pick_i16(2 * j as i32)));
        let ph = _mm256_madd_epi16(ph, _mm256_shuffle_epi8(scales, pick_i16(2 * j as i32 + 1)));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
    }
    (sumi, summs)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let dx = y.d.to_f32();
        let d = f16(b.d) * dx;
        let dmin = -(f16(b.dmin) * dx);
        let (sumi, summs) = q5_k_ints(b, y);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(summs), acc_m);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) + hsum128(acc_m)
}

/// Q5_K in the order of ggml's tiled K-quant matmul (batches of 8 or more),
/// as [`dot_q4_k_tiled`].
pub(super) fn dot_q5_k_tiled(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (b, y) in w.iter().zip(x) {
            let (sumi, summs) = q5_k_ints(b, y);
            let r =
                (-f16(b.dmin)).mul_add(hsum_i32_4(summs) as f32, hsum_i32(sumi) as f32 * f16(b.d));
            acc = r.mul_add(y.d.to_f32(), acc);
        }
        acc
    }
    let (w, x) = blocks::<BlockQ5K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { inner(w, x) }
}

/// `ggml_vec_dot_q6_K_q8_K`: quants taken unsigned (0..64), with the offset
/// −32 applied through the block sums.
pub(super) fn dot_q6_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockQ6K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    let [v] = unsafe { q6_k::<1>(w, [x]) };
    v
}

/// [`dot_q6_k`] of one row with four tokens at once: each token's
/// arithmetic unchanged (bit for bit), the weight block read once for all.
pub(super) fn dot_q6_k4(n: usize, w: &[u8], xs: [&[u8]; 4]) -> [f32; 4] {
    let (w, xs) = blocks4::<BlockQ6K>(n, w, xs);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { q6_k::<4>(w, xs) }
}

/// The eight i32 lanes of one Q6_K block as ggml's AVX2 kernel forms them
/// (lane `l`: weights `4l..4l + 4` of each 32, less `32·Σ sc·bsum` of
/// sub-blocks `2l`, `2l + 1`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_ints(b: &BlockQ6K, y: &BlockQ8K) -> __m256i {
    let scales = ld128(&b.scales, 0);
    // −32 · Σ sc · bsum.
    let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), ld_bsums(y));
    let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
    let pairs = scales_even_odd(scales);
    for i in 0..8 {
        let p = _mm256_maddubs_epi16(q6_k_quants(b, i), ld(&y.qs, 32 * i));
        let p = _mm256_madd_epi16(p, scale_pair(pairs, i as i32));
        sumi = _mm256_add_epi32(sumi, p);
    }
    sumi
}

/// A Q6_K block's weights and scales decoded for [`q6_k_ints_of`]: what
/// [`q6_k_ints`] derives from the block alone, once for several tokens.
/// (One token keeps [`q6_k_ints`], which decodes each 32 weights where it
/// uses them: written as `q6_k_ints_of(&q6_k_decode(b), y)` it measured
/// 24.0 against 22.3 cycles a block in `llvm-mca -mcpu=znver3`, and slower
/// in `'singles Q6_K gemma 2048->640'`.)
struct Q6KDecoded {
    /// The eight 32-element quant vectors (unsigned, 0–63).
    quants: [__m256i; 8],
    /// The scale pairs of each, as 16-bit multipliers.
    pairs: [__m256i; 8],
    /// All sixteen scales as 16-bit values.
    scales: __m256i,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_decode(b: &BlockQ6K) -> Q6KDecoded {
    let scales = ld128(&b.scales, 0);
    let even_odd = scales_even_odd(scales);
    Q6KDecoded {
        quants: std::array::from_fn(|i| q6_k_quants(b, i)),
        pairs: std::array::from_fn(|i| scale_pair(even_odd, i as i32)),
        scales: _mm256_cvtepi8_epi16(scales),
    }
}

/// [`q6_k_ints`] from a decoded block: the same integers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_ints_of(b: &Q6KDecoded, y: &BlockQ8K) -> __m256i {
    let corr = _mm256_madd_epi16(b.scales, ld_bsums(y));
    let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
    for i in 0..8 {
        let p = _mm256_maddubs_epi16(b.quants[i], ld(&y.qs, 32 * i));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, b.pairs[i]));
    }
    sumi
}

/// `ggml_vec_dot_q6_K_q8_K` (AVX2): `acc = fma(d_x·d_w, lanes, acc)` per
/// block, then `hsum_float_8`. Several tokens share each block's decoding
/// ([`q6_k_decode`]; as a loop over [`q6_k_ints`] the compiler decoded it
/// again per token).
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k<const N: usize>(w: &[BlockQ6K], xs: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, b) in w.iter().enumerate() {
        let bd = f16(b.d);
        let decoded = (N > 1).then(|| q6_k_decode(b));
        for t in 0..N {
            let y = &xs[t][i];
            let d = y.d.to_f32() * bd;
            let ints = match &decoded {
                Some(decoded) => q6_k_ints_of(decoded, y),
                None => q6_k_ints(b, y),
            };
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(ints), acc[t]);
        }
    }
    acc.map(|a| hsum(a))
}

/// Q6_K in the order of ggml's tiled K-quant matmul (`tiled/tiled.cpp`),
/// which llama.cpp uses for batches of at least 8 tokens: per block one
/// exact integer `Σ`, `r = Σ·d_w`, `acc = fma(r, d_x, acc)`.
pub(super) fn dot_q6_k_tiled(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (b, y) in w.iter().zip(x) {
            let r = hsum_i32(q6_k_ints(b, y)) as f32 * f16(b.d);
            acc = r.mul_add(y.d.to_f32(), acc);
        }
        acc
    }
    let (w, x) = blocks::<BlockQ6K>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { inner(w, x) }
}

/// `ggml_vec_dot_iq4_xs_q8_K`.
pub(super) fn dot_iq4_xs(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (w, x) = blocks::<BlockIQ4XS>(n, w, x);
    // SAFETY: installed only on CPUs with avx2, fma and f16c (module doc).
    unsafe { iq4_xs(w, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_xs(w: &[BlockIQ4XS], x: &[BlockQ8K]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let values = _mm256_broadcastsi128_si256(ld128(&KVALUES_IQ4NL, 0));
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        let d = y.d.to_f32() * f16(b.d);
        let raw = _mm_cvtsi64_si128(unpack_iq4_xs(b) as i64);
        let pairs = scales_even_odd(_mm_sub_epi8(raw, _mm_set1_epi8(32)));
        let mut sumi = _mm256_setzero_si256();
        for p in 0..4 {
            // Sub-blocks 2p and 2p+1: 16 bytes each, low nibbles weights
            // 0..16, high nibbles 16..32. Pair the activations to match.
            let q4 = ld(&b.qs, 32 * p);
            let lo = _mm256_shuffle_epi8(values, _mm256_and_si256(q4, m4));
            let hi = _mm256_shuffle_epi8(values, _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4));
            let q8lo = _mm256_inserti128_si256(
                _mm256_castsi128_si256(ld128(&y.qs, 64 * p)),
                ld128(&y.qs, 64 * p + 32),
                1,
            );
            let q8hi = _mm256_inserti128_si256(
                _mm256_castsi128_si256(ld128(&y.qs, 64 * p + 16)),
                ld128(&y.qs, 64 * p + 48),
                1,
            );
            // Signed × signed through maddubs: |w| times q8 with w's sign.
            let pl = _mm256_maddubs_epi16(_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(q8lo, lo));
            let ph = _mm256_maddubs_epi16(_mm256_sign_epi8(hi, hi), _mm256_sign_epi8(q8hi, hi));
            let sc = scale_pair(pairs, p as i32);
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pl, sc));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(ph, sc));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::scalar_kquants::test_support::*;
    use super::*;

    pub(in crate::kernels) fn check_against_scalar(install_simd: fn(&mut QuantDots), label: &str) {
        let mut scalar = QuantDots::reference();
        super::super::scalar_kquants::install(&mut scalar);
        let mut simd = scalar;
        install_simd(&mut simd);
        let pick = |d: &QuantDots, name: &str| match name {
            "q2_k" => d.q2_k,
            "q3_k" => d.q3_k,
            "q4_k" => d.q4_k,
            "q5_k" => d.q5_k,
            "q6_k" => d.q6_k,
            _ => d.iq4_xs,
        };
        for nb in [1, 2, 3, 8] {
            let n = 256 * nb;
            let xs = [
                activations(n, 3 + nb as u64),
                constant_activations(nb, 127, 0.25),
                constant_activations(nb, -127, 1.5),
            ];
            for (xi, x) in xs.iter().enumerate() {
                for (name, size, halves) in TYPES {
                    for pattern in [None, Some(0xffu8), Some(0)] {
                        let mut w = weights(size, halves, nb, 11 * nb as u64, |i| {
                            0.02 * (i as f32 - 3.0)
                        });
                        if let Some(v) = pattern {
                            for (i, b) in w.iter_mut().enumerate() {
                                if !halves.iter().any(|&h| i % size == h || i % size == h + 1) {
                                    *b = v;
                                }
                            }
                        }
                        let a = pick(&scalar, name)(n, &w, x);
                        let b = pick(&simd, name)(n, &w, x);
                        assert!(
                            (a - b).abs() <= 1e-5 * magnitude(name, &w, x).max(1e-6),
                            "{label} {name} nb={nb} x#{xi} {pattern:?}: {b} vs scalar {a}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn avx2_matches_scalar() {
        if !super::super::Simd::Avx2.is_supported() {
            return;
        }
        check_against_scalar(install, "avx2");
    }
}
