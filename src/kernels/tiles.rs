//! Tile kernels: the dot products of up to [`TILE`] weight rows with up to
//! [`TILE`] activation rows in one call, so a weight block is loaded and
//! decoded once per tile of tokens and an activation block once per tile of
//! rows. `matmul` uses them for batches of at least [`TILE`] tokens where
//! the table has one; matrix × vector and types without one run the per-row
//! [`super::VecDot`] (one long stream per row: in decode the weights come
//! from memory, and the per-row kernels measured faster there than 4-row
//! tiles, whose short interleaved streams the hardware prefetcher follows
//! less well).
//!
//! A tile kernel may read its activations in a layout of its own, made once
//! per token by its `prepare` from the `vec_dot_type` bytes (e.g. blocks
//! regrouped to fit a register, offsets folded into per-block sums).
//!
//! Every kernel is written once for any `R × T` and instantiated for 4×4,
//! 4×1, 1×4 and 1×1 ([`drive`]); the arithmetic of one (row, token) pair is
//! the same in each, so a result never depends on which tile computed it.
//! Against the per-row dots only the order of the f32 sums differs (the
//! integer sums are exact), so a batch and the same tokens one by one agree
//! to rounding, not bit for bit.
//!
//! Lane tiles ([`LaneTile`]) put 16 tokens in the lanes of one vector
//! instead: any per-(row, token) f32 order carries over lane by lane, so
//! `matmul` runs them where llama.cpp's batch kernels fix the order (see
//! `x86_avx512_lanes`).

use crate::gguf::GgmlType;

/// Rows and tokens of the largest tile.
pub const TILE: usize = 4;

/// Dot products of `rows` (1..=[`TILE`]) consecutive weight rows of
/// `row_bytes` each (`w`) with `tokens` (1..=[`TILE`]) consecutive activation
/// rows of `x_bytes` each (`x`, as the tile's `prepare` made them, or the
/// `vec_dot_type` bytes when it has none), `n` elements per row:
/// `out[t * TILE + r]`.
pub type TileDot = fn(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [f32; TILE * TILE],
);

/// Turns one token's activations (`n` elements in `vec_dot_type` bytes) into
/// the tile kernel's layout, appended to `out`.
pub type Prepare = fn(n: usize, x: &[u8], out: &mut Vec<u8>);

/// The dot product of one weight row with one token's activations in the
/// tile's `prepare`d layout: matrix × vector for the types whose offsets and
/// scales are cheaper to fold in once per token than once per row.
pub type RowDot = fn(n: usize, w: &[u8], x: &[u8]) -> f32;

/// A tile kernel and the activation layout it reads.
#[derive(Debug, Clone, Copy)]
pub struct Tile {
    pub dot: TileDot,
    pub prepare: Option<Prepare>,
    /// A one-row kernel on the same prepared layout, used by matrix ×
    /// vector (and batches below [`TILE`] tokens) instead of the per-row
    /// [`super::VecDot`] when present.
    pub row: Option<RowDot>,
    /// The per-row [`super::VecDot`] whose result every (row, token) of this
    /// tile equals bit for bit (a tile in the row dot's own f32 order), if
    /// any: single tokens of different sequences may then share a tile.
    pub same_as: Option<super::VecDot>,
}

/// The tile kernels of a variant, by weight type (`None`: per-row dots).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantTiles {
    pub q4_0: Option<Tile>,
    pub q5_0: Option<Tile>,
    pub q8_0: Option<Tile>,
    pub q4_k: Option<Tile>,
    pub q6_k: Option<Tile>,
}

impl QuantTiles {
    pub fn get(&self, ty: GgmlType) -> Option<Tile> {
        match ty {
            GgmlType::Q4_0 => self.q4_0,
            GgmlType::Q5_0 => self.q5_0,
            GgmlType::Q8_0 => self.q8_0,
            GgmlType::Q4_K => self.q4_k,
            GgmlType::Q6_K => self.q6_k,
            _ => None,
        }
    }
}

/// A kernel written for any tile shape: `out[t][r]` for the `R` weight rows
/// and `T` activation rows given.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // implemented by the x86 modules
pub(super) trait TileKernel {
    fn run<const R: usize, const T: usize>(n: usize, w: [&[u8]; R], x: [&[u8]; T])
    -> [[f32; R]; T];
}

/// Runs `K` on a tile of any size up to `TILE × TILE`: the full tile, or
/// four rows of two or three tokens, in one call; other ragged edges as
/// 4×1, 1×4 or 1×1 calls.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[allow(clippy::too_many_arguments)] // the `TileDot` signature
#[inline]
pub(super) fn drive<K: TileKernel>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut [f32; TILE * TILE],
) {
    assert!(rows <= TILE && tokens <= TILE);
    let wr = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    let xt = |t: usize| &x[t * x_bytes..(t + 1) * x_bytes];
    if rows == TILE && tokens == TILE {
        let o = K::run::<TILE, TILE>(n, std::array::from_fn(wr), std::array::from_fn(xt));
        for (t, o) in o.iter().enumerate() {
            out[t * TILE..t * TILE + TILE].copy_from_slice(o);
        }
    } else if rows == TILE {
        // Two or three tokens (a continuous batch of that many singles)
        // still share each weight block.
        let mut put = |t0: usize, o: &[[f32; TILE]]| {
            for (t, o) in o.iter().enumerate() {
                out[(t0 + t) * TILE..(t0 + t + 1) * TILE].copy_from_slice(o);
            }
        };
        let w = std::array::from_fn(wr);
        match tokens {
            3 => put(0, &K::run::<TILE, 3>(n, w, std::array::from_fn(xt))),
            2 => put(0, &K::run::<TILE, 2>(n, w, std::array::from_fn(xt))),
            _ => (0..tokens).for_each(|t| put(t, &K::run::<TILE, 1>(n, w, [xt(t)]))),
        }
    } else if tokens == TILE {
        for r in 0..rows {
            let o = K::run::<1, TILE>(n, [wr(r)], std::array::from_fn(xt));
            for (t, [v]) in o.iter().enumerate() {
                out[t * TILE + r] = *v;
            }
        }
    } else {
        for r in 0..rows {
            for t in 0..tokens {
                let [[v]] = K::run::<1, 1>(n, [wr(r)], [xt(t)]);
                out[t * TILE + r] = v;
            }
        }
    }
}

/// Tokens of a [`LaneTile`] call: one per lane of a 512-bit vector.
pub const LANES: usize = 16;

/// Weight rows of a full [`LaneTile`] call.
pub const LANE_ROWS: usize = 4;

/// The fewest tokens a batch needs for its lane tile: below, too many lanes
/// would idle, and the other kernels (same f32 order) are faster.
pub const LANE_MIN_TOKENS: usize = 8;

/// Interleaves `tokens` (1..=[`LANES`]) consecutive activation rows of
/// `x_bytes` each (`vec_dot_type` bytes, `n` elements) into one group of a
/// lane tile's layout, appended to `out`; lanes past `tokens` hold zeros.
pub type PrepareLanes = fn(n: usize, x: &[u8], x_bytes: usize, tokens: usize, out: &mut Vec<u8>);

/// Dot products of `rows` (1..=[`LANE_ROWS`]) consecutive weight rows of
/// `row_bytes` each with one prepared group of [`LANES`] tokens (`x`):
/// `out[r * LANES + t]`.
pub type LaneDot = fn(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    x: &[u8],
    out: &mut [f32; LANE_ROWS * LANES],
);

/// A tile kernel with the tokens in vector lanes: each group of [`LANES`]
/// tokens is interleaved once per matmul (element group by element group,
/// token by token), so one weight quad broadcast against one load covers
/// every token of the group, and every f32 operation of a (row, token) pair
/// is one lane of a vector operation: a per-(row, token) f32 order, whatever
/// it is, carries over lane by lane, bit for bit.
#[derive(Debug, Clone, Copy)]
pub struct LaneTile {
    pub dot: LaneDot,
    pub prepare: PrepareLanes,
}

/// Token `t`'s 4-byte items `v` (element quads, pairs of block sums, an
/// i32 or f32 per quad) into one block of a prepared group: item `e` at
/// `64e + 4t`, so the 16 tokens' item `e` is one 64-byte vector.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn interleave(v: &[u8], t: usize, dst: &mut [u8]) {
    for (e, item) in v.chunks_exact(4).enumerate() {
        dst[64 * e + 4 * t..64 * e + 4 * t + 4].copy_from_slice(item);
    }
}

/// One group of `tokens` rows of `nb` activation blocks `Y` each (`x_bytes`
/// apart) appended to `out`, `block_bytes` per block, zero where a token is
/// missing: `fill(block, token, its block's bytes)` for every block.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn prepare_group<Y: bytemuck::Pod>(
    nb: usize,
    block_bytes: usize,
    x: &[u8],
    x_bytes: usize,
    tokens: usize,
    out: &mut Vec<u8>,
    fill: impl Fn(&Y, usize, &mut [u8]),
) {
    assert!(tokens <= LANES, "{tokens} tokens in a group of {LANES}");
    let start = out.len();
    out.resize(start + nb * block_bytes, 0);
    let group = &mut out[start..];
    for t in 0..tokens {
        let row = &x[t * x_bytes..t * x_bytes + nb * size_of::<Y>()];
        let blocks: &[Y] = bytemuck::cast_slice(row);
        for (y, dst) in blocks.iter().zip(group.chunks_exact_mut(block_bytes)) {
            fill(y, t, dst);
        }
    }
}
