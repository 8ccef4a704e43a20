//! Row-interleaved weights: Q4_0 matrices rearranged once at load so that
//! one 64-byte register holds the same four elements of [`GROUP_ROWS`]
//! consecutive rows, one row per 32-bit lane. A kernel then multiplies
//! sixteen rows by one token with one `vpdpbusd` per four elements, the
//! token's four activation bytes broadcast to every lane, and applies the
//! block scales with one multiply and one FMA per block for all sixteen rows
//! (the per-row kernels pay that per row): prefill spends far less on f32
//! work and activation loads, and decode reads one long contiguous stream.
//! llama.cpp repacks Q4_0 for x86 in the same spirit (`repack.cpp`,
//! `block_q4_0x8`), with a layout and f32 order of its own.
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
//! The activations are Q8_0 blocks [`prepare`]d into 40-byte records: the
//! 32 quants, `d` as f32, and `−8 · Σq` (the weights' offset: `w = u − 8`
//! for the unsigned nibble `u`, so Σ w·x = Σ u·x − 8·Σx).
//!
//! What one (row, token) pair computes, in this order (the scalar
//! [`group_dot`] is the definition, the SIMD kernels keep it bit for bit):
//! per block, the exact integer Σ (u − 8)·x, then
//! `acc = fma(isum as f32, d_w · d_x, acc)` over the blocks in order.
//! The arithmetic of a pair does not depend on how many tokens or rows a
//! call takes, so decode, prefill and continuous batches agree bit for bit.

use crate::quant::{BlockQ4_0, BlockQ8_0};

/// Rows per interleaved group (one per 32-bit lane of a 512-bit register).
pub const GROUP_ROWS: usize = 16;

/// Tokens per call of a [`GroupDot`], at most.
pub const GROUP_TOKENS: usize = 8;

/// Bytes of one block record of a group.
const RECORD: usize = GROUP_ROWS * size_of::<BlockQ4_0>();

/// Bytes of one prepared activation block.
pub const PREPARED_BLOCK: usize = 40;

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

/// The interleaved kernels of a variant, by weight type (`None`: the
/// weights stay as they are in the file).
#[derive(Debug, Clone, Copy, Default)]
pub struct InterleavedDots {
    pub q4_0: Option<GroupDot>,
}

impl InterleavedDots {
    pub fn get(&self, ty: crate::gguf::GgmlType) -> Option<GroupDot> {
        match ty {
            crate::gguf::GgmlType::Q4_0 => self.q4_0,
            _ => None,
        }
    }
}

/// Whether a `rows`-row matrix of `ty` can be interleaved.
pub fn can_interleave(ty: crate::gguf::GgmlType, rows: usize) -> bool {
    ty == crate::gguf::GgmlType::Q4_0 && rows > 0 && rows.is_multiple_of(GROUP_ROWS)
}

/// Rearranges a Q4_0 matrix (`rows` a multiple of [`GROUP_ROWS`], `cols` of
/// 32) into the interleaved layout; the result has as many bytes as `data`.
pub fn interleave_q4_0(rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let nb = cols / 32;
    let row_bytes = nb * size_of::<BlockQ4_0>();
    assert!(rows.is_multiple_of(GROUP_ROWS) && data.len() == rows * row_bytes);
    let mut out = vec![0u8; data.len()];
    let blocks: &[BlockQ4_0] = bytemuck::cast_slice(data);
    for (g, dst) in out.chunks_exact_mut(nb * RECORD).enumerate() {
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
    }
    out
}

/// Appends one token's Q8_0 activations (`n` elements) as prepared records.
pub fn prepare(n: usize, x: &[u8], out: &mut Vec<u8>) {
    let blocks: &[BlockQ8_0] = bytemuck::cast_slice(&x[..n / 32 * size_of::<BlockQ8_0>()]);
    for b in blocks {
        out.extend_from_slice(bytemuck::cast_slice(&b.qs));
        out.extend_from_slice(&b.d.to_f32().to_le_bytes());
        let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
        out.extend_from_slice(&(-8 * sum).to_le_bytes());
    }
}

/// The reference: one group by one prepared token, in the order the module
/// doc defines.
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

/// [`GroupDot`] by the reference, for tests and as the meaning of the SIMD
/// kernels.
#[cfg_attr(not(test), allow(dead_code))]
pub fn group_dots_reference(
    n: usize,
    group: &[u8],
    xs: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [[f32; GROUP_ROWS]; GROUP_TOKENS],
) {
    for (t, o) in out.iter_mut().enumerate().take(tokens) {
        *o = group_dot(n, group, &xs[t * x_bytes..(t + 1) * x_bytes]);
    }
}
