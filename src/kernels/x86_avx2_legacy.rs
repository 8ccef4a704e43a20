//! AVX2 + FMA + F16C versions of the 32-element dot products (Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4), after ggml's `arch/x86/quants.c`.
//!
//! Per block: the weights become 32 bytes (nibbles unpacked, fifth bits or
//! table values applied), `_mm256_maddubs_epi16` multiplies them with the 32
//! activation bytes (unsigned × signed, so signed weights go through the
//! sign trick and offset weights subtract `offset · Σx` instead), `madd`
//! widens to eight `i32`, and one FMA adds `d_w · d_x` times them to an f32
//! accumulator. Four blocks per step, one accumulator each (the FMA latency
//! would otherwise bound a step), with the four scale products converted
//! together. Every integer is exact, so results differ from `scalar_legacy`
//! only in the order of the f32 sums.
//!
//! Safety: every function here is `#[target_feature]`; `dispatch` installs
//! them only after `is_x86_feature_detected!` confirmed avx2, fma and f16c,
//! which is the safety argument for each call below. Loads read whole block
//! fields through pointers from `&[u8; 16]` / `&[i8; 32]` references.

use super::quant_dots::{QuantDots, ROWS};
use super::scalar_legacy::blocks;
use super::tiles::TILE;
use crate::quant::float::{F16Le, e8m0_to_f32_half};
use crate::quant::iq::{KVALUES_IQ4NL, KVALUES_MXFP4};
use crate::quant::{
    BlockIQ4NL, BlockMXFP4, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};
use std::arch::x86_64::*;

/// Installs the tile kernels of the 32-element types whose per-element f32
/// order they keep (ggml's `tinyBLAS_Q0_AVX`).
pub(super) fn install_tiles(tiles: &mut super::tiles::QuantTiles) {
    use super::tiles::{Tile, drive};
    tiles.q8_0 = Some(Tile {
        dot: q8_0_tile,
        prepare: Some(prepare_q8_0),
        row: None,
        same_as: Some(dot_q8_0),
    });
    tiles.q5_0 = Some(Tile {
        dot: drive::<Q0Tile<BlockQ5_0>>,
        prepare: None,
        row: None,
        same_as: Some(dot_q5_0),
    });
    tiles.q4_0 = Some(Tile {
        dot: drive::<Q0Tile<BlockQ4_0>>,
        prepare: None,
        row: None,
        same_as: Some(dot_q4_0),
    });
}

/// Installs the four-row forms of the Q8_0, Q5_0 and Q4_0 row dots that
/// matrix × vector runs (each row bit for bit its row dot): four
/// independent FMA chains instead of one, and each activation block loaded
/// once for the four rows.
pub(super) fn install_rows(batch: &mut super::dispatch::BatchDots) {
    batch.rows = [
        Some((dot_q8_0, rows::<BlockQ8_0>)),
        Some((dot_q5_0, rows::<BlockQ5_0>)),
        Some((dot_q4_0, rows::<BlockQ4_0>)),
    ];
    batch.singles_tiles[2] = Some((dot_q8_0, q8_0_tile, Some(prepare_q8_0)));
}

/// [`Q0Tile`] over [`ROWS`] consecutive rows (`row_bytes` apart) and one
/// token, with the rows ahead prefetched ([`RowsAhead`]).
fn rows<W: Q0Block>(n: usize, w: &[u8], row_bytes: usize, x: &[u8]) -> [f32; ROWS] {
    let ahead = RowsAhead::new(w, row_bytes);
    // SAFETY: installed only on CPUs with avx2, fma and f16c.
    let [out] = unsafe {
        q0_tile::<W, BlockQ8_0, ROWS, 1>(
            n,
            std::array::from_fn(|r| &w[r * row_bytes..(r + 1) * row_bytes]),
            [x],
            Some(ahead),
        )
    };
    out
}

/// Software prefetch for [`ROWS`] rows read side by side, block by block
/// (the four-row matrix × vector kernels). Four rows are four streams,
/// which the hardware prefetcher picks up too late when the matrix comes
/// from memory, as every decode step's weights do (measured on Zen 3, AVX2,
/// Gemma's 640 × 262144 Q8_0 output projection from DRAM: half the speed
/// of one row at a time). Short rows: the rows `2 · ROWS` ahead, spread
/// over the blocks (block `b` of the four rows is as many bytes as the
/// stretch `[b · step, (b + 1) · step)` of the rows ahead). Long rows: that
/// is tens of KB ahead, out of L1 again before it is read, so each row is
/// fetched [`IN_ROW_AHEAD`](Self::IN_ROW_AHEAD) bytes ahead of its own
/// block instead.
#[derive(Clone, Copy)]
pub(super) struct RowsAhead {
    base: *const u8,
    row_bytes: usize,
}

impl RowsAhead {
    /// Rows from this length on are prefetched within themselves.
    const LONG_ROW_BYTES: usize = 4096;
    /// How far ahead within a long row its bytes are prefetched.
    const IN_ROW_AHEAD: usize = 512;

    pub(super) fn new(w: &[u8], row_bytes: usize) -> Self {
        Self {
            base: w.as_ptr(),
            row_bytes,
        }
    }

    /// The prefetches that go with block `b` (of type `W`) of the rows.
    #[inline(always)]
    pub(super) fn block<W>(&self, b: usize) {
        let step = ROWS * size_of::<W>();
        const {
            assert!(
                ROWS * size_of::<W>() <= 192,
                "the prefetches below cover 192 bytes"
            )
        };
        // A prefetch is a hint, never a load: any address is fine, and
        // SSE is part of the x86-64 baseline.
        let fetch = |p: *const u8| unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
        if self.row_bytes >= Self::LONG_ROW_BYTES {
            let at = self
                .base
                .wrapping_add(b * size_of::<W>() + Self::IN_ROW_AHEAD);
            for r in 0..ROWS {
                fetch(at.wrapping_add(r * self.row_bytes));
            }
        } else {
            // Every line of the stretch (`step` is 72 to 136 bytes), the
            // offsets spelled out: as a loop the compiler kept a dozen
            // branchy instructions per block, a quarter of the kernel.
            let stretch = self.base.wrapping_add(2 * ROWS * self.row_bytes + b * step);
            fetch(stretch);
            fetch(stretch.wrapping_add(64));
            if step > 128 {
                fetch(stretch.wrapping_add(128));
            }
            fetch(stretch.wrapping_add(step - 1));
        }
    }
}

/// Installs this module's kernels into the table.
pub(super) fn install(dots: &mut QuantDots) {
    dots.q4_0 = dot_q4_0;
    dots.q4_1 = dot_q4_1;
    dots.q5_0 = dot_q5_0;
    dots.q5_1 = dot_q5_1;
    dots.q8_0 = dot_q8_0;
    dots.iq4_nl = dot_iq4_nl;
    dots.mxfp4 = dot_mxfp4;
}

/// Sums the 8 lanes of `v`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Four f16 values packed into a `u64`, lane `k` in bits `16k..16k + 16`.
#[inline]
fn pack4(h: [F16Le; 4]) -> u64 {
    h.iter().enumerate().fold(0u64, |acc, (k, v)| {
        acc | u64::from(u16::from_le_bytes(v.0)) << (16 * k)
    })
}

/// Four f16 values as f32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16x4(h: [F16Le; 4]) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi64_si128(pack4(h) as i64))
}

/// The four products `a[k] · b[k]` of f16 values. All eight halves fill one
/// vector (built from integer registers: a partly-undefined vector lets the
/// compiler insert into a live register, a false loop-carried dependency).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_products4(a: [F16Le; 4], b: [F16Le; 4]) -> __m128 {
    let v = _mm256_cvtph_ps(_mm_set_epi64x(pack4(b) as i64, pack4(a) as i64));
    _mm_mul_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1))
}

/// One f16 value as f32 (F16C, free of false dependencies).
pub(super) use super::x86_avx2_kquants::f16 as f16x1;

/// One row pair's kernel pieces, per block (`W` weight, `X` activation).
struct Row<P, S1, M1> {
    /// Eight `i32` partial sums of `q_w · q_x` of one block (lane `k`: the
    /// products of elements `4k..4k + 4`).
    prod: P,
    /// `d_w · d_x` of one block.
    scale: S1,
    /// The two factors `(m_w, s_x)` of one block's minimum term (zeros for
    /// the `_0` types).
    min: M1,
}

/// Σ over blocks of `scale · Σprod + min` in ggml's own f32 order
/// (`ggml_vec_dot_q{4,5,8}_0_q8_0`, `ggml_vec_dot_q{4,5}_1_q8_1`, the AVX2
/// branch of `arch/x86/quants.c`, and `tinyBLAS_Q0_AVX` in
/// `llamafile/sgemm.cpp`, whose per-element order is the same): one
/// accumulator of eight lanes, `acc = fma(d_w·d_x, f32(lane), acc)` block
/// after block, then `hsum_float_8`; the `_1` types add `summs`, a scalar
/// `fma(m_w, s_x, summs)` chain (GCC contracts ggml's `summs += m*s`).
/// One FMA chain is latency bound like ggml's; it is what makes our logits
/// equal llama.cpp's bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_blocks<W, X, P, S1, M1>(w: &[W], x: &[X], r: Row<P, S1, M1>) -> f32
where
    P: Fn(&W, &X) -> __m256i,
    S1: Fn(&W, &X) -> f32,
    M1: Fn(&W, &X) -> (f32, f32),
{
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (a, b) in w.iter().zip(x) {
        let d = _mm256_set1_ps((r.scale)(a, b));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps((r.prod)(a, b)), acc);
        let (m, s) = (r.min)(a, b);
        summs = m.mul_add(s, summs);
    }
    hsum(acc) + summs
}

/// The minimum terms of the `_0` types.
pub(super) fn no_mins<W, X>(_: &[W; 4], _: &[X; 4]) -> __m128 {
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe { _mm_setzero_ps() }
}

pub(super) fn no_min<W, X>(_: &W, _: &X) -> (f32, f32) {
    (0.0, 0.0)
}

/// The scale products of four blocks and of one: f16 field `$a` of `$W`
/// times field `$b` of `$X`.
macro_rules! f16_scales {
    ($W:ty, $a:ident, $X:ty, $b:ident) => {
        (
            |w: &[$W; 4], x: &[$X; 4]| f16_products4(w.map(|b| b.$a), x.map(|b| b.$b)),
            |w: &$W, x: &$X| f16x1(w.$a) * f16x1(x.$b),
        )
    };
}
pub(super) use f16_scales;

/// The minimum-term factors of four blocks (unused) and of one: f16 field
/// `$a` of `$W` and field `$b` of `$X`, not multiplied.
macro_rules! f16_min_factors {
    ($W:ty, $a:ident, $X:ty, $b:ident) => {
        (
            |w: &[$W; 4], x: &[$X; 4]| f16_products4(w.map(|b| b.$a), x.map(|b| b.$b)),
            |w: &$W, x: &$X| (f16x1(w.$a), f16x1(x.$b)),
        )
    };
}

/// Four MXFP4 scales `2^(e−128)` as f32 (`GGML_E8M0_TO_FP32_HALF`):
/// `(e − 1) << 23`, or the subnormal `0x200000 << e` for e < 2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn e8m0x4(w: &[BlockMXFP4; 4]) -> __m128 {
    let e = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(i32::from_le_bytes(w.map(|b| b.e))));
    let normal = _mm_slli_epi32(_mm_sub_epi32(e, _mm_set1_epi32(1)), 23);
    let small = _mm_sllv_epi32(_mm_set1_epi32(0x0020_0000), e);
    let is_small = _mm_cmplt_epi32(e, _mm_set1_epi32(2));
    _mm_castsi128_ps(_mm_blendv_epi8(normal, small, is_small))
}

/// The 32 nibbles of a block as bytes: element `j` (low nibble of byte `j`)
/// in byte `j`, element `j + 16` (high nibble) in byte `j + 16`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: reads the 16 bytes of `qs`.
    let q = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// 32 activation bytes.
#[target_feature(enable = "avx2,fma")]
pub(super) fn load_x(qs: &[i8; 32]) -> __m256i {
    // SAFETY: reads the 32 bytes of `qs`.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

/// Byte `j` is 0x10 where bit `j` of `qh` is set, else 0 (ggml's
/// `bytes_from_bits_32`, masked to the fifth bit).
#[target_feature(enable = "avx2,fma")]
fn fifth_bits(qh: [u8; 4]) -> __m256i {
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(qh)), spread);
    let bit = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    let set = _mm256_cmpeq_epi8(bit, _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Σ of unsigned `u` times signed `x` per 4 bytes, as eight `i32`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_u8_i8(u: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
}

/// Σ `(u − offset) · x` per 4 bytes for unsigned `u`: the offset comes off
/// as `offset · Σx` in 16 bits (|pairs| ≤ 2·31·127, no saturation).
#[target_feature(enable = "avx2,fma")]
fn dot_offset_i8(u: __m256i, offset: i8, x: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(u, x);
    let o = _mm256_maddubs_epi16(_mm256_set1_epi8(offset), x);
    _mm256_madd_epi16(_mm256_sub_epi16(p, o), _mm256_set1_epi16(1))
}

/// Σ of signed `w` times signed `x` per 4 bytes: |w| × (x with w's sign).
/// Exact for w = −128 too (|−128| reads as unsigned 128; pairs ≤ 32512).
#[target_feature(enable = "avx2,fma")]
fn dot_i8_i8(w: __m256i, x: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
}

/// A 16-entry signed byte table in both 128-bit lanes, for `shuffle_epi8`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn table(t: &[i8; 16]) -> __m256i {
    // SAFETY: reads the 16 bytes of `t`.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// Runs the driver for one row pair: `$prod` per block, `d·d` scales (and
/// `m·s` minimums when given).
macro_rules! run {
    (@mins) => {
        ((), no_min)
    };
    (@mins $mins:expr) => {
        $mins
    };
    ($w:ident, $x:ident, $prod:expr, $scales:expr $(, mins: $mins:expr)?) => {{
        // The four-block forms are for the AVX-512 kernels; ggml's order
        // takes one block at a time.
        let (_, scale) = $scales;
        let (_, min) = run!(@mins $($mins)?);
        sum_blocks($w, $x, Row { prod: $prod, scale, min })
    }};
}

pub(super) fn dot_q4_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
        run!(
            w,
            x,
            |a: &BlockQ4_0, b: &BlockQ8_0| dot_offset_i8(nibbles(&a.qs), 8, load_x(&b.qs)),
            f16_scales!(BlockQ4_0, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q4_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
        run!(
            w,
            x,
            |a: &BlockQ4_1, b: &BlockQ8_1| dot_u8_i8(nibbles(&a.qs), load_x(&b.qs)),
            f16_scales!(BlockQ4_1, d, BlockQ8_1, d),
            mins: f16_min_factors!(BlockQ4_1, m, BlockQ8_1, s)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q5_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
        run!(
            w,
            x,
            |a: &BlockQ5_0, b: &BlockQ8_0| {
                let q = _mm256_or_si256(nibbles(&a.qs), fifth_bits(a.qh));
                dot_offset_i8(q, 16, load_x(&b.qs))
            },
            f16_scales!(BlockQ5_0, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q5_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
        run!(
            w,
            x,
            |a: &BlockQ5_1, b: &BlockQ8_1| {
                let q = _mm256_or_si256(nibbles(&a.qs), fifth_bits(a.qh));
                dot_u8_i8(q, load_x(&b.qs))
            },
            f16_scales!(BlockQ5_1, d, BlockQ8_1, d),
            mins: f16_min_factors!(BlockQ5_1, m, BlockQ8_1, s)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

pub(super) fn dot_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
        run!(
            w,
            x,
            |a: &BlockQ8_0, b: &BlockQ8_0| dot_i8_i8(load_x(&a.qs), load_x(&b.qs)),
            f16_scales!(BlockQ8_0, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

pub(super) fn dot_iq4_nl(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockIQ4NL], x: &[BlockQ8_0]) -> f32 {
        let t = table(&KVALUES_IQ4NL);
        run!(
            w,
            x,
            |a: &BlockIQ4NL, b: &BlockQ8_0| {
                dot_i8_i8(_mm256_shuffle_epi8(t, nibbles(&a.qs)), load_x(&b.qs))
            },
            f16_scales!(BlockIQ4NL, d, BlockQ8_0, d)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

pub(super) fn dot_mxfp4(n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn inner(w: &[BlockMXFP4], x: &[BlockQ8_0]) -> f32 {
        let t = table(&KVALUES_MXFP4);
        let scales =
            |w: &[BlockMXFP4; 4], x: &[BlockQ8_0; 4]| _mm_mul_ps(f16x4(x.map(|b| b.d)), e8m0x4(w));
        let scale = |w: &BlockMXFP4, x: &BlockQ8_0| f16x1(x.d) * e8m0_to_f32_half(w.e);
        run!(
            w,
            x,
            |a: &BlockMXFP4, b: &BlockQ8_0| {
                dot_i8_i8(_mm256_shuffle_epi8(t, nibbles(&a.qs)), load_x(&b.qs))
            },
            (scales, scale)
        )
    }
    let (w, x) = blocks(n, w, x);
    // SAFETY: installed only when the CPU has avx2, fma and f16c.
    unsafe { inner(w, x) }
}

/// A weight block of a `_0` type: its 32 bytes in element order as the
/// type stores them, and its scale. Only called from tile kernels with
/// avx2, fma and f16c (the safety argument of the `unsafe` blocks below).
pub(super) trait Q0Block: bytemuck::Pod {
    /// `c` in `w = u − c` for the types stored unsigned (Q4_0: 8, Q5_0:
    /// 16); 0 for Q8_0, whose bytes are the signed weights.
    const OFFSET: i8;
    /// The unsigned `u = w + c`, or (`OFFSET` 0) the signed weights.
    fn stored(&self) -> __m256i;
    fn d(&self) -> F16Le;
    /// The signed weights.
    #[inline(always)]
    fn signed(&self) -> __m256i {
        // SAFETY: see the trait's doc.
        unsafe { _mm256_sub_epi8(self.stored(), _mm256_set1_epi8(Self::OFFSET)) }
    }
}

impl Q0Block for BlockQ8_0 {
    const OFFSET: i8 = 0;
    #[inline(always)]
    fn stored(&self) -> __m256i {
        // SAFETY: see the trait's doc.
        unsafe { load_x(&self.qs) }
    }
    fn d(&self) -> F16Le {
        self.d
    }
}

impl Q0Block for BlockQ4_0 {
    const OFFSET: i8 = 8;
    #[inline(always)]
    fn stored(&self) -> __m256i {
        // SAFETY: see the trait's doc.
        unsafe { nibbles(&self.qs) }
    }
    fn d(&self) -> F16Le {
        self.d
    }
}

impl Q0Block for BlockQ5_0 {
    const OFFSET: i8 = 16;
    #[inline(always)]
    fn stored(&self) -> __m256i {
        // SAFETY: see the trait's doc.
        unsafe { _mm256_or_si256(nibbles(&self.qs), fifth_bits(self.qh)) }
    }
    fn d(&self) -> F16Le {
        self.d
    }
}

/// An activation block as [`q0_tile`] reads it: 32 signed bytes and the
/// scale broadcast to eight lanes.
pub(super) trait Q0Activation: bytemuck::Pod {
    fn values(&self) -> __m256i;
    fn scale(&self) -> __m256;
}

impl Q0Activation for BlockQ8_0 {
    #[inline(always)]
    fn values(&self) -> __m256i {
        // SAFETY: see [`Q0Block`]'s doc.
        unsafe { load_x(&self.qs) }
    }
    #[inline(always)]
    fn scale(&self) -> __m256 {
        // SAFETY: see [`Q0Block`]'s doc.
        unsafe { _mm256_set1_ps(f16x1(self.d)) }
    }
}

/// A Q8_0 activation block with its scale already f32, in all eight lanes:
/// the scale product `d_w · d_x` is then one `vmulps` with a memory operand
/// per (row, token, block) (from a scalar the compiler multiplies as
/// scalars and broadcasts the product: two instructions on the same busy
/// vector pipes as the integer work).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PreparedQ8_0 {
    qs: [i8; 32],
    d: [f32; 8],
}

const _: () = assert!(size_of::<PreparedQ8_0>() == 64);

impl Q0Activation for PreparedQ8_0 {
    #[inline(always)]
    fn values(&self) -> __m256i {
        // SAFETY: see [`Q0Block`]'s doc.
        unsafe { load_x(&self.qs) }
    }
    #[inline(always)]
    fn scale(&self) -> __m256 {
        // SAFETY: see [`Q0Block`]'s doc; reads the eight f32 of `d`.
        unsafe { _mm256_loadu_ps(self.d.as_ptr()) }
    }
}

/// One token's Q8_0 activations (`n` elements, in `x`) as [`PreparedQ8_0`]
/// blocks, appended to `out`.
fn prepare_q8_0(n: usize, x: &[u8], out: &mut Vec<u8>) {
    let blocks: &[BlockQ8_0] = bytemuck::cast_slice(&x[..n / 32 * size_of::<BlockQ8_0>()]);
    for b in blocks {
        let prepared = PreparedQ8_0 {
            qs: b.qs,
            d: [b.d.to_f32(); 8],
        };
        out.extend_from_slice(bytemuck::bytes_of(&prepared));
    }
}

/// The Q8_0 tile: up to [`TILE`] weight rows by up to [`TILE`] tokens
/// (a prefill batch's, or the single tokens of a continuous batch, one per
/// sequence), each (row, token) bit for bit the row dot's
/// (`ggml_vec_dot_q8_0_q8_0`, and `tinyBLAS_Q0_AVX`, whose order is the
/// same), every weight block loaded and its magnitudes and scale derived
/// once for all the tokens. One token takes four rows side by side with
/// the matrix × vector prefetch ([`RowsAhead`]), as [`rows`] does; two or
/// more go [`row_by_row`]. Tokens: [`prepare_q8_0`].
///
/// Measured on Zen 3 (AVX2, 2 threads), against the 4 × 2 [`Q0Tile`] on
/// unprepared blocks it replaces: 1B 2048→8192 × 512 tokens 101–105 →
/// 124–130 GFLOP/s; Gemma's 640 × 262144 output projection for four
/// sequences 19.6 → 12.7 ms.
#[allow(clippy::too_many_arguments)] // the `TileDot` signature
fn q8_0_tile(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [f32; TILE * TILE],
) {
    assert!(rows <= TILE && (1..=TILE).contains(&tokens));
    let xt = |t: usize| &x[t * x_bytes..(t + 1) * x_bytes];
    // SAFETY (each call): installed only on CPUs with avx2, fma and f16c.
    unsafe {
        match (rows, tokens) {
            (ROWS, 1) => {
                let ahead = Some(RowsAhead::new(w, row_bytes));
                let wr = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
                let [o] = q0_tile::<BlockQ8_0, PreparedQ8_0, ROWS, 1>(
                    n,
                    std::array::from_fn(wr),
                    [xt(0)],
                    ahead,
                );
                out[..ROWS].copy_from_slice(&o);
            }
            (_, 1) => row_by_row::<1>(n, w, row_bytes, rows, [xt(0)], out),
            (_, 2) => row_by_row::<2>(n, w, row_bytes, rows, std::array::from_fn(xt), out),
            (_, 3) => row_by_row::<3>(n, w, row_bytes, rows, std::array::from_fn(xt), out),
            _ => row_by_row::<4>(n, w, row_bytes, rows, std::array::from_fn(xt), out),
        }
    }
}

/// How far ahead of its block [`row_by_row`] prefetches the weights.
/// Measured with a C model of the loop, four tokens and two threads each
/// streaming its own 68 MB: 1 to 3 KB ahead 8–10% faster than none, 6 KB no
/// better than none; in the kernel (`cargo bench --bench kernels -- 'singles
/// Q8_0 gemma output'`) 2 KB ahead took 5–15% off two to four tokens, 1 KB
/// nothing.
const STREAM_AHEAD: usize = 2048;

/// Up to [`TILE`] weight rows one after the other, each by `T` prepared
/// tokens (`T` accumulators: four rows by four tokens would need more
/// registers than AVX2's sixteen, and spilled), all in one call: a row of
/// a model's width is only 20 to 64 blocks, and one call per row (setup,
/// the call itself) measured 1.4 times slower.
#[target_feature(enable = "avx2,fma,f16c")]
fn row_by_row<const T: usize>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: [&[u8]; T],
    out: &mut [f32; TILE * TILE],
) {
    let nb = n / 32;
    let x: [&[PreparedQ8_0]; T] =
        x.map(|t| &bytemuck::cast_slice(&t[..nb * size_of::<PreparedQ8_0>()])[..nb]);
    for r in 0..rows.min(TILE) {
        let row: &[BlockQ8_0] =
            bytemuck::cast_slice(&w[r * row_bytes..r * row_bytes + nb * size_of::<BlockQ8_0>()]);
        let mut acc = [_mm256_setzero_ps(); T];
        for (b, wb) in row.iter().enumerate() {
            // The weights ahead of this block (the next calls' rows follow
            // these in memory): a few tokens' work per block leaves the
            // stream from memory to the hardware prefetcher alone too late.
            // A hint, never a load: any address is fine.
            let ahead = std::ptr::from_ref(wb)
                .cast::<u8>()
                .wrapping_add(STREAM_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            let q = wb.stored();
            let abs = _mm256_sign_epi8(q, q);
            let dw = _mm256_set1_ps(f16x1(wb.d));
            for t in 0..T {
                // SAFETY: every `x[t]` is `nb` blocks long (sliced above).
                let xb = unsafe { x[t].get_unchecked(b) };
                let lanes = dot_u8_i8(abs, _mm256_sign_epi8(xb.values(), q));
                acc[t] = _mm256_fmadd_ps(
                    _mm256_mul_ps(dw, xb.scale()),
                    _mm256_cvtepi32_ps(lanes),
                    acc[t],
                );
            }
        }
        for t in 0..T {
            out[t * TILE + r] = hsum(acc[t]);
        }
    }
}

/// `tinyBLAS_Q0_AVX` (`llamafile/sgemm.cpp`, what llama.cpp runs for Q8_0
/// and Q5_0 weights with two or more tokens, and for Q4_0 ones it has not
/// repacked) on a tile of up to 4 rows × 4
/// tokens: per (row, token) one 8-lane accumulator, `fma(d_w·d_x, lanes,
/// acc)` block by block, then `hsum`. The same f32 order as the row dot
/// [`sum_blocks`] (ggml's `ggml_vec_dot_*_q8_0`), each weight block decoded
/// once per tile of tokens.
struct Q0Tile<W>(std::marker::PhantomData<W>);

impl<W: Q0Block> super::tiles::TileKernel for Q0Tile<W> {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        if R * T <= 8 {
            // SAFETY: installed only on CPUs with avx2, fma and f16c.
            return unsafe { q0_tile::<W, BlockQ8_0, R, T>(n, w, x, None) };
        }
        // AVX2 has sixteen vector registers: more than eight accumulators
        // spill (a 4×4 tile kept 120 stack references in its loop), so a
        // wider tile runs as tiles of two tokens, each weight block decoded
        // once per pair. A (row, token) result is the same either way.
        let mut out = [[0f32; R]; T];
        for t0 in (0..T).step_by(2) {
            // SAFETY: as above.
            if t0 + 1 < T {
                let [a, b] =
                    unsafe { q0_tile::<W, BlockQ8_0, R, 2>(n, w, [x[t0], x[t0 + 1]], None) };
                (out[t0], out[t0 + 1]) = (a, b);
            } else {
                [out[t0]] = unsafe { q0_tile::<W, BlockQ8_0, R, 1>(n, w, [x[t0]], None) };
            }
        }
        out
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q0_tile<W: Q0Block, X: Q0Activation, const R: usize, const T: usize>(
    n: usize,
    w: [&[u8]; R],
    x: [&[u8]; T],
    ahead: Option<RowsAhead>,
) -> [[f32; R]; T] {
    let nb = n / 32;
    let w: [&[W]; R] = w.map(|r| &bytemuck::cast_slice::<u8, W>(&r[..nb * size_of::<W>()])[..nb]);
    let x: [&[X]; T] = x.map(|t| &bytemuck::cast_slice::<u8, X>(&t[..nb * size_of::<X>()])[..nb]);
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    for b in 0..nb {
        if let Some(ahead) = &ahead {
            ahead.block::<W>(b);
        }
        // SAFETY: every `w[r]` and `x[t]` is `nb` blocks long (sliced
        // above) and `b < nb`. Unchecked because the checks (one per row and
        // token per block: LLVM does not carry the lengths through the
        // arrays) were a tenth of the four-row decode loop.
        let (wb, xb): ([&W; R], [&X; T]) = unsafe {
            (
                std::array::from_fn(|r| w[r].get_unchecked(b)),
                std::array::from_fn(|t| x[t].get_unchecked(b)),
            )
        };
        // The tokens' blocks once, then row by row (one row's weights live
        // at a time, registers for the accumulators).
        let (xq, dx): ([__m256i; T], [__m256; T]) = (
            std::array::from_fn(|t| xb[t].values()),
            std::array::from_fn(|t| xb[t].scale()),
        );
        // Weights stored unsigned: Σ u·x − c·Σx per quad, the same integers
        // as ggml's Σ w·x by the sign trick, with the tokens' `c·Σx` once
        // per block rather than a sign and an offset per row.
        let offset = _mm256_set1_epi8(W::OFFSET);
        let corrections: [__m256i; T] = std::array::from_fn(|t| match W::OFFSET {
            0 => _mm256_setzero_si256(),
            _ => dot_u8_i8(offset, xq[t]),
        });
        for r in 0..R {
            let q = wb[r].stored();
            let abs = _mm256_sign_epi8(q, q);
            // `d_w · d_x` as one vector multiply (the f32 product ggml
            // rounds), the scales broadcast once per row and per token.
            let dw = _mm256_set1_ps(f16x1(wb[r].d()));
            for t in 0..T {
                let lanes = match W::OFFSET {
                    0 => dot_u8_i8(abs, _mm256_sign_epi8(xq[t], q)),
                    _ => _mm256_sub_epi32(dot_u8_i8(q, xq[t]), corrections[t]),
                };
                acc[t][r] = _mm256_fmadd_ps(
                    _mm256_mul_ps(dw, dx[t]),
                    _mm256_cvtepi32_ps(lanes),
                    acc[t][r],
                );
            }
        }
    }
    acc.map(|a| a.map(|v| hsum(v)))
}

#[cfg(test)]
mod tests {
    use super::super::dispatch::Simd;
    use super::super::scalar_legacy::test_support::check_against;
    use super::*;

    #[test]
    fn matches_scalar_integer_formulation() {
        if !Simd::Avx2.is_supported() {
            return;
        }
        let mut scalar = QuantDots::reference();
        super::super::scalar_legacy::install(&mut scalar);
        let mut ours = scalar;
        install(&mut ours);
        check_against(&scalar, &ours, "avx2", false);
    }
}
