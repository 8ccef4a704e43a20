//! AVX2 kernels for the row-interleaved Q4_0, Q4_K and Q5_0 layouts of
//! [`super::interleaved`] (its module doc has the layouts and the orders,
//! its `group_dot*` the meaning), for CPUs without AVX-512 VNNI: llama.cpp
//! repacks Q4_0 and Q4_K on AVX2 too, and reads them eight rows at a time;
//! Q5_0 (not repacked by llama.cpp, its plain order kept) is at the end.
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
    GROUP_ROWS, GROUP_TOKENS, GroupKernel, GroupLayout, InterleavedDots, K_DMIN, K_MINS,
    K_PREPARED_BLOCK, K_QS, K_RECORD, K_SCALES, PREPARED_BLOCK, Q5_HALF_RECORD, Q5_LO,
    Q5_PREPARED_BLOCK, Q5_QUAD, Q5_QUADS, group_dots, install_layouts, prepare_q5_0,
};
use super::x86_avx2_lanes::{broadcast_from_memory, hsum_lanes};
use super::x86_avx2_legacy::{dot_u8_i8, f16x1, hsum};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Bytes of one Q4_0 block record of a group.
const RECORD: usize = GROUP_ROWS * 18;

/// Rows per half of a group (one per 32-bit lane of a 256-bit register).
const HALF: usize = GROUP_ROWS / 2;

pub(super) fn install(dots: &mut InterleavedDots) {
    install_layouts::<Q4_0, Q4K<false>, Q4K<true>>(dots);
    dots.q5_0 = Some(GroupKernel {
        dot: group_dots::<Q5_0>,
        grouped: None,
        prepare: prepare_q5_0,
        many_groups: Some(q5_0_many_groups),
    });
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
        let xb: [&[u8; PREPARED_BLOCK]; T] = xs.map(|x| {
            x[b * PREPARED_BLOCK..(b + 1) * PREPARED_BLOCK]
                .try_into()
                .expect("a prepared block")
        });
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
        // Not in the gemm order, which only prefill batches take: there a
        // pool chunk's groups (~320 KB) are read once per four tokens and
        // stay in L2, and pulling the next group into L1 evicted what this
        // one and the tokens still needed (1B Q4_K pp512, three alternating
        // rounds: 74–76 tok/s with the prefetch, 85–96 without). Decode and
        // a continuous batch's single tokens stream the weights from memory
        // once, and keep it.
        if !PER_CHUNK {
            prefetch_next_group::<H>(group, K_RECORD, b, first);
        }
        let rows = |h: usize| 2 * HALF * (first + h);
        let dw: [__m256; H] = std::array::from_fn(|h| f16x8(&rec[rows(h)..]));
        let dminw: [__m256; H] = std::array::from_fn(|h| f16x8(&rec[K_DMIN + rows(h)..]));
        // Fixed-size, so the offsets below need no bounds checks: with
        // slices, one check pair stayed in the innermost loop.
        let xb: [&[u8; K_PREPARED_BLOCK]; T] = xs.map(|x| {
            x[b * K_PREPARED_BLOCK..(b + 1) * K_PREPARED_BLOCK]
                .try_into()
                .expect("a prepared block")
        });
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

/// The Q5_0 layout (see [`super::interleaved`]): one token row by row (a
/// half group of 8 rows, 8 accumulators); two to four tokens two rows at
/// a time, each row's block decoded once for them ([`q5_0_pairs`]); eight
/// tokens in the lanes of a vector, as the lane tiles of
/// [`super::x86_avx2_lanes`] run prefill: a row's weight quad broadcast
/// against the eight tokens' quads.
struct Q5_0;

impl GroupLayout for Q5_0 {
    const ELEMENTS: usize = 32;
    const RECORD: usize = 2 * Q5_HALF_RECORD;
    const X_BLOCK: usize = Q5_PREPARED_BLOCK;
    const WIDEST: usize = 8;
    unsafe fn run<const T: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
    ) -> [[f32; GROUP_ROWS]; T] {
        let mut out = [[0f32; GROUP_ROWS]; T];
        // SAFETY: the caller's contract (see the trait).
        unsafe {
            if T == 8 {
                let xs = std::array::from_fn(|t| xs[t]);
                q5_0_lanes(nb, group, group.len(), xs, &mut |_, o| {
                    out.iter_mut().zip(o).for_each(|(out, o)| *out = *o)
                });
                return out;
            }
            if PAIRED.contains(&T) {
                q5_0_paired(nb, group, group.len(), xs, &mut |_, o| {
                    out.copy_from_slice(&o[..T])
                });
                return out;
            }
            let halves = group[..2 * nb * Q5_HALF_RECORD].chunks_exact(nb * Q5_HALF_RECORD);
            for (h, records) in halves.enumerate() {
                for (out, x) in out.iter_mut().zip(xs) {
                    out[HALF * h..HALF * (h + 1)].copy_from_slice(&q5_0_half(nb, records, x));
                }
            }
        }
        out
    }
}

/// How far ahead of the record being read the Q5_0 kernels prefetch.
const Q5_AHEAD: usize = 8 * Q5_HALF_RECORD;

/// Asks for the three lines of the Q5_0 half record [`Q5_AHEAD`] past `rec`.
#[inline(always)]
fn prefetch_q5_ahead(rec: &[u8]) {
    let ahead = rec.as_ptr().wrapping_add(Q5_AHEAD);
    for line in [0, 64, 128] {
        // A hint, never a load: any address is fine, and SSE is part of
        // the x86-64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
    }
}

/// A Q5_0 quad's plane of fifth bits, widened to the 32 elements: byte j
/// holds in bits 0–3 the fifth bits of element j of rows 0–3 (bits 4–7 are
/// not read). Once per quad, for its four rows ([`q5_0_row`]).
#[inline]
#[target_feature(enable = "avx2")]
fn q5_0_fifth_bits(quad: &[u8]) -> __m256i {
    let hi: &[u8; 16] = quad[..16].try_into().unwrap();
    // SAFETY: `hi` is 16 readable bytes; the load is unaligned.
    let h = unsafe { _mm_loadu_si128(hi.as_ptr().cast()) };
    _mm256_set_m128i(_mm_srli_epi16::<4>(h), h)
}

/// The 32 five-bit values of row `i` (0–3) of a Q5_0 quad, as bytes, from
/// the quad and its [`q5_0_fifth_bits`].
#[inline]
#[target_feature(enable = "avx2")]
fn q5_0_row(quad: &[u8], fifth: __m256i, i: usize) -> __m256i {
    // Row i's bit to bit 4 (a shift by a count in a register: with `i`
    // known only at run time, a `match` over immediate shifts became a
    // five-instruction variable-shift emulation).
    let fifth = _mm256_sll_epi16(fifth, _mm_cvtsi32_si128(4 - i as i32));
    let pair = load(&quad[Q5_LO + 32 * (i / 2)..]);
    let low = match i % 2 {
        0 => pair,
        _ => _mm256_srli_epi16::<4>(pair),
    };
    _mm256_or_si256(
        _mm256_and_si256(low, _mm256_set1_epi8(0x0f)),
        _mm256_and_si256(fifth, _mm256_set1_epi8(0x10)),
    )
}

/// The eight rows of a half group (`records`) by one token, row by row.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_half(nb: usize, records: &[u8], x: &[u8]) -> [f32; HALF] {
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = [_mm256_setzero_ps(); HALF];
    for (b, rec) in records.chunks_exact(Q5_HALF_RECORD).take(nb).enumerate() {
        prefetch_q5_ahead(rec);
        let dw = f16x8(rec);
        let xb = &x[b * Q5_PREPARED_BLOCK..(b + 1) * Q5_PREPARED_BLOCK];
        let xq = load(xb);
        // Σ (u − 16)·x per quad as Σ u·x − Σ 16·x, the token's side once.
        let correction = dot_u8_i8(sixteen, xq);
        let dx = f32::from_le_bytes(xb[32..36].try_into().unwrap());
        let mut scales = [0f32; HALF];
        // SAFETY: `scales` is 8 writable f32; the store is unaligned.
        unsafe { _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_mul_ps(dw, _mm256_set1_ps(dx))) };
        for quad in 0..2 {
            let quad_bytes = &rec[Q5_QUADS + Q5_QUAD * quad..][..Q5_QUAD];
            let fifth = q5_0_fifth_bits(quad_bytes);
            for i in 0..4 {
                let u = q5_0_row(quad_bytes, fifth, i);
                let r = 4 * quad + i;
                let lanes = _mm256_sub_epi32(dot_u8_i8(u, xq), correction);
                let d = _mm256_set1_ps(scales[r]);
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[r]);
            }
        }
    }
    acc.map(|a| hsum(a))
}

/// One token's prepared Q5_0 block as [`q5_0_pairs`] reads it: the 32
/// quants, `Σ 16·x` per quad (the offset correction) and the scale in
/// every lane, side by side with the other tokens' of the same block, so
/// the row passes read one stream of them.
#[derive(Clone, Copy)]
struct TokenBlock {
    x: __m256i,
    c: __m256i,
    d: __m256,
}

/// What [`q5_0_pairs`] reads besides the weights: the tokens' blocks
/// (`[block][token]`, made once per call over many groups) and a half
/// group's scale products (`[block][token]`: `d_w · d_x` of its eight
/// rows).
#[derive(Default)]
struct PairScratch {
    tokens: Vec<TokenBlock>,
    scales: Vec<[f32; HALF]>,
}

thread_local! {
    static PAIR_SCRATCH: RefCell<PairScratch> = RefCell::new(PairScratch::default());
}

impl PairScratch {
    /// Makes the blocks of `xs` (each `nb` prepared blocks).
    #[target_feature(enable = "avx2,fma")]
    fn prepare<const T: usize>(&mut self, nb: usize, xs: [&[u8]; T]) {
        let sixteen = _mm256_set1_epi8(16);
        self.tokens.clear();
        for b in 0..nb {
            for x in xs {
                let x = &x[b * Q5_PREPARED_BLOCK..][..Q5_PREPARED_BLOCK];
                let q = load(x);
                let d = f32::from_le_bytes(x[32..].try_into().unwrap());
                self.tokens.push(TokenBlock {
                    x: q,
                    c: dot_u8_i8(sixteen, q),
                    d: _mm256_set1_ps(d),
                });
            }
        }
        self.scales.resize(nb * T, [0.0; HALF]);
    }
}

/// The token counts that [`q5_0_paired`] takes.
const PAIRED: [usize; 3] = [2, 3, 4];

/// Every group of `groups` (`group_bytes` apart) by the tokens `xs`
/// ([`PAIRED`] counts), `out(group, result[t][r])`, through
/// [`q5_0_pairs`], the tokens' blocks made once for all the groups.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_paired<const T: usize>(
    nb: usize,
    groups: &[u8],
    group_bytes: usize,
    xs: [&[u8]; T],
    out: &mut dyn FnMut(usize, &[[f32; GROUP_ROWS]; GROUP_TOKENS]),
) {
    PAIR_SCRATCH.with_borrow_mut(|scratch| {
        scratch.prepare(nb, xs);
        let mut o = [[0f32; GROUP_ROWS]; GROUP_TOKENS];
        for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
            q5_0_pairs::<T>(nb, group, scratch, &mut o);
            out(g, &o);
        }
    })
}

/// A group by two to four tokens (`out[t][r]`, the tokens made by
/// [`PairScratch::prepare`]): per half, the scale products first (one
/// multiply per token for the eight rows), then two rows at a time by all
/// the tokens, each row's block decoded once for them (`2·T` accumulators;
/// the tokens' quants and corrections are memory operands, not registers).
/// Per (row, token) the order of [`q5_0_half`], so the same results bit
/// for bit.
///
/// Measured (Zen 3, AVX2, `KERNELS_TABLE=1 cargo bench --bench kernels --
/// 'singles Q5_0 gemma 640->2048'`, each time against one token in the
/// same run): four tokens 3.0–3.1 → 2.3–2.5 times one token's time, two
/// 1.56–1.58 → 1.45–1.47 times, against four rows by two tokens, which
/// decoded each row once per pair of tokens and redid the tokens' side
/// for every four rows. In Gemma's continuous batch of four sequences
/// (`RUSTY_LLM_PROFILE=1 cargo run --release --example batch_decode`),
/// the 640→4096 gate and up product: 315–430 → 253–307 µs a call.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_pairs<const T: usize>(
    nb: usize,
    group: &[u8],
    scratch: &mut PairScratch,
    out: &mut [[f32; GROUP_ROWS]; GROUP_TOKENS],
) {
    let PairScratch { tokens, scales } = scratch;
    let (tokens, scales) = (&tokens[..nb * T], &mut scales[..nb * T]);
    let halves = group[..2 * nb * Q5_HALF_RECORD].chunks_exact(nb * Q5_HALF_RECORD);
    for (h, records) in halves.enumerate() {
        let per_block = records
            .chunks_exact(Q5_HALF_RECORD)
            .zip(tokens.chunks_exact(T))
            .zip(scales.chunks_exact_mut(T));
        for ((rec, tokens), scales) in per_block {
            // The first pass over the half (the first half of a call was
            // not fetched by the one before, see below).
            prefetch_q5_ahead(rec);
            let dw = f16x8(rec);
            for (scale, token) in scales.iter_mut().zip(tokens) {
                // SAFETY: `scale` is 8 writable f32; the store is unaligned.
                unsafe { _mm256_storeu_ps(scale.as_mut_ptr(), _mm256_mul_ps(dw, token.d)) };
            }
        }
        for r in (0..HALF).step_by(2) {
            let (quad, i) = (r / 4, r % 4);
            let mut acc = [[_mm256_setzero_ps(); 2]; T];
            let per_block = records
                .chunks_exact(Q5_HALF_RECORD)
                .zip(tokens.chunks_exact(T))
                .zip(scales.chunks_exact(T));
            for ((rec, tokens), scales) in per_block {
                // The next half (this group's second, or the next group's
                // first) comes in while this one is summed: a line of its
                // record per block in each of the first three passes.
                if r < 6 {
                    let next = rec.as_ptr().wrapping_add(nb * Q5_HALF_RECORD + 32 * r);
                    // A hint, never a load: any address is fine.
                    _mm_prefetch::<_MM_HINT_T0>(next.cast());
                }
                let quad_bytes = &rec[Q5_QUADS + Q5_QUAD * quad..][..Q5_QUAD];
                let fifth = q5_0_fifth_bits(quad_bytes);
                let u = [i, i + 1].map(|i| q5_0_row(quad_bytes, fifth, i));
                for t in 0..T {
                    for j in 0..2 {
                        let lanes = _mm256_sub_epi32(dot_u8_i8(u[j], tokens[t].x), tokens[t].c);
                        let d = _mm256_set1_ps(scales[t][r + j]);
                        acc[t][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[t][j]);
                    }
                }
            }
            for (out, acc) in out.iter_mut().zip(acc) {
                out[HALF * h + r] = hsum(acc[0]);
                out[HALF * h + r + 1] = hsum(acc[1]);
            }
        }
    }
}

/// Eight tokens' prepared Q5_0 activations, one block, in lanes: `x[k]`
/// lane t = token t's quad k, `c[k]` lane t = Σ 16·x over it, `dx` lane t
/// = its scale.
#[derive(Clone, Copy)]
struct LaneBlock {
    x: [__m256i; 8],
    c: [__m256i; 8],
    dx: __m256,
}

/// A group's sixteen rows decoded, row-major by block: each block's 32
/// five-bit values as bytes and its scale as f32.
#[derive(Clone, Copy)]
struct DecodedBlock {
    u: [u8; 32],
    d: f32,
}

thread_local! {
    static LANE_BLOCKS: RefCell<Vec<LaneBlock>> = const { RefCell::new(Vec::new()) };
    static DECODED: RefCell<Vec<DecodedBlock>> = const { RefCell::new(Vec::new()) };
}

const _: () = assert!(GROUP_TOKENS == 8, "the Q5_0 lanes take eight tokens");

/// The [`super::interleaved::GroupsDot`] of the Q5_0 layout: what the
/// kernels do with the tokens before the weights (eight tokens' lane
/// blocks, two to four tokens' [`PairScratch`]) once for all the groups
/// (per group, that was an eighth of the eight-token kernel's time at
/// Gemma's shapes); other counts group by group.
fn q5_0_many_groups(
    n: usize,
    groups: &[u8],
    group_bytes: usize,
    xs: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut dyn FnMut(usize, &[[f32; GROUP_ROWS]; GROUP_TOKENS]),
) {
    let nb = n / 32;
    assert!(group_bytes >= 2 * nb * Q5_HALF_RECORD && groups.len().is_multiple_of(group_bytes));
    assert!(x_bytes >= nb * Q5_PREPARED_BLOCK && xs.len() >= tokens * x_bytes);
    assert!(tokens <= GROUP_TOKENS);
    let x = |t: usize| &xs[t * x_bytes..t * x_bytes + nb * Q5_PREPARED_BLOCK];
    // SAFETY (each call): installed only on CPUs with avx2, fma and f16c;
    // the slices are long enough (asserted above).
    match tokens {
        8 => unsafe { q5_0_lanes(nb, groups, group_bytes, std::array::from_fn(x), out) },
        2 => unsafe { q5_0_paired(nb, groups, group_bytes, [x(0), x(1)], out) },
        3 => unsafe { q5_0_paired(nb, groups, group_bytes, [x(0), x(1), x(2)], out) },
        4 => unsafe { q5_0_paired(nb, groups, group_bytes, [x(0), x(1), x(2), x(3)], out) },
        _ => {
            let mut o = [[0f32; GROUP_ROWS]; GROUP_TOKENS];
            for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
                group_dots::<Q5_0>(n, group, xs, x_bytes, tokens, &mut o);
                out(g, &o);
            }
        }
    }
}

/// Every group of `groups` (`group_bytes` apart): its 16 rows by eight
/// tokens, `out(group, result[t][r])`. The tokens' lane blocks are made
/// once for all the groups; each group's weights are decoded into a buffer
/// first and then broadcast from it quad by quad: decoding a row's block
/// and broadcasting its quads straight back from the store made every quad
/// wait on store-to-load forwarding (measured on Zen 3, AVX2, 2 threads,
/// Gemma's 640→4096 × 512 tokens: 32.2–36.7 → 26.6–29.9 ms a call).
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_lanes(
    nb: usize,
    groups: &[u8],
    group_bytes: usize,
    xs: [&[u8]; 8],
    out: &mut dyn FnMut(usize, &[[f32; GROUP_ROWS]; 8]),
) {
    let sixteen = _mm256_set1_epi8(16);
    LANE_BLOCKS.with_borrow_mut(|blocks| {
        DECODED.with_borrow_mut(|decoded| {
            blocks.clear();
            for b in 0..nb {
                let xb = xs.map(|x| &x[b * Q5_PREPARED_BLOCK..(b + 1) * Q5_PREPARED_BLOCK]);
                let x = transpose8(xb.map(|x| load(x)));
                let dx = xb.map(|x| f32::from_le_bytes(x[32..36].try_into().unwrap()));
                blocks.push(LaneBlock {
                    x,
                    c: x.map(|x| dot_u8_i8(sixteen, x)),
                    // SAFETY: `dx` is 8 readable f32; the load is unaligned.
                    dx: unsafe { _mm256_loadu_ps(dx.as_ptr()) },
                });
            }
            // Every entry is written below: sized once, not cleared per
            // group (zeroing it cost 2% of Gemma's prefill).
            decoded.resize(GROUP_ROWS * nb, DecodedBlock { u: [0; 32], d: 0.0 });
            for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
                for (h, records) in group.chunks_exact(nb * Q5_HALF_RECORD).take(2).enumerate() {
                    for (b, rec) in records.chunks_exact(Q5_HALF_RECORD).enumerate() {
                        for q in 0..2 {
                            let quad = &rec[Q5_QUADS + Q5_QUAD * q..][..Q5_QUAD];
                            let fifth = q5_0_fifth_bits(quad);
                            for i in 0..4 {
                                let r = HALF * h + 4 * q + i;
                                let out = &mut decoded[r * nb + b];
                                // SAFETY: `u` is 32 writable bytes; the
                                // store is unaligned.
                                unsafe {
                                    _mm256_storeu_si256(
                                        out.u.as_mut_ptr().cast(),
                                        q5_0_row(quad, fifth, i),
                                    )
                                };
                                let at = 2 * (4 * q + i);
                                let d = crate::quant::F16Le(rec[at..at + 2].try_into().unwrap());
                                out.d = f16x1(d);
                            }
                        }
                    }
                }
                let mut result = [[0f32; GROUP_ROWS]; 8];
                for r in 0..GROUP_ROWS {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for (wb, lb) in decoded[r * nb..(r + 1) * nb].iter().zip(blocks.iter()) {
                        let d = _mm256_mul_ps(_mm256_set1_ps(wb.d), lb.dx);
                        for (k, quad) in wb.u.chunks_exact(4).enumerate() {
                            let w = broadcast_from_memory(quad.try_into().unwrap());
                            let lanes = _mm256_sub_epi32(dot_u8_i8(w, lb.x[k]), lb.c[k]);
                            acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[k]);
                        }
                    }
                    let mut row = [0f32; 8];
                    // SAFETY: `row` is 8 writable f32; the store is unaligned.
                    unsafe { _mm256_storeu_ps(row.as_mut_ptr(), hsum_lanes(acc)) };
                    for (t, v) in row.into_iter().enumerate() {
                        result[t][r] = v;
                    }
                }
                out(g, &result);
            }
        })
    })
}

/// An 8 × 8 transpose of 32-bit elements: lane t of result k is lane k of
/// `rows[t]`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(rows: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|i| match i % 2 {
        0 => _mm256_unpacklo_epi32(rows[i], rows[i + 1]),
        _ => _mm256_unpackhi_epi32(rows[i - 1], rows[i]),
    });
    // u[4p + j]: lanes j and 4 + j of rows 4p..4p + 4.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (p, j) = (i / 4, i % 4);
        let (a, b) = (t[4 * p + j / 2], t[4 * p + 2 + j / 2]);
        match j % 2 {
            0 => _mm256_unpacklo_epi64(a, b),
            _ => _mm256_unpackhi_epi64(a, b),
        }
    });
    std::array::from_fn(|k| match k / 4 {
        0 => _mm256_permute2x128_si256::<0x20>(u[k], u[4 + k]),
        _ => _mm256_permute2x128_si256::<0x31>(u[k - 4], u[k]),
    })
}
