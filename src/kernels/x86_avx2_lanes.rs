//! Lane tiles for Q5_0 weights on AVX2 (CPUs without AVX-512
//! VNNI): batches of 8 or more tokens in the f32 order of
//! `tinyBLAS_Q0_AVX`, the order of the `Q0Tile` of [`super::x86_avx2_legacy`]
//! (per (row, token) eight accumulators, one per element quad of a block,
//! `acc_k = fma(d_w·d_x, Σ_k, acc_k)` block by block, then `hsum`), with the
//! tokens in the lanes of a 256-bit vector: each operation of a (row, token)
//! pair is one lane of a vector operation, so the results are bit for bit
//! those of the tile (tested in `kernels::tests`).
//!
//! The tile does the same work once per (row, token) pair, the fifth-bit
//! decoding and the scale product included; here a weight block is decoded once for
//! eight tokens, a weight quad is broadcast against the eight tokens' quads
//! (one load of interleaved activations), and no horizontal sums run until
//! the end of the row.
//!
//! The groups are the 16-token groups of [`super::tiles::LaneTile`]: the
//! kernel runs over the first eight tokens' half of each 64-byte item, then
//! over the second's (sixteen accumulators would not fit in AVX2's sixteen
//! registers).
//!
//! Safety: the kernels are `#[target_feature]` on avx2, fma, f16c;
//! `dispatch` installs them only after confirming those features. Loads go
//! through references to fixed-size arrays.

use super::dispatch::BatchDots;
use super::scalar_kquants::{unpack_k4, unpack_q3_k};
use super::tiles::{LANE_ROWS, LANES, LaneTile, interleave, prepare_group};
use super::x86_avx2_kquants::{f16, q3_k_quants, q4_k_quants, q5_k_quants, q6_k_quants};
use super::x86_avx2_legacy::{Q0Block, f16x1};
use crate::quant::{BlockQ3K, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K};
use std::arch::x86_64::*;

pub(super) fn install(batch: &mut BatchDots) {
    // Not Q8_0: its blocks cost nothing to decode, so the lanes save
    // little, and broadcasting a quad and its sign costs four shuffles on
    // Zen 3's two shuffle pipes; the row × token tiles ran 1B Q8_0 prefill
    // faster without them (2048→16384 × 512 tokens: 426–435 → 344–388 ms
    // with `Q0Tile`, pp512 36–40 → 44–49 tok/s; `q8_0_tile` since).
    // Q5_0 is interleaved where its rows allow; these serve the rest.
    batch.lanes.q5_0 = Some(LaneTile {
        dot: q0_lane_dot::<BlockQ5_0>,
        prepare: prepare_q0::<BlockQ5_0>,
    });
    // Q4_K is interleaved (its own kernels); these are its kin.
    batch.lanes.q5_k_tiled = Some(LaneTile {
        dot: k_lane_dot::<BlockQ5K>,
        prepare,
    });
    batch.lanes.q6_k_tiled = Some(LaneTile {
        dot: k_lane_dot::<BlockQ6K>,
        prepare,
    });
    batch.lanes.q3_k_tiled = Some(LaneTile {
        dot: k_lane_dot::<BlockQ3K>,
        prepare,
    });
}

// How the weights meet the signed activations in `vpmaddubsw` (unsigned ×
// signed): as stored, unsigned (`Q0Block::OFFSET` c, Q5_0: `u` ≤ 31, far
// from i16 saturation), the activations' side paying `−c·Σx` per quad.

/// Byte offsets in one prepared block (32 elements) of a group of
/// [`LANES`] tokens: quad `k` of token `t` (signed) at `64k + 4t`; the
/// tokens' `d` (f32) at [`Q0_D_AT`]` + 4t`; `−c·Σ_k x` (i32) at
/// [`Q0_CORRECTION_AT`]` + 64k + 4t`.
const Q0_D_AT: usize = 32 * LANES;
const Q0_CORRECTION_AT: usize = Q0_D_AT + 4 * LANES;
const Q0_BLOCK_BYTES: usize = Q0_CORRECTION_AT + 32 * LANES;

/// The [`super::tiles::PrepareLanes`] of weights `W`.
fn prepare_q0<W: Q0Block>(n: usize, x: &[u8], x_bytes: usize, tokens: usize, out: &mut Vec<u8>) {
    const { assert!(W::OFFSET != 0, "weights stored unsigned") };
    prepare_group(
        n / 32,
        Q0_BLOCK_BYTES,
        x,
        x_bytes,
        tokens,
        out,
        |y: &BlockQ8_0, t, dst| {
            interleave(bytemuck::cast_slice(&y.qs), t, dst);
            interleave(&y.d.to_f32().to_le_bytes(), t, &mut dst[Q0_D_AT..]);
            let c = i32::from(W::OFFSET);
            let corrections: [i32; 8] = std::array::from_fn(|k| {
                -c * y.qs[4 * k..4 * k + 4]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum::<i32>()
            });
            interleave(
                bytemuck::cast_slice(&corrections),
                t,
                &mut dst[Q0_CORRECTION_AT..],
            );
        },
    );
}

/// The [`super::tiles::LaneDot`] of weights `W`.
fn q0_lane_dot<W: Q0Block>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
) {
    // SAFETY: installed only on CPUs with avx2, fma and f16c.
    let row = |row: &[W], x: &[u8]| unsafe { [0, 1].map(|h| q0_lane_half::<W>(row, x, h)) };
    by_rows(n / 32, Q0_BLOCK_BYTES, w, row_bytes, rows, x, out, row);
}

/// The [`super::tiles::LaneDot`] contract over `kernel`, which takes one
/// row of `nb` blocks `B` and a prepared group (`block_bytes` a block) to
/// the two halves of the group's results: row by row.
#[allow(clippy::too_many_arguments)] // the `LaneDot` signature, and the kernel
#[inline(always)]
fn by_rows<B: bytemuck::Pod>(
    nb: usize,
    block_bytes: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
    kernel: impl Fn(&[B], &[u8]) -> [__m256; 2],
) {
    assert!((1..=LANE_ROWS).contains(&rows), "{rows} rows");
    let x = &x[..nb * block_bytes];
    for (r, out) in out.chunks_exact_mut(LANES).take(rows).enumerate() {
        let row = bytemuck::cast_slice(&w[r * row_bytes..r * row_bytes + nb * size_of::<B>()]);
        for (half, v) in kernel(row, x).into_iter().enumerate() {
            let o: &mut [f32; 8] = (&mut out[8 * half..8 * half + 8]).try_into().unwrap();
            // SAFETY: `o` is 8 writable f32; the store is unaligned.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
        }
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load(p: &[u8], off: usize) -> __m256i {
    let a: &[u8; 32] = p[off..off + 32].try_into().unwrap();
    // SAFETY: `a` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// One row × tokens `8 half..8 half + 8` of a prepared group.
#[target_feature(enable = "avx2,fma,f16c")]
fn q0_lane_half<W: Q0Block>(row: &[W], x: &[u8], half: usize) -> __m256 {
    const { assert!(W::OFFSET != 0, "weights stored unsigned") };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut unsigned = [0i32; 8];
    for (b, block) in row.iter().enumerate() {
        let xb = &x[b * Q0_BLOCK_BYTES..(b + 1) * Q0_BLOCK_BYTES];
        // SAFETY: the array is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(unsigned.as_mut_ptr().cast(), block.stored()) };
        let dx = _mm256_castsi256_ps(load(xb, Q0_D_AT + 32 * half));
        let d = _mm256_mul_ps(_mm256_set1_ps(f16x1(block.d())), dx);
        for k in 0..8 {
            let xq = load(xb, 64 * k + 32 * half);
            let pairs = _mm256_maddubs_epi16(_mm256_set1_epi32(unsigned[k]), xq);
            let sum = _mm256_madd_epi16(pairs, ones);
            let sum = _mm256_add_epi32(sum, load(xb, Q0_CORRECTION_AT + 64 * k + 32 * half));
            acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc[k]);
        }
    }
    hsum_lanes(acc)
}

/// The eight quad accumulators of a row summed lane by lane (a token per
/// lane) in `hsum`'s order: halves, then quarters, then pairs.
#[inline]
#[target_feature(enable = "avx")]
pub(super) fn hsum_lanes(acc: [__m256; 8]) -> __m256 {
    let s: [__m256; 4] = std::array::from_fn(|k| _mm256_add_ps(acc[k], acc[k + 4]));
    _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]))
}

// K-quants: the layout and the weight decoding that the AVX-512 lane tiles
// share (their decoding is AVX2).

/// Byte offsets in one block (256 elements) of a prepared group of
/// [`LANES`] tokens: the quants from 0 (element quad `e` of token `t` at
/// `64e + 4t`), the block-sum pairs from [`PAIRS_AT`] (`bsums[2k]` and
/// `bsums[2k + 1]` of token `t` as two i16 at `PAIRS_AT + 64k + 4t`), the
/// tokens' `d` from [`D_AT`] (f32 at `D_AT + 4t`).
pub(super) const PAIRS_AT: usize = 256 * LANES;
pub(super) const D_AT: usize = PAIRS_AT + 8 * 4 * LANES;
pub(super) const BLOCK_BYTES: usize = D_AT + 4 * LANES;

/// The [`super::tiles::PrepareLanes`] of every K-quant lane tile: `tokens`
/// Q8_K rows interleaved block by block (layout at [`PAIRS_AT`]).
pub(super) fn prepare(n: usize, x: &[u8], x_bytes: usize, tokens: usize, out: &mut Vec<u8>) {
    prepare_group(
        n / 256,
        BLOCK_BYTES,
        x,
        x_bytes,
        tokens,
        out,
        |y: &BlockQ8K, t, dst| {
            interleave(bytemuck::cast_slice(&y.qs), t, dst);
            interleave(bytemuck::cast_slice(&y.bsums), t, &mut dst[PAIRS_AT..]);
            interleave(bytemuck::bytes_of(&y.d), t, &mut dst[D_AT..]);
        },
    );
}

/// One weight block decoded for the lanes.
#[derive(Clone, Copy, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub(super) struct Decoded {
    /// The quants in element order, unsigned (offsets not applied).
    pub(super) q: [u8; 256],
    /// The integer scale of each sub-block (the first `256 / SUB`).
    pub(super) scales: [i32; 16],
    /// Two i16 factors (low, high half) for each pair of the tokens' block
    /// sums (`bsums[2k]`, `bsums[2k + 1]`): the minimums, or the offset
    /// times the scales.
    pub(super) pair_factors: [i32; 8],
    pub(super) d: f32,
    pub(super) dmin: f32,
}

/// Two i16 in the halves of an i32 lane, `lo` in the low one.
fn i16_pair(lo: i32, hi: i32) -> i32 {
    let half = |v: i32| u32::from(i16::try_from(v).expect("fits i16") as u16);
    (half(lo) | half(hi) << 16) as i32
}

/// A K-quant block type the lane tiles read.
pub(super) trait LaneBlock: bytemuck::Pod {
    /// Elements per sub-block (one scale each).
    const SUB: usize;
    /// Whether the block-sum term is a separate minimum (times `dmin`),
    /// else an offset inside the integer sum.
    const MINS: bool;
    fn decode(&self, out: &mut Decoded);
}

/// Stores the 32 quants `32i..32i + 32` into `out.q`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_quants(out: &mut Decoded, i: usize, v: __m256i) {
    let dst: &mut [u8; 32] = (&mut out.q[32 * i..32 * i + 32]).try_into().unwrap();
    // SAFETY: `dst` is 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// Q4_K and Q5_K: scales and minimums from ggml's `utmp` unpacking; pair
/// `k` is sub-block `k`'s two block sums, both times its minimum.
fn decode_k4(scales: &[u8; 12], d: f32, dmin: f32, out: &mut Decoded) {
    let u = unpack_k4(scales);
    for s in 0..8 {
        out.scales[s] = i32::from(u[s]);
        out.pair_factors[s] = i16_pair(i32::from(u[8 + s]), i32::from(u[8 + s]));
    }
    (out.d, out.dmin) = (d, dmin);
}

/// Q3_K and Q6_K: signed scales of 16-element sub-blocks; pair `k` is
/// sub-blocks `2k` and `2k + 1`, each times its scale and the offset.
fn decode_offset(scales: [i32; 16], offset: i32, d: f32, out: &mut Decoded) {
    out.scales = scales;
    for k in 0..8 {
        out.pair_factors[k] = i16_pair(offset * scales[2 * k], offset * scales[2 * k + 1]);
    }
    out.d = d;
}

/// A [`LaneBlock`] impl: `$quants` decodes 32 quants (from
/// `x86_avx2_kquants`), `$rest` fills the rest of the [`Decoded`] from the
/// block `$b`.
macro_rules! lane_block {
    ($block:ty, sub: $sub:expr, mins: $mins:expr, $quants:ident, |$b:ident, $out:ident| $rest:expr) => {
        impl LaneBlock for $block {
            const SUB: usize = $sub;
            const MINS: bool = $mins;
            #[inline(always)]
            fn decode(&self, $out: &mut Decoded) {
                let $b = self;
                // SAFETY: only called from the lane tiles, which have these features.
                unsafe {
                    for i in 0..8 {
                        store_quants($out, i, $quants($b, i));
                    }
                    $rest
                }
            }
        }
    };
}

lane_block!(BlockQ4K, sub: 32, mins: true, q4_k_quants, |b, out| {
    decode_k4(&b.scales, f16(b.d), f16(b.dmin), out)
});
lane_block!(BlockQ5K, sub: 32, mins: true, q5_k_quants, |b, out| {
    decode_k4(&b.scales, f16(b.d), f16(b.dmin), out)
});
lane_block!(BlockQ6K, sub: 16, mins: false, q6_k_quants, |b, out| {
    decode_offset(b.scales.map(i32::from), -32, f16(b.d), out)
});
lane_block!(BlockQ3K, sub: 16, mins: false, q3_k_quants, |b, out| {
    let scales = unpack_q3_k(&b.scales).map(|s| i32::from(s) - 32);
    decode_offset(scales, -4, f16(b.d), out)
});

/// The [`super::tiles::LaneDot`] of K-quant block type `K` in the order of
/// the tiled matmul's row dot (`dot_q6_k_tiled` and its kin in
/// `x86_avx2_kquants`): row by row, each block decoded once for the
/// group's sixteen tokens.
fn k_lane_dot<K: LaneBlock>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
) {
    // SAFETY: installed only on CPUs with avx2, fma and f16c.
    let row = |row: &[K], x: &[u8]| unsafe { k_lane_row::<K>(row, x) };
    by_rows(n / 256, BLOCK_BYTES, w, row_bytes, rows, x, out, row);
}

/// One row × one prepared group, as two halves of eight tokens. Per block,
/// the tiled order: `r = Σ·d_w`, less `dmin_w·Σm` in one FMA where the type
/// has minimums, then `acc = fma(r, d_x, acc)`. The exact integer sums:
/// per sub-block Σ q·x (`vpmaddubsw` pairs, at most 2·63·128 in i16, then
/// `vpmaddwd` into i32) times its scale, plus the block sums times their
/// pair factors (`vpmaddwd`).
#[target_feature(enable = "avx2,fma,f16c")]
fn k_lane_row<K: LaneBlock>(row: &[K], x: &[u8]) -> [__m256; 2] {
    let ones = _mm256_set1_epi16(1);
    let mut dec: Decoded = bytemuck::Zeroable::zeroed();
    let mut acc = [_mm256_setzero_ps(); 2];
    for (i, block) in row.iter().enumerate() {
        let xb = &x[i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES];
        block.decode(&mut dec);
        let d = _mm256_set1_ps(dec.d);
        let dmin = _mm256_set1_ps(dec.dmin);
        for (half, acc) in acc.iter_mut().enumerate() {
            let mut sum = _mm256_setzero_si256();
            let mut mins = _mm256_setzero_si256();
            for s in 0..256 / K::SUB {
                let mut raw = _mm256_setzero_si256();
                for g in 0..K::SUB / 4 {
                    let e = s * K::SUB + 4 * g;
                    let quad = i32::from_le_bytes(dec.q[e..e + 4].try_into().unwrap());
                    let xq = load(xb, 16 * e + 32 * half);
                    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi32(quad), xq);
                    raw = _mm256_add_epi32(raw, _mm256_madd_epi16(pairs, ones));
                }
                let scaled = _mm256_mullo_epi32(raw, _mm256_set1_epi32(dec.scales[s]));
                sum = _mm256_add_epi32(sum, scaled);
            }
            for k in 0..8 {
                let bsums = load(xb, PAIRS_AT + 64 * k + 32 * half);
                let term = _mm256_madd_epi16(bsums, _mm256_set1_epi32(dec.pair_factors[k]));
                if K::MINS {
                    mins = _mm256_add_epi32(mins, term);
                } else {
                    sum = _mm256_add_epi32(sum, term);
                }
            }
            let dx = _mm256_castsi256_ps(load(xb, D_AT + 32 * half));
            let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), d);
            if K::MINS {
                v = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(mins), v);
            }
            *acc = _mm256_fmadd_ps(v, dx, *acc);
        }
    }
    acc
}

/// The four bytes at `p` in every 32-bit lane, loaded by `vpbroadcastd`
/// from memory (a load, no shuffle). Written out because LLVM forwards the
/// store of a decoded block and broadcasts its quads from registers
/// instead, with a `vpshufd` and a `vpbroadcastd`/`vpermq` each: two
/// shuffles per weight quad on Zen 3's two shuffle pipes made the lane
/// kernels shuffle-bound (perf: 1B Q8_0 prefill, four shuffles per quad
/// with the sign).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn broadcast_from_memory(p: &[u8; 4]) -> __m256i {
    let v: __m256i;
    // SAFETY: reads the 4 bytes of `p`, with AVX2 enabled here.
    unsafe {
        std::arch::asm!(
            "vpbroadcastd {v}, dword ptr [{p}]",
            p = in(reg) p.as_ptr(),
            v = out(ymm_reg) v,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    v
}
