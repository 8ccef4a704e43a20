//! AVX-512 VNNI tile kernels (see [`super::tiles`]) for Q4_0, Q5_0, Q8_0,
//! Q4_K and Q6_K: up to 4 weight rows × 4 tokens per call, one f32
//! accumulator register per (row, token).
//!
//! The 32-element types read activations prepared once per token: four
//! Q8_0 blocks regrouped so that one 64-byte register of weights (four
//! blocks' low nibbles, or two Q8_0 blocks) meets one register of
//! activations, the blocks' `d` spread over their lanes as f32, and the
//! weights' offset (`w = u − c`: 8 for Q4_0, 16 for Q5_0, 128 for Q8_0 as
//! `w ^ 0x80`) folded in as `−c·Σx` per i32 lane. That sum seeds `vpdpbusd`,
//! so a group of four blocks costs per (row, token) two `vpdpbusd`, one
//! convert, one multiply and one FMA, and the weight decode is shared by the
//! tile's tokens. The K-quants read Q8_K as it is: Q4_K's nibbles are
//! rearranged into element order instead (one 32-byte load gives 64
//! consecutive weights), Q6_K's already are; `maddubs` + `vpdpwssd` apply
//! the sub-block scales as in [`super::x86_avx512_kquants`], and the mins /
//! the −32 of Q6_K come in through `bsums`.
//!
//! Integer sums are exact; only f32 sums are ordered differently from the
//! per-row kernels, and identically for every tile shape.
//!
//! Safety: every kernel is `#[target_feature]` on avx512f/bw/vl/vnni, avx2,
//! fma, f16c; [`install`] runs only after `dispatch` confirmed avx512f/bw/vl,
//! avx2, fma, f16c and itself checks avx512vnni, which is the safety argument
//! for each call. Loads go through references to fixed-size arrays.

use super::scalar_kquants::unpack_k4;
use super::tiles::{QuantTiles, RowDot, Tile, TileKernel, drive};
use super::x86_avx2_kquants::f16;
use crate::quant::float::F16Le;
use crate::quant::{BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ6K, BlockQ8_0, BlockQ8K};
use std::arch::x86_64::*;

/// Installs the tile kernels (only where the CPU has VNNI).
pub(super) fn install(tiles: &mut QuantTiles) {
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    // The row kernels gather a group's fields with byte permutes (VBMI).
    let vbmi = is_x86_feature_detected!("avx512vbmi");
    tiles.q4_0 = Some(Tile {
        dot: drive::<Nibbles<BlockQ4_0>>,
        prepare: Some(prepare_nibbles::<8>),
        row: vbmi.then_some(nibble_row::<BlockQ4_0> as RowDot),
        same_as: None,
    });
    // Q5_0, Q8_0, Q4_K and Q6_K have tile kernels below, installed only for
    // the fast order (`install_fast`): llama.cpp's matmuls for them
    // (tinyBLAS_Q0_AVX, the Q4_K repack gemm/gemv, the tiled K-quant
    // matmul) each have their own f32 order, which the per-row kernels of
    // `x86_avx2_legacy` and `x86_avx2_kquants` (chosen per token by
    // `matmul`) reproduce exactly.
}

/// The tiles of every type, in this module's order (`RUSTY_LLM_KERNELS=fast`).
pub(super) fn install_fast(tiles: &mut QuantTiles) {
    install(tiles);
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    tiles.q5_0 = Some(Tile {
        dot: drive::<Nibbles<BlockQ5_0>>,
        prepare: Some(prepare_nibbles::<16>),
        row: None,
        same_as: None,
    });
    tiles.q8_0 = Some(Tile {
        dot: drive::<Q8Tile>,
        prepare: Some(prepare_q8_0),
        row: None,
        same_as: None,
    });
    tiles.q4_k = Some(Tile {
        dot: drive::<Q4KTile>,
        prepare: None,
        row: None,
        same_as: None,
    });
    tiles.q6_k = Some(Tile {
        dot: drive::<Q6KTile>,
        prepare: None,
        row: None,
        same_as: None,
    });
}

/// Bytes of one prepared group of four Q8_0 blocks for the nibble types:
/// low halves (64), high halves (64), `d` per lane (16 f32), `−c·Σx` per
/// lane (16 i32).
const NIB_GROUP: usize = 256;
/// The same for Q8_0 weights: blocks 0-1 and 2-3 side by side (2 × 64),
/// their `d` (2 × 16 f32) and `−128·Σx` (2 × 16 i32).
const Q8_GROUP: usize = 384;

/// Q8_0 blocks of four, the last group padded with zero blocks (zero
/// activations and scale: they add exact zeros).
fn groups_of_4(n: usize, x: &[u8]) -> impl Iterator<Item = [BlockQ8_0; 4]> + '_ {
    let x: &[BlockQ8_0] = bytemuck::cast_slice(&x[..n / 32 * size_of::<BlockQ8_0>()]);
    x.chunks(4).map(|g| {
        let mut out = [bytemuck::Zeroable::zeroed(); 4];
        out[..g.len()].copy_from_slice(g);
        out
    })
}

/// Σ of the bytes `4i..4i + 4` of each `a`, for i in 0..16, times `-c`.
fn lane_sums(parts: &[&[i8; 64]], c: i32) -> [i32; 16] {
    std::array::from_fn(|i| {
        -c * parts
            .iter()
            .map(|p| {
                p[4 * i..4 * i + 4]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum::<i32>()
            })
            .sum::<i32>()
    })
}

fn push_f32s(out: &mut Vec<u8>, v: &[f32; 16]) {
    out.extend_from_slice(bytemuck::cast_slice(v));
}
fn push_i32s(out: &mut Vec<u8>, v: &[i32; 16]) {
    out.extend_from_slice(bytemuck::cast_slice(v));
}
fn push_i8s(out: &mut Vec<u8>, v: &[i8; 64]) {
    out.extend_from_slice(bytemuck::cast_slice(v));
}

/// Layout of [`NIB_GROUP`]: block k's elements 0..16 at bytes 16k.. of the
/// first register, 16..32 of the second, as the weights' low and high
/// nibbles lie (ggml's Q4_0: byte j holds elements j and j + 16).
fn prepare_nibbles<const C: i32>(n: usize, x: &[u8], out: &mut Vec<u8>) {
    for g in groups_of_4(n, x) {
        let mut lo = [0i8; 64];
        let mut hi = [0i8; 64];
        let mut d = [0f32; 16];
        for (k, b) in g.iter().enumerate() {
            lo[16 * k..16 * k + 16].copy_from_slice(&b.qs[..16]);
            hi[16 * k..16 * k + 16].copy_from_slice(&b.qs[16..]);
            d[4 * k..4 * k + 4].fill(b.d.to_f32());
        }
        push_i8s(out, &lo);
        push_i8s(out, &hi);
        push_f32s(out, &d);
        push_i32s(out, &lane_sums(&[&lo, &hi], C));
    }
}

/// Layout of [`Q8_GROUP`].
fn prepare_q8_0(n: usize, x: &[u8], out: &mut Vec<u8>) {
    for g in groups_of_4(n, x) {
        let mut xs = [[0i8; 64]; 2];
        let mut d = [[0f32; 16]; 2];
        for (k, b) in g.iter().enumerate() {
            xs[k / 2][32 * (k % 2)..32 * (k % 2) + 32].copy_from_slice(&b.qs);
            d[k / 2][8 * (k % 2)..8 * (k % 2) + 8].fill(b.d.to_f32());
        }
        push_i8s(out, &xs[0]);
        push_i8s(out, &xs[1]);
        push_f32s(out, &d[0]);
        push_f32s(out, &d[1]);
        push_i32s(out, &lane_sums(&[&xs[0]], 128));
        push_i32s(out, &lane_sums(&[&xs[1]], 128));
    }
}

/// 64 bytes at `p[off..]`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn ld512(p: &[u8], off: usize) -> __m512i {
    let a: &[u8; 64] = p[off..off + 64].try_into().unwrap();
    // SAFETY: `a` is 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn ld512_ps(p: &[u8], off: usize) -> __m512 {
    _mm512_castsi512_ps(ld512(p, off))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn ld256(p: &[u8], off: usize) -> __m256i {
    let a: &[u8; 32] = p[off..off + 32].try_into().unwrap();
    // SAFETY: `a` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn ld128(p: &[u8; 16]) -> __m128i {
    // SAFETY: `p` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(p.as_ptr().cast()) }
}

/// Four f16 scales as f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
fn f16x4(h: [F16Le; 4]) -> __m128 {
    let bits = h.iter().enumerate().fold(0u64, |a, (k, v)| {
        a | u64::from(u16::from_le_bytes(v.0)) << (16 * k)
    });
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// A weight format of 32-element blocks with 16 bytes of nibbles (element
/// j in the low nibble of byte j, element j + 16 in the high one) and
/// optionally 32 fifth bits.
trait NibbleBlock: bytemuck::Pod {
    const FIFTH: bool;
    /// Byte offset of `qs` in the block (`d` is at 0, `qh` at 2).
    const QS_AT: usize;
    fn qs(&self) -> &[u8; 16];
    fn d(&self) -> F16Le;
    fn qh(&self) -> u32;
}
impl NibbleBlock for BlockQ4_0 {
    const FIFTH: bool = false;
    const QS_AT: usize = 2;
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
    fn d(&self) -> F16Le {
        self.d
    }
    fn qh(&self) -> u32 {
        0
    }
}
impl NibbleBlock for BlockQ5_0 {
    const FIFTH: bool = true;
    const QS_AT: usize = 6;
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
    fn d(&self) -> F16Le {
        self.d
    }
    fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

/// A row's blocks in groups of four, the last one padded with zero blocks.
fn row_groups<W: bytemuck::Pod>(row: &[u8], nb: usize) -> (&[[W; 4]], Option<[W; 4]>) {
    let blocks: &[W] = bytemuck::cast_slice(&row[..nb * size_of::<W>()]);
    let (full, rest) = blocks.as_chunks::<4>();
    let tail = (!rest.is_empty()).then(|| {
        let mut t = [W::zeroed(); 4];
        t[..rest.len()].copy_from_slice(rest);
        t
    });
    (full, tail)
}

/// Asks for the `len` bytes at `from` of the row one tile further on (`R`
/// rows ahead): the tile's rows are short interleaved streams that the
/// hardware prefetcher is slow to pick up, unlike one long row.
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch_next_tile<const R: usize>(row: &[u8], from: usize, len: usize) {
    let p = row.as_ptr().wrapping_add(R * row.len() + from);
    for off in (0..len).step_by(64) {
        // A prefetch never faults, whatever the address: nothing is read.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast());
    }
}

/// Group `g` of a row from [`row_groups`].
#[inline]
fn group<'a, W>(row: &'a (&'a [[W; 4]], Option<[W; 4]>), g: usize) -> &'a [W; 4] {
    match row.0.get(g) {
        Some(b) => b,
        None => row.1.as_ref().expect("the partial group"),
    }
}

struct Nibbles<W>(std::marker::PhantomData<W>);

impl<W: NibbleBlock> TileKernel for Nibbles<W> {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        // SAFETY: installed only on CPUs with these features (module doc).
        unsafe { nibbles_tile::<W, R, T>(n, w, x) }
    }
}

/// Low and high nibbles of four blocks (block k in 128-bit lane k) and
/// their scales spread over the same lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn decode_nibbles<W: NibbleBlock>(g: &[W; 4]) -> (__m512i, __m512i, __m512) {
    let m4 = _mm512_set1_epi8(0x0f);
    let q = _mm512_castsi128_si512(ld128(g[0].qs()));
    let q = _mm512_inserti32x4::<1>(q, ld128(g[1].qs()));
    let q = _mm512_inserti32x4::<2>(q, ld128(g[2].qs()));
    let q = _mm512_inserti32x4::<3>(q, ld128(g[3].qs()));
    let mut lo = _mm512_and_si512(q, m4);
    let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
    if W::FIFTH {
        // Bit j of qh is element j's fifth bit: bits 0..16 go with the low
        // nibbles, 16..32 with the high ones.
        let (mut ml, mut mh) = (0u64, 0u64);
        for (k, b) in g.iter().enumerate() {
            let h = b.qh();
            ml |= u64::from(h & 0xffff) << (16 * k);
            mh |= u64::from(h >> 16) << (16 * k);
        }
        let sixteen = _mm512_set1_epi8(0x10);
        lo = _mm512_mask_add_epi8(lo, ml, lo, sixteen);
        hi = _mm512_mask_add_epi8(hi, mh, hi, sixteen);
    }
    let d = f16x4([g[0].d(), g[1].d(), g[2].d(), g[3].d()]);
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let d = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d));
    (lo, hi, d)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_tile<W: NibbleBlock, const R: usize, const T: usize>(
    n: usize,
    w: [&[u8]; R],
    x: [&[u8]; T],
) -> [[f32; R]; T] {
    let nb = n / 32;
    let rows = w.map(|r| row_groups::<W>(r, nb));
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    for g in 0..nb.div_ceil(4) {
        let blocks: [&[W; 4]; R] = std::array::from_fn(|r| group(&rows[r], g));
        let xg: [&[u8; NIB_GROUP]; T] =
            x.map(|x| x[g * NIB_GROUP..(g + 1) * NIB_GROUP].try_into().unwrap());
        for (r, b) in blocks.iter().enumerate() {
            let gb = 4 * size_of::<W>();
            prefetch_next_tile::<R>(w[r], g * gb, gb);
            let (lo, hi, dw) = decode_nibbles(b);
            for (t, xg) in xg.iter().enumerate() {
                let p = _mm512_dpbusd_epi32(ld512(*xg, 192), lo, ld512(*xg, 0));
                let p = _mm512_dpbusd_epi32(p, hi, ld512(*xg, 64));
                let s = _mm512_mul_ps(dw, ld512_ps(*xg, 128));
                acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[t][r]);
            }
        }
    }
    acc.map(|a| a.map(|v| _mm512_reduce_add_ps(v)))
}

/// Byte-permute indices that gather fields of a group of four blocks of
/// `size` bytes (`4 · size` ≤ 128) from two loads: `a` = bytes 0..64 of the
/// group, `b` = its last 64 bytes (index bit 6 picks `b`).
fn group_index(size: usize, pick: impl Fn(usize) -> usize) -> [u8; 64] {
    let last = 4 * size - 64;
    std::array::from_fn(|j| {
        let o = pick(j);
        (if o < 64 { o } else { 64 + o - last }) as u8
    })
}

/// Matrix × vector for Q4_0 / Q5_0 on the [`prepare_nibbles`] layout: one
/// row, one token, the same arithmetic as [`nibbles_tile`]'s 1×1 (so
/// decode and prefill agree bit for bit), but each group of four blocks
/// is gathered from two 64-byte loads with byte permutes (VBMI) instead of
/// four 16-byte inserts and scalar assembly of the scales and fifth bits:
/// the per-row dots spent most of their time there, not waiting on memory.
fn nibble_row<W: NibbleBlock>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    // SAFETY: installed only on CPUs with these features (module doc and
    // the VBMI check in `install`).
    unsafe { nibble_row_inner::<W>(n, w, x) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
fn nibble_row_inner<W: NibbleBlock>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let size = size_of::<W>();
    let gb = 4 * size;
    let nb = n / 32;
    // qs: output byte 16k + i is block k's byte i (ggml's Q4_0/Q5_0 nibble
    // layout, as `decode_nibbles` puts block k in 128-bit lane k).
    let qs_idx = group_index(size, |j| (j / 16) * size + W::QS_AT + j % 16);
    // d: f16 lane l is block l / 4's scale (lanes 4k..4k + 4 hold block k).
    let d_idx = group_index(size, |j| ((j % 32) / 8) * size + j % 2);
    // qh: bytes 0..8 are the low 16 bits of each block's qh (the fifth bits
    // of elements 0..16, a k-mask for the low nibbles), bytes 8..16 the high.
    let qh_idx = group_index(size, |j| {
        let j = j % 16;
        ((j % 8) / 2) * size + 2 + (j / 8) * 2 + j % 2
    });
    let ld = |i: &[u8; 64]| ld512(i, 0);
    let (qs_idx, d_idx, qh_idx) = (ld(&qs_idx), ld(&d_idx), ld(&qh_idx));
    let m4 = _mm512_set1_epi8(0x0f);
    let sixteen = _mm512_set1_epi8(0x10);
    let group = |a: __m512i, b: __m512i, xg: &[u8], acc: __m512| {
        let q = _mm512_permutex2var_epi8(a, qs_idx, b);
        let mut lo = _mm512_and_si512(q, m4);
        let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
        if W::FIFTH {
            let h = _mm512_castsi512_si128(_mm512_permutex2var_epi8(a, qh_idx, b));
            let ml = _mm_cvtsi128_si64(h) as u64;
            let mh = _mm_extract_epi64::<1>(h) as u64;
            lo = _mm512_mask_add_epi8(lo, ml, lo, sixteen);
            hi = _mm512_mask_add_epi8(hi, mh, hi, sixteen);
        }
        let dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi8(
            a, d_idx, b,
        )));
        let p = _mm512_dpbusd_epi32(ld512(xg, 192), lo, ld512(xg, 0));
        let p = _mm512_dpbusd_epi32(p, hi, ld512(xg, 64));
        let s = _mm512_mul_ps(dw, ld512_ps(xg, 128));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc)
    };
    let mut acc = _mm512_setzero_ps();
    let full = nb / 4;
    for g in 0..full {
        let (a, b) = (ld512(w, g * gb), ld512(w, g * gb + gb - 64));
        acc = group(a, b, &x[g * NIB_GROUP..(g + 1) * NIB_GROUP], acc);
    }
    if !nb.is_multiple_of(4) {
        // The partial group, padded with zero blocks (scale 0; the prepared
        // activations are padded the same way).
        let mut pad = [0u8; 128];
        pad[..(nb % 4) * size].copy_from_slice(&w[full * gb..nb * size]);
        let (a, b) = (ld512(&pad, 0), ld512(&pad, gb - 64));
        acc = group(a, b, &x[full * NIB_GROUP..(full + 1) * NIB_GROUP], acc);
    }
    _mm512_reduce_add_ps(acc)
}

struct Q8Tile;

impl TileKernel for Q8Tile {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        // SAFETY: installed only on CPUs with these features (module doc).
        unsafe { q8_0_tile::<R, T>(n, w, x) }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_tile<const R: usize, const T: usize>(
    n: usize,
    w: [&[u8]; R],
    x: [&[u8]; T],
) -> [[f32; R]; T] {
    let nb = n / 32;
    let rows = w.map(|r| row_groups::<BlockQ8_0>(r, nb));
    let flip = _mm512_set1_epi8(-128);
    let lanes01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let lanes23 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    for g in 0..nb.div_ceil(4) {
        let blocks: [&[BlockQ8_0; 4]; R] = std::array::from_fn(|r| group(&rows[r], g));
        let xg: [&[u8; Q8_GROUP]; T] =
            x.map(|x| x[g * Q8_GROUP..(g + 1) * Q8_GROUP].try_into().unwrap());
        for (r, b) in blocks.iter().enumerate() {
            let gb = 4 * size_of::<BlockQ8_0>();
            prefetch_next_tile::<R>(w[r], g * gb, gb);
            let pair = |i: usize| {
                let q0 = ld256(bytemuck::cast_slice(&b[i].qs), 0);
                let q1 = ld256(bytemuck::cast_slice(&b[i + 1].qs), 0);
                _mm512_xor_si512(
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q0), q1),
                    flip,
                )
            };
            let (u01, u23) = (pair(0), pair(2));
            let d = _mm512_castps128_ps512(f16x4([b[0].d, b[1].d, b[2].d, b[3].d]));
            let (d01, d23) = (
                _mm512_permutexvar_ps(lanes01, d),
                _mm512_permutexvar_ps(lanes23, d),
            );
            for (t, xg) in xg.iter().enumerate() {
                let p01 = _mm512_dpbusd_epi32(ld512(*xg, 256), u01, ld512(*xg, 0));
                let p23 = _mm512_dpbusd_epi32(ld512(*xg, 320), u23, ld512(*xg, 64));
                let s01 = _mm512_mul_ps(d01, ld512_ps(*xg, 128));
                let s23 = _mm512_mul_ps(d23, ld512_ps(*xg, 192));
                let a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p01), s01, acc[t][r]);
                acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p23), s23, a);
            }
        }
    }
    acc.map(|a| a.map(|v| _mm512_reduce_add_ps(v)))
}

/// i16 lanes: `a` in the low 256 bits, `b` in the high 256 bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn halves16(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi16(a)),
        _mm256_set1_epi16(b),
    )
}

fn q8k_blocks(x: &[u8], nb: usize) -> &[BlockQ8K] {
    &bytemuck::cast_slice(x)[..nb]
}

struct Q4KTile;

impl TileKernel for Q4KTile {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        // SAFETY: installed only on CPUs with these features (module doc).
        unsafe { q4_k_tile::<R, T, false>(n, w, x) }
    }
}

/// [`Q4KTile`]'s integer sums in the f32 order of ggml's repacked decode
/// kernel (`x86_avx2_kquants::dot_q4_k_gemv`): per block one exact integer
/// for the products and one for the minimums, `acc = fma(Σ, d_w·d_x, acc)`,
/// `acc_m = fma(Σm, dmin_w·d_x, acc_m)`, `acc − acc_m` — every (row, token)
/// bit for bit that row dot's, so the single tokens of a continuous batch
/// share it.
struct Q4KGemvTile;

impl TileKernel for Q4KGemvTile {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        // SAFETY: installed only on CPUs with these features (module doc).
        unsafe { q4_k_tile::<R, T, true>(n, w, x) }
    }
}

/// Installs the tiles in a row dot's own order (see [`Q4KGemvTile`]).
pub(super) fn install_singles(batch: &mut super::dispatch::BatchDots) {
    if !is_x86_feature_detected!("avx512vnni") {
        return;
    }
    batch.singles_tiles[0] = Some((
        super::x86_avx2_kquants::dot_q4_k_gemv,
        drive::<Q4KGemvTile>,
        None,
    ));
    batch.singles_tiles[1] = Some((
        super::x86_avx2_kquants::dot_q6_k,
        drive::<Q6KRowOrderTile>,
        None,
    ));
}

/// `ggml_vec_dot_q4_K_q8_K` per (row, token): `d·dx·Σ sc·(q·x) −
/// dmin·dx·Σ m·bsum`, chunk c's 32 bytes of nibbles unpacked into its 64
/// weights in element order (low nibbles are weights 64c..64c + 32).
/// With `GEMV`, in [`Q4KGemvTile`]'s order.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_k_tile<const R: usize, const T: usize, const GEMV: bool>(
    n: usize,
    w: [&[u8]; R],
    x: [&[u8]; T],
) -> [[f32; R]; T] {
    let nb = n / 256;
    let bytes = w;
    let w: [&[BlockQ4K]; R] = w.map(|r| &bytemuck::cast_slice(r)[..nb]);
    let x: [&[BlockQ8K]; T] = x.map(|x| q8k_blocks(x, nb));
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let mut gemv = [[(0f32, 0f32); R]; T];
    for i in 0..nb {
        // Pairwise sums of each token's 16 bsums: the 8 sub-block sums.
        let pairs: [__m128i; T] = x.map(|x| {
            let bs = ld256(bytemuck::cast_slice(&x[i].bsums), 0);
            _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            )
        });
        let dx: [f32; T] = x.map(|x| x[i].d.to_f32());
        for r in 0..R {
            let b = &w[r][i];
            prefetch_next_tile::<R>(bytes[r], i * size_of::<BlockQ4K>(), size_of::<BlockQ4K>());
            let (d, dmin) = (f16(b.d), f16(b.dmin));
            let u = unpack_k4(&b.scales);
            let mins = _mm_cvtepu8_epi16(_mm_srli_si128::<8>(ld128(&u)));
            let sc = _mm512_set1_epi64(i64::from_le_bytes(u[..8].try_into().unwrap()));
            let mut q = [_mm512_setzero_si512(); 4];
            let mut s = [_mm512_setzero_si512(); 4];
            for c in 0..4 {
                let v = ld256(&b.qs, 32 * c);
                let both =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
                q[c] = _mm512_and_si512(both, m4);
                // Sub-blocks 2c (low half) and 2c + 1 (high half): their
                // scale bytes zero-extended to every i16 lane.
                let (a, b) = (2 * c as i16, 2 * c as i16 + 1);
                let pick = halves16((0x8000u16 as i16) | a, (0x8000u16 as i16) | b);
                s[c] = _mm512_shuffle_epi8(sc, pick);
            }
            for t in 0..T {
                let xq: &[u8] = bytemuck::cast_slice(&x[t][i].qs);
                let mut sumi = _mm512_setzero_si512();
                for c in 0..4 {
                    let p = _mm512_maddubs_epi16(q[c], ld512(xq, 64 * c));
                    sumi = _mm512_dpwssd_epi32(sumi, p, s[c]);
                }
                if GEMV {
                    let sum = _mm512_reduce_add_epi32(sumi);
                    let m: [i32; 4] = bytemuck::cast(_mm_madd_epi16(mins, pairs[t]));
                    let sum_m: i32 = m.iter().sum();
                    let (acc, acc_m) = &mut gemv[t][r];
                    *acc = (sum as f32).mul_add(d * dx[t], *acc);
                    *acc_m = (sum_m as f32).mul_add(dmin * dx[t], *acc_m);
                    continue;
                }
                let summ = _mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs[t]));
                let a = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(sumi),
                    _mm512_set1_ps(d * dx[t]),
                    acc[t][r],
                );
                acc[t][r] = _mm512_fnmadd_ps(
                    _mm512_zextps128_ps512(summ),
                    _mm512_set1_ps(dmin * dx[t]),
                    a,
                );
            }
        }
    }
    if GEMV {
        return gemv.map(|g| g.map(|(acc, acc_m)| acc - acc_m));
    }
    acc.map(|a| a.map(|v| _mm512_reduce_add_ps(v)))
}

struct Q6KTile;

impl TileKernel for Q6KTile {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        // SAFETY: installed only on CPUs with these features (module doc).
        unsafe { q6_k_tile::<R, T, false>(n, w, x) }
    }
}

/// [`Q6KTile`]'s integer lanes in the f32 order of ggml's AVX2 row dot
/// (`x86_avx2_kquants::dot_q6_k`): the 16 lanes folded to its 8 (lane `l`:
/// elements `4l..4l + 4` of every 32, the same exact integers), then
/// `acc = fma(d_w·d_x, lanes, acc)` per block and its `hsum` — every
/// (row, token) bit for bit that row dot's, so the single tokens of a
/// continuous batch share it.
struct Q6KRowOrderTile;

impl TileKernel for Q6KRowOrderTile {
    fn run<const R: usize, const T: usize>(
        n: usize,
        w: [&[u8]; R],
        x: [&[u8]; T],
    ) -> [[f32; R]; T] {
        // SAFETY: installed only on CPUs with these features (module doc).
        unsafe { q6_k_tile::<R, T, true>(n, w, x) }
    }
}

/// `ggml_vec_dot_q6_K_q8_K` per (row, token) with unsigned quants (0..64)
/// and the −32 applied as `−32·Σ sc·bsum`; a 64-byte load of `ql` holds 64
/// consecutive weights in its low nibbles and the next 64 in its high ones.
/// With `ROW_ORDER`, in [`Q6KRowOrderTile`]'s order.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6_k_tile<const R: usize, const T: usize, const ROW_ORDER: bool>(
    n: usize,
    w: [&[u8]; R],
    x: [&[u8]; T],
) -> [[f32; R]; T] {
    let nb = n / 256;
    let bytes = w;
    let w: [&[BlockQ6K]; R] = w.map(|r| &bytemuck::cast_slice(r)[..nb]);
    let x: [&[BlockQ8K]; T] = x.map(|x| q8k_blocks(x, nb));
    let m4 = _mm512_set1_epi8(0x0f);
    let m30 = _mm512_set1_epi8(0x30);
    let shl_lo = halves16(4, 2);
    let shr_hi = halves16(0, 2);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let mut acc8 = [[_mm256_setzero_ps(); R]; T];
    for i in 0..nb {
        let bsums: [__m256i; T] = x.map(|x| ld256(bytemuck::cast_slice(&x[i].bsums), 0));
        let dx: [f32; T] = x.map(|x| x[i].d.to_f32());
        for r in 0..R {
            let b = &w[r][i];
            prefetch_next_tile::<R>(bytes[r], i * size_of::<BlockQ6K>(), size_of::<BlockQ6K>());
            let d = f16(b.d);
            let scales: &[u8; 16] = bytemuck::cast_ref(&b.scales);
            let scales = ld128(scales);
            let sc16 = _mm256_cvtepi8_epi16(scales);
            let sc = _mm512_broadcast_i32x4(scales);
            let mut q = [_mm512_setzero_si512(); 4];
            let mut s = [_mm512_setzero_si512(); 4];
            for j in 0..2 {
                let ql = ld512(&b.ql, 64 * j);
                let qh = _mm512_broadcast_i64x4(ld256(&b.qh, 32 * j));
                let hl = _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), m30);
                let hh = _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), m30);
                q[2 * j] = _mm512_or_si512(_mm512_and_si512(ql, m4), hl);
                q[2 * j + 1] =
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4), hh);
            }
            for (m, s) in s.iter_mut().enumerate() {
                // 128-bit lane k: sub-block 4m + k's signed scale in every
                // i16 (the byte twice, then an arithmetic shift).
                let k = |l: i64| (4 * m as i64 + l) * 0x0101_0101_0101_0101;
                let pat = _mm512_set_epi64(k(3), k(3), k(2), k(2), k(1), k(1), k(0), k(0));
                *s = _mm512_srai_epi16::<8>(_mm512_shuffle_epi8(sc, pat));
            }
            for t in 0..T {
                let xq: &[u8] = bytemuck::cast_slice(&x[t][i].qs);
                let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums[t]));
                let mut sumi =
                    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(corr));
                for m in 0..4 {
                    let p = _mm512_maddubs_epi16(q[m], ld512(xq, 64 * m));
                    sumi = _mm512_dpwssd_epi32(sumi, p, s[m]);
                }
                if ROW_ORDER {
                    let lanes = _mm256_add_epi32(
                        _mm512_castsi512_si256(sumi),
                        _mm512_extracti64x4_epi64::<1>(sumi),
                    );
                    acc8[t][r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(dx[t] * d),
                        _mm256_cvtepi32_ps(lanes),
                        acc8[t][r],
                    );
                    continue;
                }
                acc[t][r] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(sumi),
                    _mm512_set1_ps(d * dx[t]),
                    acc[t][r],
                );
            }
        }
    }
    if ROW_ORDER {
        return acc8.map(|a| a.map(|v| super::x86_avx2_kquants::hsum(v)));
    }
    acc.map(|a| a.map(|v| _mm512_reduce_add_ps(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_rng;

    /// The Q5_0 row kernel (not installed, see `install`) against the tile
    /// kernel's 1×1, bit for bit, on ragged block counts.
    #[test]
    fn q5_0_row_kernel_equals_the_tile_kernel() {
        if !(crate::kernels::Simd::Avx512.is_supported()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vbmi"))
        {
            return;
        }
        for nb in [1, 2, 3, 4, 5, 7, 8, 9, 20] {
            let n = nb * 32;
            let mut w = test_rng::bytes(nb * size_of::<BlockQ5_0>(), nb as u64);
            for b in w.chunks_mut(size_of::<BlockQ5_0>()) {
                b[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
            let mut q8 = Vec::new();
            crate::quant::quantize_row(
                crate::gguf::GgmlType::Q8_0,
                &test_rng::values(n, 5 + nb as u64),
                &mut q8,
            )
            .unwrap();
            let mut x = Vec::new();
            prepare_nibbles::<16>(n, &q8, &mut x);
            // SAFETY: the CPU has the features (checked above).
            let [[want]] = unsafe { nibbles_tile::<BlockQ5_0, 1, 1>(n, [&w], [&x]) };
            let got = nibble_row::<BlockQ5_0>(n, &w, &x);
            assert_eq!(got.to_bits(), want.to_bits(), "{nb} blocks");
        }
    }
}
