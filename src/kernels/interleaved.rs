//! Row-interleaved weights: Q4_0 and Q4_K matrices rearranged once at load
//! so that one 64-byte register holds the same four elements of
//! [`GROUP_ROWS`] consecutive rows, one row per 32-bit lane. A kernel then
//! multiplies sixteen rows by one token with one `vpdpbusd` per four
//! elements, the token's four activation bytes broadcast to every lane, and
//! applies the block scales once per block for all sixteen rows (the
//! per-row kernels pay that, and a horizontal sum, per row): prefill spends
//! far less on f32 work and activation loads, and decode reads one long
//! contiguous stream with little work per byte. llama.cpp repacks Q4_0 and
//! Q4_K for x86 in the same spirit (`repack.cpp`, `block_q4_0x8`,
//! `block_q4_Kx8`), eight rows per group. Q5_0 has a layout of its own for
//! AVX2 (below), made to decode cheaply rather than to share registers.
//!
//! The file's pages of an interleaved matrix are released after the copy
//! (`GgufFile::release`), so resident memory holds the weights once.
//!
//! ## Q4_0
//!
//! The layout of one group of 16 rows, block by block (`n / 32` records of
//! 288 bytes, the same bytes as the rows' own blocks):
//!
//! ```text
//! 0    d      16 × f16, row r's scale of this block
//! 32   qs[0]  64 bytes: lane r (bytes 4r..4r + 4) = row r's qs[0..4]
//! 96   qs[1]  row r's qs[4..8]
//! 160  qs[2]  row r's qs[8..12]
//! 224  qs[3]  row r's qs[12..16]
//! ```
//!
//! (Q4_0's byte j holds element j in its low nibble and element j + 16 in
//! its high one, so the low nibbles of `qs[k]` are elements 4k..4k + 4 and
//! the high ones elements 16 + 4k..16 + 4k + 4.)
//!
//! The activations are Q8_0 blocks [`prepare_q4_0`]d into 40-byte records: the
//! 32 quants, `d` as f32, and `−8 · Σq` (the weights' offset: `w = u − 8`
//! for the unsigned nibble `u`, so Σ w·x = Σ u·x − 8·Σx).
//!
//! What one (row, token) pair computes, in this order (the scalar
//! [`group_dot`] is the definition, the SIMD kernels keep it bit for bit):
//! per block, the exact integer Σ (u − 8)·x, then
//! `acc = fma(isum as f32, d_w · d_x, acc)` over the blocks in order.
//! The arithmetic of a pair does not depend on how many tokens or rows a
//! call takes, so decode, prefill and continuous batches agree bit for bit.
//!
//! ## Q4_K
//!
//! One record of 2496 bytes per 256-element block of the 16 rows (the
//! rows' own blocks are 2304: the scales are stored unpacked):
//!
//! ```text
//! 0     d      16 × f16
//! 32    dmin   16 × f16
//! 64    sc     8 × 16 bytes: byte 16j + r = row r's 6-bit scale of sub-block j
//! 192   mins   4 × 64 bytes: lane r of part k = row r's mins of sub-blocks
//!              2k and 2k + 1 as two i16 (for `vpdpwssd`)
//! 448   qs     4 × 8 × 64 bytes: part (k, p), lane r = row r's
//!              qs[32k + 4p..32k + 4p + 4] (low nibbles: sub-block 2k,
//!              high nibbles: sub-block 2k + 1)
//! ```
//!
//! Activations: Q8_K blocks prepared as the 256 quants, `d` (f32) and,
//! per 64-element chunk k, the sums of its two 32-element halves (from
//! `bsums`) as two i16 in one i32.
//!
//! The order is ggml's for Q4_K weights repacked on x86 (`repack.cpp`),
//! which llama.cpp uses whenever the rows are a multiple of 8, so logits
//! stay equal to llama.cpp's: one token alone (and the last `n % 4` of a
//! batch) in the order of `ggml_gemv_q4_K_8x8_q8_K` (per block, the exact
//! integers Σ sc·q·x and Σ m·bsum, then `acc = fma(Σ, d_w·d_x, acc)` and
//! `acc_m = fma(Σm, dmin_w·d_x, acc_m)`), the tokens of a batch's whole
//! groups of four in that of `ggml_gemm_q4_K_8x8_q8_K` (the same two FMAs
//! per 64-element chunk instead of per block); `acc − acc_m` at the end.
//! [`group_dot_q4_k`] is the definition; the one-row kernels
//! `dot_q4_k_gemv` / `dot_q4_k_gemm` of `x86_avx2_kquants` agree bit for
//! bit (tested).
//!
//! ## Q5_0 (AVX2)
//!
//! llama.cpp does not repack Q5_0, so the order is its plain one
//! (`ggml_vec_dot_q5_0_q8_0`, and tinyBLAS for batches): per (row, token)
//! eight lanes, lane l accumulating `fma(d_w · d_x, Σ_{4 elements of quad
//! l} w·x, lane)` block by block, then `hsum`'s tree. What the layout
//! changes is the cost of decoding a block: in the file, a row's fifth
//! bits need a byte shuffle, an or, a compare and an and per block, its
//! nibbles a shift, an insert and an and; here four rows share one
//! 16-byte plane of fifth bits and two rows one 32-byte vector of nibbles,
//! and a row's 32 five-bit values take two shifts, two ands and an or.
//! A group is its two halves of 8 rows one after the other (each read as
//! one stream), a half is `n / 32` records of 176 bytes (the rows' own
//! blocks are 8 × 22):
//!
//! ```text
//! 0    d      8 × f16, row i's scale
//! 16   quad 0 (rows 0–3):
//!        hi    16 bytes: byte j, bit i = fifth bit of row i's element j,
//!              bit 4 + i = that of its element j + 16
//!        lo01  32 bytes: byte j = row 0's element j (low nibble) and
//!              row 1's (high nibble)
//!        lo23  32 bytes: rows 2 and 3
//! 96   quad 1 (rows 4–7), the same
//! ```
//!
//! Activations: Q8_0 blocks prepared as the 32 quants and `d` as f32.
//! [`group_dot_q5_0`] is the definition; it equals the plain Q5_0 row dot
//! bit for bit (tested).

use super::weight_buffer::WeightBuffer;
use crate::gguf::GgmlType;
use crate::quant::{BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ8_0, BlockQ8K};

/// Rows per interleaved group (one per 32-bit lane of a 512-bit register).
pub const GROUP_ROWS: usize = 16;

/// Tokens per call of a [`GroupDot`], at most.
pub const GROUP_TOKENS: usize = 8;

/// Bytes of one Q4_0 block record of a group.
const RECORD: usize = GROUP_ROWS * size_of::<BlockQ4_0>();

/// Bytes of one prepared activation block for Q4_0.
pub const PREPARED_BLOCK: usize = 40;

/// Bytes of one Q4_K block record of a group, and where its fields start.
pub const K_RECORD: usize = 2496;
pub const K_DMIN: usize = 32;
pub const K_SCALES: usize = 64;
pub const K_MINS: usize = 192;
pub const K_QS: usize = 448;

/// Bytes of one prepared activation block for Q4_K.
pub const K_PREPARED_BLOCK: usize = 276;

/// Bytes of one Q5_0 record of a half group (8 rows, one block), where
/// its quads start, and the bytes of a quad's fields.
pub const Q5_HALF_RECORD: usize = 176;
pub const Q5_QUADS: usize = 16;
pub const Q5_QUAD: usize = 80;
pub const Q5_LO: usize = 16;

/// Bytes of one prepared activation block for Q5_0.
pub const Q5_PREPARED_BLOCK: usize = 36;

/// Dot products of one interleaved group (`n` elements per row) with
/// `tokens` (1..=[`GROUP_TOKENS`]) prepared activation rows of `x_bytes`
/// each: `out[t][r]`.
pub type GroupDot = fn(
    n: usize,
    group: &[u8],
    xs: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [[f32; GROUP_ROWS]; GROUP_TOKENS],
);

/// Appends one token's activations (`n` elements in the weight type's
/// `vec_dot_type` bytes) in a group kernel's layout.
pub type Prepare = fn(n: usize, x: &[u8], out: &mut Vec<u8>);

/// `tokens` (at most [`GROUP_TOKENS`]) prepared activation rows (`x_bytes`
/// each, in `xs`) by every group of `groups` (`group_bytes` each), each
/// group's results handed to `out` as `(group index, result[t][r])` (`t <
/// tokens`), each (row, token)
/// bit for bit what the layout's [`GroupDot`] gives it: for kernels that
/// lay the tokens out in a form of their own, made once for all the groups
/// rather than once per group.
pub type GroupsDot = fn(
    n: usize,
    groups: &[u8],
    group_bytes: usize,
    xs: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut dyn FnMut(usize, &[[f32; GROUP_ROWS]; GROUP_TOKENS]),
);

/// The kernels of one interleaved type.
#[derive(Debug, Clone, Copy)]
pub struct GroupKernel {
    /// Single tokens, and the tokens outside a batch's whole groups of four.
    pub dot: GroupDot,
    /// The tokens in a batch's whole groups of four, where ggml's order
    /// for them differs (`None`: `dot` for every token).
    pub grouped: Option<GroupDot>,
    pub prepare: Prepare,
    /// `dot`'s order for any count of tokens over many groups at once,
    /// where the variant has it.
    pub many_groups: Option<GroupsDot>,
}

/// The interleaved kernels of a variant, by weight type (`None`: the
/// weights stay as they are in the file).
#[derive(Debug, Clone, Copy, Default)]
pub struct InterleavedDots {
    pub q4_0: Option<GroupKernel>,
    pub q4_k: Option<GroupKernel>,
    pub q5_0: Option<GroupKernel>,
}

impl InterleavedDots {
    pub fn get(&self, ty: GgmlType) -> Option<GroupKernel> {
        match ty {
            GgmlType::Q4_0 => self.q4_0,
            GgmlType::Q4_K => self.q4_k,
            GgmlType::Q5_0 => self.q5_0,
            _ => None,
        }
    }
}

/// One SIMD kernel of an interleaved layout, for any number of tokens per
/// call (the x86 modules implement it; [`group_dots`] drives it).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
pub(super) trait GroupLayout {
    /// Elements per block, bytes per block record, prepared activation
    /// bytes per block.
    const ELEMENTS: usize;
    const RECORD: usize;
    const X_BLOCK: usize;
    /// Tokens per call the kernel takes best (registers permitting).
    const WIDEST: usize;
    /// # Safety
    /// The CPU has the implementing module's features; `group` holds `nb` records and
    /// each `xs[t]` `nb` prepared blocks.
    unsafe fn run<const T: usize>(
        nb: usize,
        group: &[u8],
        xs: [&[u8]; T],
    ) -> [[f32; GROUP_ROWS]; T];
}

/// Installs one module's kernels of the two layouts: Q4_0 (one order for
/// every token), Q4_K (ggml's gemv order for single tokens, its gemm order
/// for groups of four).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
pub(super) fn install_layouts<Q40: GroupLayout, Q4KGemv: GroupLayout, Q4KGemm: GroupLayout>(
    dots: &mut InterleavedDots,
) {
    dots.q4_0 = Some(GroupKernel {
        dot: group_dots::<Q40>,
        grouped: None,
        prepare: prepare_q4_0,
        many_groups: None,
    });
    dots.q4_k = Some(GroupKernel {
        dot: group_dots::<Q4KGemv>,
        grouped: Some(group_dots::<Q4KGemm>),
        prepare: prepare_q4_k,
        many_groups: None,
    });
}

/// A [`GroupDot`] from a layout's kernel: the tokens
/// in calls of `L::WIDEST`, then of four, then the rest in one call (a
/// token's arithmetic is the same in each; the weights are decoded once
/// per call).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the x86 modules
pub(super) fn group_dots<L: GroupLayout>(
    n: usize,
    group: &[u8],
    xs: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [[f32; GROUP_ROWS]; GROUP_TOKENS],
) {
    let nb = n / L::ELEMENTS;
    assert!(group.len() >= nb * L::RECORD && tokens <= GROUP_TOKENS);
    assert!(x_bytes >= nb * L::X_BLOCK && xs.len() >= tokens * x_bytes);
    let x = |t: usize| &xs[t * x_bytes..t * x_bytes + nb * L::X_BLOCK];
    let mut t = 0;
    // SAFETY: a layout's kernel is installed only on CPUs with its module's
    // features (see each module's doc); the slices are long enough
    // (asserted above).
    unsafe {
        if L::WIDEST == 8 {
            while tokens - t >= 8 {
                let o = L::run::<8>(nb, group, std::array::from_fn(|i| x(t + i)));
                out[t..t + 8].copy_from_slice(&o);
                t += 8;
            }
        }
        while tokens - t >= 4 {
            let o = L::run::<4>(nb, group, std::array::from_fn(|i| x(t + i)));
            out[t..t + 4].copy_from_slice(&o);
            t += 4;
        }
        match tokens - t {
            3 => out[t..t + 3].copy_from_slice(&L::run::<3>(nb, group, [x(t), x(t + 1), x(t + 2)])),
            2 => out[t..t + 2].copy_from_slice(&L::run::<2>(nb, group, [x(t), x(t + 1)])),
            1 => out[t] = L::run::<1>(nb, group, [x(t)])[0],
            _ => {}
        }
    }
}

/// Whether a `rows`-row matrix of `ty` can be interleaved.
pub fn can_interleave(ty: GgmlType, rows: usize) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_K | GgmlType::Q5_0)
        && rows > 0
        && rows.is_multiple_of(GROUP_ROWS)
}

/// Bytes of the interleaved copy of a `rows` × `cols` matrix of `ty`.
pub fn interleaved_len(ty: GgmlType, rows: usize, cols: usize) -> usize {
    match ty {
        GgmlType::Q4_K => rows / GROUP_ROWS * cols / 256 * K_RECORD,
        GgmlType::Q5_0 => rows * cols / 32 * size_of::<BlockQ5_0>(),
        _ => rows * cols / 32 * size_of::<BlockQ4_0>(),
    }
}

/// The interleaved copy of a matrix ([`can_interleave`] must hold).
pub fn interleave(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> std::io::Result<WeightBuffer> {
    match ty {
        GgmlType::Q4_K => interleave_q4_k(rows, cols, data),
        GgmlType::Q5_0 => interleave_q5_0(rows, cols, data),
        _ => interleave_q4_0(rows, cols, data),
    }
}

/// Fills `out` group by group (`group_bytes` each) with `one_group`, split
/// over the cores: a 1B model's matrices are 550 MB in all, and the copy
/// (mostly page faults and cache misses) is a visible part of the load
/// time on one core.
fn by_groups(out: &mut [u8], group_bytes: usize, one_group: impl Fn(usize, &mut [u8]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let groups = out.len() / group_bytes.max(1);
    let per_thread = groups.div_ceil(threads).max(1);
    let one_group = &one_group;
    std::thread::scope(|s| {
        for (i, part) in out.chunks_mut(per_thread * group_bytes).enumerate() {
            s.spawn(move || {
                for (j, dst) in part.chunks_exact_mut(group_bytes).enumerate() {
                    one_group(i * per_thread + j, dst);
                }
            });
        }
    });
}

/// Rearranges a Q4_K matrix (`rows` a multiple of [`GROUP_ROWS`], `cols` of
/// 256) into the interleaved layout.
pub fn interleave_q4_k(rows: usize, cols: usize, data: &[u8]) -> std::io::Result<WeightBuffer> {
    let nb = cols / 256;
    assert!(rows.is_multiple_of(GROUP_ROWS) && data.len() == rows * nb * size_of::<BlockQ4K>());
    let mut out = WeightBuffer::zeroed(interleaved_len(GgmlType::Q4_K, rows, cols))?;
    let blocks: &[BlockQ4K] = bytemuck::cast_slice(data);
    by_groups(&mut out, nb * K_RECORD, |g, dst| {
        for (b, rec) in dst.chunks_exact_mut(K_RECORD).enumerate() {
            for r in 0..GROUP_ROWS {
                let block = &blocks[(g * GROUP_ROWS + r) * nb + b];
                rec[2 * r..2 * r + 2].copy_from_slice(&block.d.0);
                rec[K_DMIN + 2 * r..K_DMIN + 2 * r + 2].copy_from_slice(&block.dmin.0);
                let (sc, m) = super::scalar_kquants::scales_mins_k4(&block.scales);
                for j in 0..8 {
                    rec[K_SCALES + 16 * j + r] = sc[j];
                }
                for k in 0..4 {
                    let at = K_MINS + 64 * k + 4 * r;
                    rec[at..at + 2].copy_from_slice(&i16::from(m[2 * k]).to_le_bytes());
                    rec[at + 2..at + 4].copy_from_slice(&i16::from(m[2 * k + 1]).to_le_bytes());
                    for p in 0..8 {
                        let at = K_QS + 512 * k + 64 * p + 4 * r;
                        let from = 32 * k + 4 * p;
                        rec[at..at + 4].copy_from_slice(&block.qs[from..from + 4]);
                    }
                }
            }
        }
    });
    Ok(out)
}

/// Appends one token's Q8_K activations (`n` elements) as prepared records.
pub fn prepare_q4_k(n: usize, x: &[u8], out: &mut Vec<u8>) {
    let blocks: &[BlockQ8K] = bytemuck::cast_slice(&x[..n / 256 * size_of::<BlockQ8K>()]);
    for b in blocks {
        out.extend_from_slice(bytemuck::cast_slice(&b.qs));
        out.extend_from_slice(&b.d.0);
        let half = |j: usize| b.bsums[2 * j].get() + b.bsums[2 * j + 1].get();
        for k in 0..4 {
            out.extend_from_slice(&half(2 * k).to_le_bytes());
            out.extend_from_slice(&half(2 * k + 1).to_le_bytes());
        }
    }
}

/// The Q4_K reference: one group by one prepared token, in ggml's gemv
/// order (`per_chunk` false) or gemm order (true), see the module doc.
pub fn group_dot_q4_k(n: usize, group: &[u8], x: &[u8], per_chunk: bool) -> [f32; GROUP_ROWS] {
    let mut acc = [0f32; GROUP_ROWS];
    let mut acc_m = [0f32; GROUP_ROWS];
    let records = group.chunks_exact(K_RECORD).take(n / 256);
    let i16_at = |b: &[u8], at: usize| i32::from(i16::from_le_bytes([b[at], b[at + 1]]));
    for (rec, xb) in records.zip(x.chunks_exact(K_PREPARED_BLOCK)) {
        let dx = f32::from_le_bytes(xb[256..260].try_into().unwrap());
        for r in 0..GROUP_ROWS {
            let f16_at = |at: usize| half::f16::from_le_bytes([rec[at], rec[at + 1]]).to_f32();
            let d = f16_at(2 * r) * dx;
            let dmin = f16_at(K_DMIN + 2 * r) * dx;
            let (mut isum, mut msum) = (0i32, 0i32);
            for k in 0..4 {
                let mut sub = [0i32; 2];
                for p in 0..8 {
                    for i in 0..4 {
                        let u = rec[K_QS + 512 * k + 64 * p + 4 * r + i];
                        let e = 64 * k + 4 * p + i;
                        sub[0] += i32::from(u & 0x0f) * i32::from(xb[e] as i8);
                        sub[1] += i32::from(u >> 4) * i32::from(xb[e + 32] as i8);
                    }
                }
                let sc = |j: usize| i32::from(rec[K_SCALES + 16 * j + r]);
                let chunk = sub[0] * sc(2 * k) + sub[1] * sc(2 * k + 1);
                let mins = i16_at(rec, K_MINS + 64 * k + 4 * r) * i16_at(xb, 260 + 4 * k)
                    + i16_at(rec, K_MINS + 64 * k + 4 * r + 2) * i16_at(xb, 262 + 4 * k);
                if per_chunk {
                    acc[r] = (chunk as f32).mul_add(d, acc[r]);
                    acc_m[r] = (mins as f32).mul_add(dmin, acc_m[r]);
                } else {
                    isum += chunk;
                    msum += mins;
                }
            }
            if !per_chunk {
                acc[r] = (isum as f32).mul_add(d, acc[r]);
                acc_m[r] = (msum as f32).mul_add(dmin, acc_m[r]);
            }
        }
    }
    std::array::from_fn(|r| acc[r] - acc_m[r])
}

/// Rearranges a Q4_0 matrix (`rows` a multiple of [`GROUP_ROWS`], `cols` of
/// 32) into the interleaved layout; the result has as many bytes as `data`.
pub fn interleave_q4_0(rows: usize, cols: usize, data: &[u8]) -> std::io::Result<WeightBuffer> {
    let nb = cols / 32;
    let row_bytes = nb * size_of::<BlockQ4_0>();
    assert!(rows.is_multiple_of(GROUP_ROWS) && data.len() == rows * row_bytes);
    let mut out = WeightBuffer::zeroed(data.len())?;
    let blocks: &[BlockQ4_0] = bytemuck::cast_slice(data);
    by_groups(&mut out, nb * RECORD, |g, dst| {
        for (b, rec) in dst.chunks_exact_mut(RECORD).enumerate() {
            for r in 0..GROUP_ROWS {
                let block = &blocks[(g * GROUP_ROWS + r) * nb + b];
                rec[2 * r..2 * r + 2].copy_from_slice(&block.d.0);
                for k in 0..4 {
                    let at = 32 + 64 * k + 4 * r;
                    rec[at..at + 4].copy_from_slice(&block.qs[4 * k..4 * k + 4]);
                }
            }
        }
    });
    Ok(out)
}

/// Appends one token's Q8_0 activations (`n` elements) as prepared records.
pub fn prepare_q4_0(n: usize, x: &[u8], out: &mut Vec<u8>) {
    let blocks: &[BlockQ8_0] = bytemuck::cast_slice(&x[..n / 32 * size_of::<BlockQ8_0>()]);
    for b in blocks {
        out.extend_from_slice(bytemuck::cast_slice(&b.qs));
        out.extend_from_slice(&b.d.to_f32().to_le_bytes());
        let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
        out.extend_from_slice(&(-8 * sum).to_le_bytes());
    }
}

/// The Q4_0 reference: one group by one prepared token, in the order the
/// module doc defines.
pub fn group_dot(n: usize, group: &[u8], x: &[u8]) -> [f32; GROUP_ROWS] {
    let mut acc = [0f32; GROUP_ROWS];
    let records = group.chunks_exact(RECORD).take(n / 32);
    for (rec, xb) in records.zip(x.chunks_exact(PREPARED_BLOCK)) {
        let dx = f32::from_le_bytes(xb[32..36].try_into().unwrap());
        let seed = i32::from_le_bytes(xb[36..40].try_into().unwrap());
        for (r, acc) in acc.iter_mut().enumerate() {
            let dw = half::f16::from_le_bytes([rec[2 * r], rec[2 * r + 1]]).to_f32();
            let mut isum = seed;
            for k in 0..4 {
                for i in 0..4 {
                    let u = rec[32 + 64 * k + 4 * r + i];
                    let lo = i32::from(u & 0x0f) * i32::from(xb[4 * k + i] as i8);
                    let hi = i32::from(u >> 4) * i32::from(xb[16 + 4 * k + i] as i8);
                    isum += lo + hi;
                }
            }
            *acc = (isum as f32).mul_add(dw * dx, *acc);
        }
    }
    acc
}

/// Rearranges a Q5_0 matrix (`rows` a multiple of [`GROUP_ROWS`], `cols` of
/// 32) into the interleaved layout; the result has as many bytes as `data`.
pub fn interleave_q5_0(rows: usize, cols: usize, data: &[u8]) -> std::io::Result<WeightBuffer> {
    let nb = cols / 32;
    let row_bytes = nb * size_of::<BlockQ5_0>();
    assert!(rows.is_multiple_of(GROUP_ROWS) && data.len() == rows * row_bytes);
    let mut out = WeightBuffer::zeroed(data.len())?;
    let blocks: &[BlockQ5_0] = bytemuck::cast_slice(data);
    by_groups(&mut out, GROUP_ROWS * row_bytes, |g, dst| {
        for (half, dst) in dst.chunks_exact_mut(nb * Q5_HALF_RECORD).enumerate() {
            let first = g * GROUP_ROWS + half * GROUP_ROWS / 2;
            for (b, rec) in dst.chunks_exact_mut(Q5_HALF_RECORD).enumerate() {
                let block = |i: usize| &blocks[(first + i) * nb + b];
                for i in 0..8 {
                    rec[2 * i..2 * i + 2].copy_from_slice(&block(i).d.0);
                }
                for q in 0..2 {
                    let quad = &mut rec[Q5_QUADS + Q5_QUAD * q..][..Q5_QUAD];
                    for i in 0..4 {
                        let (w, fifth) = q5_0_parts(block(4 * q + i));
                        for j in 0..32 {
                            quad[j % 16] |= fifth[j] << (i + 4 * (j / 16));
                            quad[Q5_LO + 32 * (i / 2) + j] |= w[j] << (4 * (i % 2));
                        }
                    }
                }
            }
        }
    });
    Ok(out)
}

/// A Q5_0 block's elements as (low four bits, fifth bit).
fn q5_0_parts(block: &BlockQ5_0) -> ([u8; 32], [u8; 32]) {
    let qh = u32::from_le_bytes(block.qh);
    let lo = std::array::from_fn(|j| (block.qs[j % 16] >> (4 * (j / 16))) & 0x0f);
    let fifth = std::array::from_fn(|j| (qh >> j) as u8 & 1);
    (lo, fifth)
}

/// Appends one token's Q8_0 activations (`n` elements) as prepared Q5_0
/// records.
pub fn prepare_q5_0(n: usize, x: &[u8], out: &mut Vec<u8>) {
    let blocks: &[BlockQ8_0] = bytemuck::cast_slice(&x[..n / 32 * size_of::<BlockQ8_0>()]);
    for b in blocks {
        out.extend_from_slice(bytemuck::cast_slice(&b.qs));
        out.extend_from_slice(&b.d.to_f32().to_le_bytes());
    }
}

/// The Q5_0 reference: one group by one prepared token, in the order the
/// module doc defines.
pub fn group_dot_q5_0(n: usize, group: &[u8], x: &[u8]) -> [f32; GROUP_ROWS] {
    let nb = n / 32;
    let mut out = [0f32; GROUP_ROWS];
    for (half, records) in group.chunks_exact(nb * Q5_HALF_RECORD).take(2).enumerate() {
        for i in 0..8 {
            let mut lanes = [0f32; 8];
            for (rec, xb) in records
                .chunks_exact(Q5_HALF_RECORD)
                .zip(x.chunks_exact(Q5_PREPARED_BLOCK))
            {
                let dw = half::f16::from_le_bytes([rec[2 * i], rec[2 * i + 1]]).to_f32();
                let dx = f32::from_le_bytes(xb[32..36].try_into().unwrap());
                let quad = &rec[Q5_QUADS + Q5_QUAD * (i / 4)..][..Q5_QUAD];
                let (r, lo) = (i % 4, Q5_LO + 32 * (i % 4 / 2));
                for (l, lane) in lanes.iter_mut().enumerate() {
                    let isum: i32 = (4 * l..4 * l + 4)
                        .map(|j| {
                            let fifth = (quad[j % 16] >> (r + 4 * (j / 16))) & 1;
                            let u = (quad[lo + j] >> (4 * (r % 2))) & 0x0f | fifth << 4;
                            (i32::from(u) - 16) * i32::from(xb[j] as i8)
                        })
                        .sum();
                    *lane = (isum as f32).mul_add(dw * dx, *lane);
                }
            }
            // `hsum`'s tree.
            let s: [f32; 4] = std::array::from_fn(|k| lanes[k] + lanes[k + 4]);
            out[8 * half + i] = (s[0] + s[2]) + (s[1] + s[3]);
        }
    }
    out
}
