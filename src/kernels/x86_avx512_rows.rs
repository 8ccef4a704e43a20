//! Four weight rows at once in ggml's one-row f32 order, for matrix ×
//! vector (decode) with Q8_0 and Q5_0 weights.
//!
//! ggml's `ggml_vec_dot_q{8,5}_0_q8_0` (the AVX2 branch llama.cpp runs on
//! every x86 CPU) keeps one 8-lane accumulator per row and adds one block
//! per FMA: a single dependency chain, and enough shuffling per block that
//! one row streams at well under the memory's speed. The order is per lane,
//! so two rows can share one 512-bit register (row `r` in the low eight
//! lanes, row `r + 1` in the high eight) and every lane still sees exactly
//! ggml's sequence of FMAs: four rows are two independent chains, each
//! instruction doing two rows' work, and the activation block is loaded
//! once for the four. The results are bit for bit those of the one-row
//! kernels in `x86_avx2_legacy` (tested below), so decode keeps llama.cpp's
//! logits.
//!
//! The integer part differs in form only (exact either way): weights as
//! unsigned bytes `u = w + c` (Q8_0: `w ^ 0x80`, c = 128; Q5_0: nibble and
//! fifth bit, c = 16) through `vpdpbusd`, started from `−c · Σx` per group
//! of four so each `i32` lane ends at ggml's `Σ w·x`.
//!
//! Safety: every function here is `#[target_feature]`; `install` puts them
//! in the table only after `dispatch` confirmed avx512f/bw/vl, avx2, fma
//! and f16c and `install` itself confirmed avx512vnni, which is the safety
//! argument for each call below.

use super::dispatch::BatchDots;
use super::tiles::TILE;
use super::x86_avx2_legacy::{self as avx2, f16x1, hsum};
use crate::quant::float::F16Le;
use crate::quant::{BlockQ5_0, BlockQ8_0};
use std::arch::x86_64::*;

use super::quant_dots::ROWS;

/// Installs the four-row kernels beside the one-row kernels they equal.
pub(super) fn install(batch: &mut BatchDots) {
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    batch.rows[0] = Some((avx2::dot_q8_0, rows_q8_0));
    batch.rows[1] = Some((avx2::dot_q5_0, rows_q5_0));
    batch.singles_tiles[2] = Some((
        avx2::dot_q8_0,
        tile::<BlockQ8_0>,
        Some(prepare::<BlockQ8_0>),
    ));
    batch.singles_tiles[3] = Some((
        avx2::dot_q5_0,
        tile::<BlockQ5_0>,
        Some(prepare::<BlockQ5_0>),
    ));
}

/// One Q8_0 activation block as the singles tile reads it: what [`rows`]
/// would otherwise derive from the block once per four weight rows, derived
/// once per token instead (measured with the scales hoisted beside it:
/// Gemma's 4-sequence decode step 17.1–17.3 → 14.7–16.1 ms).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PreparedBlock {
    /// `−c · Σx` per group of four bytes, `c` the weight type's offset.
    start: [i32; 8],
    qs: [i8; 32],
    /// The block's scale as f32.
    d: f32,
}

const _: () = assert!(size_of::<PreparedBlock>() == 68);

/// Q8_0 activations (`n` elements, in `x`) in the [`PreparedBlock`] layout
/// for weights of type `W`, appended to `out`.
fn prepare<W: OffsetBlock>(n: usize, x: &[u8], out: &mut Vec<u8>) {
    let blocks = q8_0_blocks(n, x);
    let first = out.len();
    out.resize(first + blocks.len() * size_of::<PreparedBlock>(), 0);
    let prepared: &mut [PreparedBlock] = bytemuck::cast_slice_mut(&mut out[first..]);
    // SAFETY: installed only on CPUs with the features `prepare_blocks`
    // enables.
    unsafe { prepare_blocks::<W>(blocks, prepared) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn prepare_blocks<W: OffsetBlock>(blocks: &[BlockQ8_0], out: &mut [PreparedBlock]) {
    for (b, p) in blocks.iter().zip(out) {
        // SAFETY: reads the 32 bytes of `qs`, writes the 32 of `start`.
        unsafe {
            let start = offset_start::<W>(_mm256_loadu_si256(b.qs.as_ptr().cast()));
            _mm256_storeu_si256(p.start.as_mut_ptr().cast(), start);
        }
        p.qs = b.qs;
        p.d = f16x1(b.d);
    }
}

/// `−c · Σx` per four bytes of an activation block `q`, the accumulator
/// `vpdpbusd` starts from so each lane ends at `Σ w·x` (`c` read unsigned:
/// Q8_0's byte −128 is 128).
#[inline(always)]
unsafe fn offset_start<W: OffsetBlock>(q: __m256i) -> __m256i {
    // SAFETY: inlined only into functions with avx512vl/vnni enabled.
    unsafe {
        let sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(W::OFFSET), q);
        _mm256_sub_epi32(_mm256_setzero_si256(), sum)
    }
}

/// What [`rows`] needs of one activation block: the 32 bytes broadcast to
/// both halves, `−c · Σx` per four (both halves), and the scale.
trait ActivationBlock: bytemuck::Pod {
    unsafe fn parts<W: OffsetBlock>(&self) -> (__m512i, __m512i, __m512);
}

impl ActivationBlock for BlockQ8_0 {
    #[inline(always)]
    unsafe fn parts<W: OffsetBlock>(&self) -> (__m512i, __m512i, __m512) {
        // SAFETY: see the module doc; reads the 32 bytes of `qs`.
        unsafe {
            let q = _mm256_loadu_si256(self.qs.as_ptr().cast());
            let start = _mm512_broadcast_i64x4(offset_start::<W>(q));
            (
                _mm512_broadcast_i64x4(q),
                start,
                _mm512_set1_ps(f16x1(self.d)),
            )
        }
    }
}

impl ActivationBlock for PreparedBlock {
    #[inline(always)]
    unsafe fn parts<W: OffsetBlock>(&self) -> (__m512i, __m512i, __m512) {
        // SAFETY: see the module doc; reads the block's own fields.
        unsafe {
            let xq = _mm512_broadcast_i64x4(_mm256_loadu_si256(self.qs.as_ptr().cast()));
            let start = _mm512_broadcast_i64x4(_mm256_loadu_si256(self.start.as_ptr().cast()));
            (xq, start, _mm512_set1_ps(self.d))
        }
    }
}

/// A weight block of a `_0` type in the form `vpdpbusd` takes.
trait OffsetBlock: bytemuck::Pod {
    /// `c` in `w = u − c`.
    const OFFSET: i8;
    /// The unsigned bytes `u` of two blocks in element order, the first in
    /// the low 256 bits.
    fn unsigned_pair(a: &Self, b: &Self) -> __m512i;
    fn d(&self) -> F16Le;
}

impl OffsetBlock for BlockQ8_0 {
    const OFFSET: i8 = -128;
    #[inline(always)]
    fn unsigned_pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: see the module doc; reads the 32 bytes of each `qs`.
        unsafe {
            let lo = _mm256_loadu_si256(a.qs.as_ptr().cast());
            let hi = _mm256_loadu_si256(b.qs.as_ptr().cast());
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            _mm512_xor_si512(w, _mm512_set1_epi8(-128))
        }
    }
    fn d(&self) -> F16Le {
        self.d
    }
}

impl OffsetBlock for BlockQ5_0 {
    const OFFSET: i8 = 16;
    #[inline(always)]
    fn unsigned_pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: see the module doc; reads the 16 bytes of each `qs`.
        unsafe {
            // [a.qs, b.qs, a.qs >> 4, b.qs >> 4], regrouped per block as
            // [a low nibbles, a high nibbles, b low, b high].
            let qa = _mm_loadu_si128(a.qs.as_ptr().cast());
            let qb = _mm_loadu_si128(b.qs.as_ptr().cast());
            let q = _mm256_inserti128_si256(_mm256_castsi128_si256(qa), qb, 1);
            let both = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
            let nibbles = _mm512_and_si512(
                _mm512_shuffle_i64x2(both, both, 0b11_01_10_00),
                _mm512_set1_epi8(0x0f),
            );
            // Bit j of `qh` is the fifth bit of element j.
            let fifth =
                u64::from(u32::from_le_bytes(a.qh)) | u64::from(u32::from_le_bytes(b.qh)) << 32;
            _mm512_mask_add_epi8(nibbles, fifth, nibbles, _mm512_set1_epi8(16))
        }
    }
    fn d(&self) -> F16Le {
        self.d
    }
}

fn rows_q8_0(n: usize, w: &[u8], row_bytes: usize, x: &[u8]) -> [f32; ROWS] {
    // SAFETY: installed only on CPUs with the features `rows` enables.
    let [out] = unsafe { rows::<BlockQ8_0, _, 1>(n, w, row_bytes, [q8_0_blocks(n, x)]) };
    out
}

fn rows_q5_0(n: usize, w: &[u8], row_bytes: usize, x: &[u8]) -> [f32; ROWS] {
    // SAFETY: installed only on CPUs with the features `rows` enables.
    let [out] = unsafe { rows::<BlockQ5_0, _, 1>(n, w, row_bytes, [q8_0_blocks(n, x)]) };
    out
}

/// The Q8_0 blocks of a row of `n` activations.
fn q8_0_blocks(n: usize, x: &[u8]) -> &[BlockQ8_0] {
    bytemuck::cast_slice(&x[..n / 32 * size_of::<BlockQ8_0>()])
}

/// The single tokens of a continuous batch (one per sequence, each in its
/// one-row order), up to [`TILE`] of them over four rows at once, their
/// activations [`prepare`]d: each (row, token) is bit for bit [`rows`] with
/// that token alone, which is the one-row kernel's result.
#[allow(clippy::too_many_arguments)] // the `TileDot` signature
fn tile<W: OffsetBlock>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows_here: usize,
    x: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [f32; TILE * TILE],
) {
    if rows_here < ROWS {
        // The matrix's last rows (rare: model widths are multiples of
        // four): four rows again, the missing ones zero blocks whose
        // results are dropped; rows never mix.
        let mut padded = vec![0u8; ROWS * row_bytes];
        padded[..rows_here * row_bytes].copy_from_slice(&w[..rows_here * row_bytes]);
        return tile::<W>(n, &padded, row_bytes, ROWS, x, x_bytes, tokens, out);
    }
    let xt =
        |t: usize| -> &[PreparedBlock] { bytemuck::cast_slice(&x[t * x_bytes..(t + 1) * x_bytes]) };
    let mut put = |t0: usize, o: &[[f32; ROWS]]| {
        for (t, o) in o.iter().enumerate() {
            out[(t0 + t) * TILE..(t0 + t) * TILE + ROWS].copy_from_slice(o);
        }
    };
    // SAFETY (each call): installed only on CPUs with the features `rows`
    // enables.
    match tokens {
        4 => put(0, &unsafe {
            rows::<W, _, 4>(n, w, row_bytes, std::array::from_fn(xt))
        }),
        3 => put(0, &unsafe {
            rows::<W, _, 3>(n, w, row_bytes, std::array::from_fn(xt))
        }),
        2 => put(0, &unsafe {
            rows::<W, _, 2>(n, w, row_bytes, std::array::from_fn(xt))
        }),
        _ => {
            for t in 0..tokens {
                put(t, &unsafe { rows::<W, _, 1>(n, w, row_bytes, [xt(t)]) });
            }
        }
    }
}

/// `ggml_vec_dot_*_q8_0` of four consecutive rows (`row_bytes` each, in
/// `w`) with each of `T` tokens' Q8_0 activations `xs`: per row, token and
/// block, `acc = fma(d_w·d_x, f32(Σ w·x per four), acc)`, then `hsum`. The
/// weights are unpacked once for all the tokens.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows<W: OffsetBlock, X: ActivationBlock, const T: usize>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    xs: [&[X]; T],
) -> [[f32; ROWS]; T] {
    let nb = n / 32;
    let row = |r: usize| -> &[W] {
        bytemuck::cast_slice(&w[r * row_bytes..r * row_bytes + nb * size_of::<W>()])
    };
    let (w0, w1, w2, w3) = (row(0), row(1), row(2), row(3));
    // Lane k of each half takes product k of the four: rows 0, 1 | 2, 3.
    let spread01 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let spread23 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    let mut acc01 = [_mm512_setzero_ps(); T];
    let mut acc23 = [_mm512_setzero_ps(); T];
    // Prefetched as the AVX2 four-row kernel does (1B-model ffn_down,
    // 8192 → 2048 from DRAM: 14.4 → 19.6 GB/s on one thread, 26.9 → 31.6 on
    // two).
    let ahead = avx2::RowsAhead::new(w, row_bytes);
    for b in 0..nb {
        ahead.block::<W>(b);
        let u01 = W::unsigned_pair(&w0[b], &w1[b]);
        let u23 = W::unsigned_pair(&w2[b], &w3[b]);
        // The rows' scales as f32 once for all the tokens, spread to their
        // lanes; `d_w · d_x` is then one multiply per token (the same f32
        // product ggml rounds).
        let dw = _mm512_castps128_ps512(scales4([w0[b].d(), w1[b].d(), w2[b].d(), w3[b].d()]));
        let (dw01, dw23) = (
            _mm512_permutexvar_ps(spread01, dw),
            _mm512_permutexvar_ps(spread23, dw),
        );
        for t in 0..T {
            // SAFETY: this function's features are `parts`'s.
            let (xq, start, dx) = unsafe { xs[t][b].parts::<W>() };
            let lanes01 = _mm512_dpbusd_epi32(start, u01, xq);
            let lanes23 = _mm512_dpbusd_epi32(start, u23, xq);
            acc01[t] = _mm512_fmadd_ps(
                _mm512_mul_ps(dw01, dx),
                _mm512_cvtepi32_ps(lanes01),
                acc01[t],
            );
            acc23[t] = _mm512_fmadd_ps(
                _mm512_mul_ps(dw23, dx),
                _mm512_cvtepi32_ps(lanes23),
                acc23[t],
            );
        }
    }
    let halves = |v: __m512| {
        (
            hsum(_mm512_castps512_ps256(v)),
            hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                _mm512_castps_pd(v),
                1,
            ))),
        )
    };
    std::array::from_fn(|t| {
        let ((r0, r1), (r2, r3)) = (halves(acc01[t]), halves(acc23[t]));
        [r0, r1, r2, r3]
    })
}

/// Four f16 scales as f32 lanes, gathered by inserts (from memory, where
/// the values come from): packing them in an integer register first, as
/// `f16x4` does, costs the four-row loop ten instructions per block.
#[inline(always)]
fn scales4(h: [F16Le; 4]) -> __m128 {
    let [a, b, c, d] = h.map(|h| i32::from(u16::from_le_bytes(h.0)));
    // SAFETY: see the module doc.
    unsafe {
        let v = _mm_cvtsi32_si128(a);
        let v = _mm_insert_epi16::<1>(v, b);
        let v = _mm_insert_epi16::<2>(v, c);
        _mm_cvtph_ps(_mm_insert_epi16::<3>(v, d))
    }
}

#[cfg(test)]
mod tests {
    use super::super::dispatch::Simd;
    use super::super::test_rng::splitmix;
    use super::*;
    use crate::gguf::GgmlType;

    /// Random blocks of `ty` (any bytes, f16 scales of either sign in
    /// [1e-3, 0.25]), `rows` rows of `n` elements.
    fn random_rows(
        ty: GgmlType,
        rows: usize,
        n: usize,
        rng: &mut impl Iterator<Item = u64>,
    ) -> Vec<u8> {
        let block = ty.bytes_for(32).unwrap() as usize;
        let mut out = Vec::new();
        for _ in 0..rows * n / 32 {
            let start = out.len();
            out.extend((0..block).map(|_| (rng.next().unwrap() >> 56) as u8));
            let z = rng.next().unwrap();
            let sign = if z & 1 == 0 { 1.0 } else { -1.0 };
            let scale = half::f16::from_f32(sign * ((z >> 8) % 1000) as f32 / 4000.0 + sign * 1e-3);
            out[start..start + 2].copy_from_slice(&scale.to_le_bytes());
        }
        out
    }

    #[test]
    fn four_rows_and_the_singles_tile_equal_the_one_row_kernels_bit_for_bit() {
        if !Simd::Avx512.is_supported() || !is_x86_feature_detected!("avx512vnni") {
            return;
        }
        let mut batch = BatchDots::default();
        install(&mut batch);
        let mut rng = splitmix(7);
        for (ty, (one, four)) in [GgmlType::Q8_0, GgmlType::Q5_0]
            .into_iter()
            .zip(batch.rows.iter().flatten())
        {
            for n in [32, 64, 640, 2048, 32 * 33] {
                let w = random_rows(ty, ROWS, n, &mut rng);
                let mut x = random_rows(GgmlType::Q8_0, TILE, n, &mut rng);
                // Q8_0 activations never hold −128 (ggml rounds |q| ≤ 127).
                for b in x.chunks_exact_mut(34) {
                    for q in &mut b[2..] {
                        if *q == 0x80 {
                            *q = 0x81;
                        }
                    }
                }
                let row_bytes = w.len() / ROWS;
                let got = four(n, &w, row_bytes, &x[..x.len() / TILE]);
                let want = |r: usize, t: usize| {
                    let x = &x[t * x.len() / TILE..(t + 1) * x.len() / TILE];
                    one(n, &w[r * row_bytes..(r + 1) * row_bytes], x)
                };
                for (r, got) in got.into_iter().enumerate() {
                    assert_eq!(got.to_bits(), want(r, 0).to_bits(), "{ty} n={n} row {r}");
                }
                // The continuous batch's tile, on its prepared activations:
                // any rows × tokens.
                let (_, tile, prepare) =
                    batch.singles_tiles[2 + usize::from(ty == GgmlType::Q5_0)].unwrap();
                let mut prepared = Vec::new();
                for t in x.chunks_exact(x.len() / TILE) {
                    prepare.unwrap()(n, t, &mut prepared);
                }
                for rows in 1..=ROWS {
                    for tokens in 1..=TILE {
                        let mut out = [f32::NAN; TILE * TILE];
                        let xs = &prepared[..tokens * prepared.len() / TILE];
                        tile(
                            n,
                            &w[..rows * row_bytes],
                            row_bytes,
                            rows,
                            xs,
                            prepared.len() / TILE,
                            tokens,
                            &mut out,
                        );
                        for r in 0..rows {
                            for t in 0..tokens {
                                let got = out[t * TILE + r];
                                assert_eq!(
                                    got.to_bits(),
                                    want(r, t).to_bits(),
                                    "{ty} n={n} {rows}x{tokens} ({r}, {t})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
