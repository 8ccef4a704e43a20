//! Lane tiles in the f32 orders of ggml's batch matmuls (the default, exact
//! kernels): up to [`LANE_ROWS`] weight rows × [`LANES`] tokens per call,
//! one token per lane of a 512-bit vector.
//!
//! Each (row, token) result is the sequence of f32 operations of the kernel
//! it stands for, each operation done for 16 tokens at once, one lane each,
//! so the results are bit for bit the same:
//!
//! - K-quants: the row dots of [`super::x86_avx2_kquants`], `dot_q4_k_gemm`
//!   (`ggml_gemm_q4_K_8x8_q8_K`) and `dot_q4_k_tiled`, `dot_q5_k_tiled`,
//!   `dot_q6_k_tiled`, `dot_q3_k_tiled` (ggml's tiled matmul);
//! - Q8_0 and Q5_0: `tinyBLAS_Q0_AVX`, the 4×4 `Q0Tile` of
//!   [`super::x86_avx2_legacy`] (eight FMA chains per pair, one per lane of
//!   its 256-bit accumulator, here eight vectors of 16 tokens).
//!
//! The integer sums in front of the f32 operations are exact whatever forms
//! them; here AVX-512 VNNI:
//!
//! - a `prepare` interleaves the activations of 16 tokens once per matmul:
//!   for every 4 consecutive elements the 16 tokens' 4 bytes side by side
//!   (64 bytes), then per-token terms (block sums, offset corrections) and
//!   scales in the same way ([`interleave`]);
//! - a weight block is decoded once per call into unsigned bytes in element
//!   order, and `vpdpbusd` multiplies 4 of them (broadcast) with the
//!   matching 4 activations of all 16 tokens: 64 products per instruction,
//!   no horizontal sums, the decode shared by the 16 tokens and the loads of
//!   activations by the rows;
//! - K-quants: the sub-block scales multiply the exact per-sub-block sums
//!   (`vpmulld`); the minimums (Q4_K, Q5_K) and the offsets (−4 of Q3_K, −32
//!   of Q6_K) come in through the block sums (`vpdpwssd`), as in the row
//!   dots. Q8_0/Q5_0: the weights' offset (`u = w + c`) comes off as a
//!   per-token `−c·Σx` per quad, the accumulator's start.
//!
//! Safety: every kernel is `#[target_feature]` on avx512f/bw/vl/vnni, avx2,
//! fma, f16c; [`install`] runs only after `dispatch` confirmed avx512f/bw/vl,
//! avx2, fma, f16c and itself checks avx512vnni, which is the safety argument
//! for each call. Loads go through references to fixed-size arrays.

use super::dispatch::BatchDots;
use super::tiles::{LANE_ROWS, LANES, LaneTile, interleave, prepare_group};
use super::x86_avx2_kquants::f16;
use super::x86_avx2_lanes::{BLOCK_BYTES, D_AT, LaneBlock, PAIRS_AT, prepare};
use super::x86_avx2_legacy::Q0Block;
use super::x86_avx512_tiles::{ld512, ld512_ps};
use crate::quant::{BlockQ3K, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0};
use std::arch::x86_64::*;

/// Installs the lane tiles of ggml's batch orders (only where the CPU has
/// VNNI).
pub(super) fn install(batch: &mut BatchDots) {
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    let k = |dot| Some(LaneTile { dot, prepare });
    batch.lanes.q4_k_gemm = k(lane_dot::<BlockQ4K, true>);
    batch.lanes.q4_k_tiled = k(lane_dot::<BlockQ4K, false>);
    batch.lanes.q5_k_tiled = k(lane_dot::<BlockQ5K, false>);
    batch.lanes.q6_k_tiled = k(lane_dot::<BlockQ6K, false>);
    batch.lanes.q3_k_tiled = k(lane_dot::<BlockQ3K, false>);
    batch.lanes.q8_0 = Some(LaneTile {
        dot: q0_lane_dot::<BlockQ8_0>,
        prepare: prepare_q0,
    });
    batch.lanes.q5_0 = Some(LaneTile {
        dot: q0_lane_dot::<BlockQ5_0>,
        prepare: prepare_q0,
    });
}

/// The [`super::tiles::LaneDot`] contract over a kernel of `R` rows (`full`)
/// and one of a single row (`one`): `R` rows at a time, then one by one.
#[inline(always)]
fn by_rows<const R: usize>(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    out: &mut [f32; LANE_ROWS * LANES],
    full: impl Fn([&[u8]; R]) -> [[f32; LANES]; R],
    one: impl Fn(&[u8]) -> [f32; LANES],
) {
    assert!((1..=LANE_ROWS).contains(&rows), "{rows} rows");
    let row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    let mut put = |r: usize, v: &[f32; LANES]| out[r * LANES..(r + 1) * LANES].copy_from_slice(v);
    let whole = rows - rows % R;
    for r0 in (0..whole).step_by(R) {
        for (i, v) in full(std::array::from_fn(|i| row(r0 + i)))
            .iter()
            .enumerate()
        {
            put(r0 + i, v);
        }
    }
    for r in whole..rows {
        put(r, &one(row(r)));
    }
}

/// The 16 lanes of `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lanes(v: __m512) -> [f32; LANES] {
    let mut o = [0f32; LANES];
    // SAFETY: `o` is 16 writable f32; the store is unaligned.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    o
}

/// The [`super::tiles::LaneDot`] of block type `K`: in the order of
/// `dot_q4_k_gemm` when `GEMM`, else of the tiled matmul's row dot.
fn lane_dot<K: LaneBlock, const GEMM: bool>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
) {
    by_rows::<LANE_ROWS>(
        w,
        row_bytes,
        rows,
        out,
        // SAFETY: installed only on CPUs with these features (module doc).
        |w| unsafe { lane_tile::<K, GEMM, LANE_ROWS>(n, w, x) },
        // SAFETY: as above.
        |w| unsafe { lane_tile::<K, GEMM, 1>(n, [w], x)[0] },
    );
}

/// `R` rows × one prepared group. Per block and row, ggml's order:
///
/// - `GEMM` (Q4_K, `dot_q4_k_gemm`): per 64 elements `j`, `acc = fma(Σ_j,
///   d_w·d_x, acc)` and `acc_m = fma(Σm_j, dmin_w·d_x, acc_m)`; at the end
///   `acc − acc_m`;
/// - tiled: `r = Σ·d_w`, less `dmin_w·Σm` in one FMA where the type has
///   minimums, then `acc = fma(r, d_x, acc)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lane_tile<K: LaneBlock, const GEMM: bool, const R: usize>(
    n: usize,
    w: [&[u8]; R],
    x: &[u8],
) -> [[f32; LANES]; R] {
    let nb = n / 256;
    let w: [&[K]; R] = w.map(|r| &bytemuck::cast_slice(&r[..nb * size_of::<K>()])[..nb]);
    let groups = if GEMM { 4 } else { 1 };
    let subs = 256 / K::SUB / groups;
    let pairs = 8 / groups;
    let mut dec = [bytemuck::Zeroable::zeroed(); R];
    let mut acc = [_mm512_setzero_ps(); R];
    let mut acc_m = [_mm512_setzero_ps(); R];
    for i in 0..nb {
        let xb: &[u8; BLOCK_BYTES] = x[i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES]
            .try_into()
            .unwrap();
        for (b, d) in w.iter().zip(dec.iter_mut()) {
            b[i].decode(d);
        }
        let dx = ld512_ps(xb, D_AT);
        let d: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(dec[r].d));
        let dmin: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(dec[r].dmin));
        // GEMM: d_w·d_x and dmin_w·d_x, once per block.
        let d_dx = d.map(|d| _mm512_mul_ps(d, dx));
        let dmin_dx = dmin.map(|m| _mm512_mul_ps(m, dx));
        for grp in 0..groups {
            let mut sum = [_mm512_setzero_si512(); R];
            let mut mins = [_mm512_setzero_si512(); R];
            for s in grp * subs..(grp + 1) * subs {
                // Two chains per row: the adds' latency, not their count,
                // would bound one.
                let mut raw = [[_mm512_setzero_si512(); 2]; R];
                for g in 0..K::SUB / 4 {
                    let e = s * K::SUB + 4 * g;
                    let xq = ld512(xb, 16 * e);
                    for (raw, dec) in raw.iter_mut().zip(&dec) {
                        let quad = i32::from_le_bytes(dec.q[e..e + 4].try_into().unwrap());
                        raw[g % 2] = _mm512_dpbusd_epi32(raw[g % 2], _mm512_set1_epi32(quad), xq);
                    }
                }
                for r in 0..R {
                    let scaled = _mm512_mullo_epi32(
                        _mm512_add_epi32(raw[r][0], raw[r][1]),
                        _mm512_set1_epi32(dec[r].scales[s]),
                    );
                    sum[r] = _mm512_add_epi32(sum[r], scaled);
                }
            }
            for k in grp * pairs..(grp + 1) * pairs {
                let bsums = ld512(xb, PAIRS_AT + 64 * k);
                for r in 0..R {
                    let f = _mm512_set1_epi32(dec[r].pair_factors[k]);
                    let term = if K::MINS { &mut mins[r] } else { &mut sum[r] };
                    *term = _mm512_dpwssd_epi32(*term, bsums, f);
                }
            }
            for r in 0..R {
                let s = _mm512_cvtepi32_ps(sum[r]);
                if GEMM {
                    acc[r] = _mm512_fmadd_ps(s, d_dx[r], acc[r]);
                    let m = _mm512_cvtepi32_ps(mins[r]);
                    acc_m[r] = _mm512_fmadd_ps(m, dmin_dx[r], acc_m[r]);
                } else {
                    let mut v = _mm512_mul_ps(s, d[r]);
                    if K::MINS {
                        v = _mm512_fnmadd_ps(dmin[r], _mm512_cvtepi32_ps(mins[r]), v);
                    }
                    acc[r] = _mm512_fmadd_ps(v, dx, acc[r]);
                }
            }
        }
    }
    std::array::from_fn(|r| {
        lanes(if GEMM {
            _mm512_sub_ps(acc[r], acc_m[r])
        } else {
            acc[r]
        })
    })
}

/// Byte offsets in one block (32 elements) of a prepared Q8_0 group for
/// the Q8_0/Q5_0 lanes: the quants plus 128 (unsigned) from 0 (quad `e` of
/// token `t` at `64e + 4t`), the tokens' `d` from [`Q0_D_AT`] (f32 at
/// `Q0_D_AT + 4t`).
const Q0_D_AT: usize = 32 * LANES;
const Q0_BLOCK_BYTES: usize = Q0_D_AT + 4 * LANES;

/// The [`super::tiles::PrepareLanes`] of the Q8_0/Q5_0 lanes (layout at
/// [`Q0_D_AT`]).
fn prepare_q0(n: usize, x: &[u8], x_bytes: usize, tokens: usize, out: &mut Vec<u8>) {
    let bytes = Q0_BLOCK_BYTES;
    prepare_group(
        n / 32,
        bytes,
        x,
        x_bytes,
        tokens,
        out,
        |y: &BlockQ8_0, t, dst| {
            interleave(&y.qs.map(|q| q as u8 ^ 0x80), t, dst);
            interleave(&y.d.to_f32().to_le_bytes(), t, &mut dst[Q0_D_AT..]);
        },
    );
}

/// The [`super::tiles::LaneDot`] of Q8_0 or Q5_0 weights in the order of
/// `tinyBLAS_Q0_AVX`: two rows per kernel call (eight accumulators each).
fn q0_lane_dot<W: Q0Block>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
) {
    by_rows::<2>(
        w,
        row_bytes,
        rows,
        out,
        // SAFETY: installed only on CPUs with these features (module doc).
        |w| unsafe { q0_lane_tile::<W, 2>(n, w, x) },
        // SAFETY: as above.
        |w| unsafe { q0_lane_tile::<W, 1>(n, [w], x)[0] },
    );
}

/// `R` rows × one prepared group, per (row, token) the order of
/// `tinyBLAS_Q0_AVX` (`Q0Tile`): eight accumulators, one per quad `k` of a
/// block, `acc_k = fma(d_w·d_x, Σ_k, acc_k)` block by block, then its
/// `hsum`: `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`. The signed
/// weights are the broadcast operand of `vpdpbusd` against the activations
/// plus 128, which start from `−128·Σ_k w` (the weights' side: the
/// prepared activations stay small enough for L1).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q0_lane_tile<W: Q0Block, const R: usize>(
    n: usize,
    w: [&[u8]; R],
    x: &[u8],
) -> [[f32; LANES]; R] {
    let nb = n / 32;
    let w: [&[W]; R] = w.map(|r| &bytemuck::cast_slice(&r[..nb * size_of::<W>()])[..nb]);
    let mut acc = [[_mm512_setzero_ps(); 8]; R];
    let mut q = [[0u8; 32]; R];
    let mut corr = [[0i32; 8]; R];
    for b in 0..nb {
        let xb: &[u8; Q0_BLOCK_BYTES] = x[b * Q0_BLOCK_BYTES..(b + 1) * Q0_BLOCK_BYTES]
            .try_into()
            .unwrap();
        let dx = ld512_ps(xb, Q0_D_AT);
        let mut d = [_mm512_setzero_ps(); R];
        for r in 0..R {
            let block = &w[r][b];
            let signed = block.signed();
            // 128·Σ_k w (128 as the unsigned operand), negated.
            let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(-128), signed);
            let c = _mm256_sub_epi32(_mm256_setzero_si256(), sums);
            // SAFETY: `q[r]` is 32 and `corr[r]` 8 × 4 writable bytes; the
            // stores are unaligned.
            unsafe {
                _mm256_storeu_si256(q[r].as_mut_ptr().cast(), signed);
                _mm256_storeu_si256(corr[r].as_mut_ptr().cast(), c);
            }
            d[r] = _mm512_mul_ps(_mm512_set1_ps(f16(block.d())), dx);
        }
        for k in 0..8 {
            let xq = ld512(xb, 64 * k);
            for r in 0..R {
                let quad = i32::from_le_bytes(q[r][4 * k..4 * k + 4].try_into().unwrap());
                let start = _mm512_set1_epi32(corr[r][k]);
                let sum = _mm512_dpbusd_epi32(start, xq, _mm512_set1_epi32(quad));
                acc[r][k] = _mm512_fmadd_ps(d[r], _mm512_cvtepi32_ps(sum), acc[r][k]);
            }
        }
    }
    acc.map(|a| {
        let s: [__m512; 4] = std::array::from_fn(|k| _mm512_add_ps(a[k], a[k + 4]));
        let (even, odd) = (_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
        lanes(_mm512_add_ps(even, odd))
    })
}

#[cfg(test)]
mod tests {
    use super::super::quant_dots::VecDot;
    use super::super::scalar_kquants::test_support::*;
    use super::super::x86_avx2_kquants as rows;
    use super::*;

    /// `tile` against `want(weight row, token)` bit for bit, for every
    /// weight set and activation set given, every count of tokens in a group
    /// and every row count of a call.
    #[allow(clippy::too_many_arguments)]
    fn check_lanes(
        name: &str,
        tile: LaneTile,
        n: usize,
        row_bytes: usize,
        weights: &[Vec<u8>],
        acts: &[&[u8]],
        x_bytes: usize,
        want: impl Fn(&[u8], &[u8]) -> f32,
    ) {
        for (wi, w) in weights.iter().enumerate() {
            for (xi, xs) in acts.iter().enumerate() {
                for tokens in 1..=LANES {
                    let mut group = Vec::new();
                    (tile.prepare)(n, xs, x_bytes, tokens, &mut group);
                    for rows in 1..=LANE_ROWS {
                        let mut out = [f32::NAN; LANE_ROWS * LANES];
                        (tile.dot)(n, w, row_bytes, rows, &group, &mut out);
                        for r in 0..rows {
                            for t in 0..tokens {
                                let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                                let want = want(wr, &xs[t * x_bytes..(t + 1) * x_bytes]);
                                let got = out[r * LANES + t];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{name} n {n} w#{wi} x#{xi} {rows} rows {tokens} tokens \
                                     r {r} t {t}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The Q8_0 and Q5_0 lanes against `Q0Tile` (one row, one token), bit
    /// for bit: every row and token count, ragged block counts, random data
    /// and the extremes (quants at −128 / 31, activations at ±127).
    #[test]
    fn q0_lanes_equal_the_q0_tile_bit_for_bit() {
        use crate::quant::float::F16Le;
        if !crate::kernels::Simd::Avx512.is_supported() || !is_x86_feature_detected!("avx512vnni") {
            return;
        }
        let mut batch = BatchDots::default();
        install(&mut batch);
        let mut tiles = super::super::tiles::QuantTiles::default();
        super::super::x86_avx2_legacy::install_tiles(&mut tiles);
        let cases = [
            (
                "q8_0",
                batch.lanes.q8_0,
                tiles.q8_0,
                size_of::<BlockQ8_0>(),
                0x80u8,
            ),
            (
                "q5_0",
                batch.lanes.q5_0,
                tiles.q5_0,
                size_of::<BlockQ5_0>(),
                0xff,
            ),
        ];
        for (name, lane, tile, size, extreme_quant) in cases {
            let (lane, tile) = (lane.expect(name), tile.expect(name));
            for nb in [1, 2, 3, 7, 20] {
                let n = 32 * nb;
                let x_bytes = nb * size_of::<BlockQ8_0>();
                let mut random = Vec::new();
                let mut extreme = Vec::new();
                for t in 0..LANES {
                    let mut row = Vec::new();
                    let v = crate::kernels::test_rng::values(n, (7 * nb + t) as u64);
                    crate::quant::quantize_row(crate::gguf::GgmlType::Q8_0, &v, &mut row).unwrap();
                    random.extend_from_slice(&row);
                    let sign = if t % 2 == 0 { 1.0 } else { -1.0 };
                    crate::quant::quantize_row(
                        crate::gguf::GgmlType::Q8_0,
                        &vec![sign; n],
                        &mut row,
                    )
                    .unwrap();
                    extreme.extend_from_slice(&row);
                }
                let d = |i: usize| {
                    F16Le(half::f16::from_f32(0.01 + 0.002 * (i % 5) as f32).to_le_bytes())
                };
                let mut weights = [
                    crate::kernels::test_rng::bytes(size * nb * LANE_ROWS, 3 + nb as u64),
                    vec![extreme_quant; size * nb * LANE_ROWS],
                ];
                for w in &mut weights {
                    for (i, block) in w.chunks_mut(size).enumerate() {
                        block[..2].copy_from_slice(&d(i).0);
                    }
                }
                let one = |w: &[u8], x: &[u8]| {
                    let mut o = [0f32; 16];
                    (tile.dot)(n, w, size * nb, 1, x, x_bytes, 1, &mut o);
                    o[0]
                };
                let acts = [&random[..], &extreme[..]];
                check_lanes(name, lane, n, size * nb, &weights, &acts, x_bytes, one);
            }
        }
    }

    /// Every lane tile against the row dot it stands for, bit for bit: full
    /// and one-row calls, every count of tokens in a group, ragged block
    /// counts; random quants and scales, and the extremes (every field at
    /// its largest, activations all 127 or all −128).
    #[test]
    fn lane_tiles_equal_their_row_dots_bit_for_bit() {
        let mut batch = BatchDots::default();
        if !crate::kernels::Simd::Avx512.is_supported() || !is_x86_feature_detected!("avx512vnni") {
            return;
        }
        install(&mut batch);
        let l = batch.lanes;
        let cases: [(&str, Option<LaneTile>, VecDot); 5] = [
            ("q4_k gemm", l.q4_k_gemm, rows::dot_q4_k_gemm),
            ("q4_k tiled", l.q4_k_tiled, rows::dot_q4_k_tiled),
            ("q5_k tiled", l.q5_k_tiled, rows::dot_q5_k_tiled),
            ("q6_k tiled", l.q6_k_tiled, rows::dot_q6_k_tiled),
            ("q3_k tiled", l.q3_k_tiled, rows::dot_q3_k_tiled),
        ];
        for (name, tile, row_dot) in cases {
            let tile = tile.expect(name);
            let (_, size, halves) = TYPES
                .into_iter()
                .find(|t| t.0 == &name[..4])
                .expect("a block type");
            for nb in [1, 2, 3, 8] {
                let n = 256 * nb;
                let x_bytes = nb * size_of::<crate::quant::BlockQ8K>();
                let random: Vec<u8> = (0..LANES)
                    .flat_map(|t| activations(n, (100 * nb + t) as u64))
                    .collect();
                let mut extreme = constant_activations(nb, 127, 0.75);
                extreme.extend(constant_activations(nb, -128, 1.5));
                let extreme = extreme.repeat(LANES / 2);
                let scale = |i: usize| 0.01 + 0.003 * (i % 7) as f32 - 0.02 * (i % 3) as f32;
                let weights = [
                    weights(size, halves, nb * LANE_ROWS, 5 + nb as u64, scale),
                    saturated_weights(size, halves, nb * LANE_ROWS),
                ];
                let acts = [&random[..], &extreme[..]];
                let want = |w: &[u8], x: &[u8]| row_dot(n, w, x);
                check_lanes(name, tile, n, size * nb, &weights, &acts, x_bytes, want);
            }
        }
    }
}
