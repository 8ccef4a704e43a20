//! Lane tiles for Q8_0 and Q5_0 weights on AVX2 (CPUs without AVX-512
//! VNNI): batches of 8 or more tokens in the f32 order of
//! `tinyBLAS_Q0_AVX`, the order of the `Q0Tile` of [`super::x86_avx2_legacy`]
//! (per (row, token) eight accumulators, one per element quad of a block,
//! `acc_k = fma(d_w·d_x, Σ_k, acc_k)` block by block, then `hsum`), with the
//! tokens in the lanes of a 256-bit vector: each operation of a (row, token)
//! pair is one lane of a vector operation, so the results are bit for bit
//! those of the tile (tested in `kernels::tests`).
//!
//! The tile does the same work once per (row, token) pair, the sign trick
//! and the scale product included; here a weight block is decoded once for
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
use super::tiles::{LANE_ROWS, LANES, LaneTile, interleave, prepare_group};
use super::x86_avx2_legacy::{Q0Block, f16x1};
use crate::quant::{BlockQ5_0, BlockQ8_0};
use std::arch::x86_64::*;

pub(super) fn install(batch: &mut BatchDots) {
    batch.lanes.q8_0 = Some(LaneTile {
        dot: lane_dot::<BlockQ8_0>,
        prepare: prepare::<BlockQ8_0>,
    });
    batch.lanes.q5_0 = Some(LaneTile {
        dot: lane_dot::<BlockQ5_0>,
        prepare: prepare::<BlockQ5_0>,
    });
}

/// How a weight type's signed bytes `w` meet the signed activations in
/// `vpmaddubsw` (unsigned × signed).
trait LaneWeights: Q0Block {
    /// `c` where the weights are taken as unsigned `u = w + c` and the
    /// activations' side pays `−c·Σx` per quad (Q5_0: `u` ≤ 31, so the
    /// pair sums stay far from i16 saturation); 0: the sign trick instead,
    /// `|w|` against `x·sign(w)` (Q8_0, as in ggml).
    const OFFSET: i8;
}

impl LaneWeights for BlockQ8_0 {
    const OFFSET: i8 = 0;
}

impl LaneWeights for BlockQ5_0 {
    const OFFSET: i8 = 16;
}

/// Byte offsets in one prepared block (32 elements) of a group of
/// [`LANES`] tokens: quad `k` of token `t` (signed) at `64k + 4t`; the
/// tokens' `d` (f32) at [`D_AT`]` + 4t`; with an offset, `−c·Σ_k x` (i32)
/// at [`CORRECTION_AT`]` + 64k + 4t`.
const D_AT: usize = 32 * LANES;
const CORRECTION_AT: usize = D_AT + 4 * LANES;

const fn block_bytes<W: LaneWeights>() -> usize {
    if W::OFFSET == 0 {
        CORRECTION_AT
    } else {
        CORRECTION_AT + 32 * LANES
    }
}

/// The [`super::tiles::PrepareLanes`] of weights `W`.
fn prepare<W: LaneWeights>(n: usize, x: &[u8], x_bytes: usize, tokens: usize, out: &mut Vec<u8>) {
    prepare_group(
        n / 32,
        block_bytes::<W>(),
        x,
        x_bytes,
        tokens,
        out,
        |y: &BlockQ8_0, t, dst| {
            interleave(bytemuck::cast_slice(&y.qs), t, dst);
            interleave(&y.d.to_f32().to_le_bytes(), t, &mut dst[D_AT..]);
            if W::OFFSET != 0 {
                let c = i32::from(W::OFFSET);
                let corrections: Vec<u8> = y
                    .qs
                    .chunks_exact(4)
                    .flat_map(|q| (-c * q.iter().map(|&v| i32::from(v)).sum::<i32>()).to_le_bytes())
                    .collect();
                interleave(&corrections, t, &mut dst[CORRECTION_AT..]);
            }
        },
    );
}

/// The [`super::tiles::LaneDot`] of weights `W`: row by row, each row over
/// the group's two halves of eight tokens.
fn lane_dot<W: LaneWeights>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
) {
    assert!((1..=LANE_ROWS).contains(&rows), "{rows} rows");
    let nb = n / 32;
    let bytes = block_bytes::<W>();
    assert!(x.len() >= nb * bytes);
    for r in 0..rows {
        let row: &[W] =
            bytemuck::cast_slice(&w[r * row_bytes..r * row_bytes + nb * size_of::<W>()]);
        for half in 0..2 {
            // SAFETY: installed only on CPUs with avx2, fma and f16c.
            let v = unsafe { lane_half::<W>(row, x, half) };
            let o: &mut [f32; 8] = (&mut out[r * LANES + 8 * half..r * LANES + 8 * half + 8])
                .try_into()
                .unwrap();
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
fn lane_half<W: LaneWeights>(row: &[W], x: &[u8], half: usize) -> __m256 {
    let bytes = block_bytes::<W>();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut unsigned = [0i32; 8];
    let mut signs = [0i32; 8];
    for (b, block) in row.iter().enumerate() {
        let xb = &x[b * bytes..(b + 1) * bytes];
        let signed = block.signed();
        let u = if W::OFFSET == 0 {
            _mm256_sign_epi8(signed, signed)
        } else {
            _mm256_add_epi8(signed, _mm256_set1_epi8(W::OFFSET))
        };
        // SAFETY: the arrays are 32 writable bytes; the stores are unaligned.
        unsafe {
            _mm256_storeu_si256(unsigned.as_mut_ptr().cast(), u);
            _mm256_storeu_si256(signs.as_mut_ptr().cast(), signed);
        }
        let dx = _mm256_castsi256_ps(load(xb, D_AT + 32 * half));
        let d = _mm256_mul_ps(_mm256_set1_ps(f16x1(block.d())), dx);
        for k in 0..8 {
            let mut xq = load(xb, 64 * k + 32 * half);
            if W::OFFSET == 0 {
                xq = _mm256_sign_epi8(xq, _mm256_set1_epi32(signs[k]));
            }
            let pairs = _mm256_maddubs_epi16(_mm256_set1_epi32(unsigned[k]), xq);
            let mut sum = _mm256_madd_epi16(pairs, ones);
            if W::OFFSET != 0 {
                sum = _mm256_add_epi32(sum, load(xb, CORRECTION_AT + 64 * k + 32 * half));
            }
            acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc[k]);
        }
    }
    // `hsum`'s order, lane by lane.
    let s: [__m256; 4] = std::array::from_fn(|k| _mm256_add_ps(acc[k], acc[k + 4]));
    _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]))
}
