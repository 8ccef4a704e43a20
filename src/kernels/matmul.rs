//! Matrix × vector (decode) and matrix × matrix (prefill) over quantized
//! weights, spread over the worker pool by chunks of rows.
//!
//! Activations are quantized once per call into the weight type's activation
//! format; each chunk then runs row dot products. For a batch of tokens the rows
//! of a chunk are visited tile by tile of tokens, so a weight row is read from
//! memory once per tile and served from cache for the other tokens. Batches of
//! at least `tiles::TILE` tokens go through the type's tile kernel where the
//! variant has one (4 rows × 4 tokens per call, see `tiles`), and batches of
//! at least `tiles::LANE_MIN_TOKENS` through its lane tile where it has one
//! (4 rows × 16 tokens, the tokens' activations interleaved once per call;
//! the order of ggml's batch kernels, bit for bit, see [`LanePlan`]).
//!
//! A continuous batch (several sequences in one forward pass) is a list of
//! segments ([`matmul_segments`]): each segment's kernels are the ones its own
//! batch size picks, so its results are bit for bit those of a call of its
//! own, while the weights are still read once for all of them.

use super::dispatch::{BatchDots, Kernels, Quantize};
use super::interleaved::{GROUP_ROWS, GROUP_TOKENS, GroupKernel, can_interleave, interleaved_len};
use super::pool::ThreadPool;
use super::quant_dots::{ROWS, VecDot, VecDot4, VecDotRows, quantize_activations, vec_dot_type};
use super::tiles::{LANE_MIN_TOKENS, LANE_ROWS, LANES, LaneTile, Prepare, TILE, Tile};
use crate::gguf::GgmlType;
use crate::quant::QuantError;
use thiserror::Error;

/// Tokens per tile in [`matmul`]: a weight row stays in L1 across a tile.
const TOKEN_TILE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KernelError {
    #[error("tensor {name:?}: ggml type {ty} cannot be used as a weight by this build")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("tensor {name:?}: {problem}")]
    Shape { name: String, problem: String },
    #[error(transparent)]
    Quant(#[from] QuantError),
}

/// A weight matrix of `rows` rows of `cols` elements, as stored in GGUF
/// (`dims = [cols, rows]`), with its dot product resolved once.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    data: &'a [u8],
    row_bytes: usize,
    dot: VecDot,
    /// Where ggml changes kernels with the batch size (see [`BatchPlan`]).
    batch: BatchPlan,
    tile: Option<Tile>,
    /// A tile kernel that computes exactly what one token alone gets (the
    /// tile's row kernel, or the plain dot in the same f32 order), which the
    /// single tokens of a continuous batch can share, with the rows it
    /// takes per call.
    singles_tile: Option<(Tile, usize)>,
    /// The activation layout of a singles tile that has one of its own
    /// (not the batch tile's).
    singles_prepare: Option<Prepare>,
    /// `dot` for four tokens at once (each bit for bit `dot`'s), if the
    /// variant has it.
    dot4: Option<VecDot4>,
    /// `dot` for [`ROWS`] rows at once (each bit for bit `dot`'s), if the
    /// variant has it.
    dot_rows: Option<VecDotRows>,
    /// The lane tile of the batch orders, and which tokens take it.
    lanes: Option<LanePlan>,
    /// The variant's own activation quantizer, if it has one.
    quantize: Option<Quantize>,
    /// The same matrix row-interleaved (see [`Weights::interleaved`]) and
    /// the kernel that reads it; it then serves every token.
    interleaved: Option<(GroupKernel, &'a [u8])>,
}

impl std::fmt::Debug for Weights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weights({} {}x{})", self.ty, self.rows, self.cols)
    }
}

impl<'a> Weights<'a> {
    /// Checks type, shape and byte length; `name` is used in errors.
    pub fn new(
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
        kernels: &Kernels,
    ) -> Result<Self, KernelError> {
        let (dot, row_bytes) = Self::dot_and_row_bytes(name, ty, cols, kernels)?;
        if row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(KernelError::Shape {
                name: name.into(),
                problem: format!(
                    "{rows} rows of {cols} {ty} need {} bytes, found {}",
                    row_bytes.saturating_mul(rows),
                    data.len()
                ),
            });
        }
        Ok(Self::plan(ty, rows, cols, data, row_bytes, dot, kernels))
    }

    /// Weights known only by their row-interleaved copy (see
    /// [`Weights::interleaved`]): a matrix stacked from several at load has
    /// no row-major bytes, and every product of interleaved weights reads
    /// the copy alone.
    pub fn interleaved_only(
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
        kernels: &Kernels,
    ) -> Result<Self, KernelError> {
        let (dot, row_bytes) = Self::dot_and_row_bytes(name, ty, cols, kernels)?;
        Self::plan(ty, rows, cols, &[], row_bytes, dot, kernels).interleaved(bytes, kernels)
    }

    /// The one-row dot for `ty` and the bytes of a row of `cols`, or the
    /// error naming `name`.
    fn dot_and_row_bytes(
        name: &str,
        ty: GgmlType,
        cols: usize,
        kernels: &Kernels,
    ) -> Result<(VecDot, usize), KernelError> {
        let dot = kernels
            .dots
            .get(ty)
            .ok_or_else(|| KernelError::UnsupportedType {
                name: name.into(),
                ty,
            })?;
        let row_bytes = ty
            .bytes_for(cols as u64)
            .ok_or_else(|| KernelError::Shape {
                name: name.into(),
                problem: format!("row of {cols} is not a whole number of {ty} blocks"),
            })?;
        Ok((dot, row_bytes as usize))
    }

    /// The kernels for `rows` × `cols` weights of `ty` (checked by the
    /// constructors).
    fn plan(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
        row_bytes: usize,
        dot: VecDot,
        kernels: &Kernels,
    ) -> Self {
        let mut dot = dot;
        let mut batch = BatchPlan::default();
        let lane = kernels.batch.lanes;
        let mut lanes = None;
        match ty {
            GgmlType::Q4_K => match kernels.batch.q4_k_repacked {
                // ggml_repack_get_optimal_repack_type: rows a multiple of 8.
                Some((gemv, gemm)) if rows.is_multiple_of(8) => {
                    dot = gemv;
                    batch.grouped = Some(gemm);
                    lanes = LanePlan::new(lane.q4_k_gemm, LANE_MIN_TOKENS, true);
                }
                _ => {
                    batch.from = kernels.batch.q4_k_tiled.map(|d| (BatchDots::TILED_MIN, d));
                    lanes = LanePlan::new(lane.q4_k_tiled, BatchDots::TILED_MIN, false);
                }
            },
            GgmlType::Q6_K | GgmlType::Q5_K | GgmlType::Q3_K => {
                let (dot, tile) = match ty {
                    GgmlType::Q6_K => (kernels.batch.q6_k_tiled, lane.q6_k_tiled),
                    GgmlType::Q5_K => (kernels.batch.q5_k_tiled, lane.q5_k_tiled),
                    _ => (kernels.batch.q3_k_tiled, lane.q3_k_tiled),
                };
                batch.from = dot.map(|d| (BatchDots::TILED_MIN, d));
                lanes = LanePlan::new(tile, BatchDots::TILED_MIN, false);
            }
            // tinyBLAS_Q0_AVX, the order of the 4×4 tiles and the row dots.
            GgmlType::Q8_0 => lanes = LanePlan::new(lane.q8_0, LANE_MIN_TOKENS, false),
            GgmlType::Q5_0 => lanes = LanePlan::new(lane.q5_0, LANE_MIN_TOKENS, false),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let (dot, k) = match ty {
                    GgmlType::F32 => (kernels.batch.f32_tinyblas, BatchDots::TINYBLAS_K),
                    GgmlType::F16 => (kernels.batch.f16_tinyblas, BatchDots::TINYBLAS_K),
                    _ => (kernels.batch.bf16_tinyblas, 2 * BatchDots::TINYBLAS_K),
                };
                batch.from = dot
                    .filter(|_| cols.is_multiple_of(k))
                    .map(|d| (BatchDots::TINYBLAS_MIN, d));
            }
            _ => {}
        }
        let tile = kernels.tiles.get(ty);
        let dot4 = kernels
            .batch
            .four_tokens
            .iter()
            .flatten()
            .find(|(one, _)| std::ptr::fn_addr_eq(*one, dot))
            .map(|&(_, four)| four);
        let dot_rows = kernels
            .batch
            .rows
            .iter()
            .flatten()
            .find(|(one, _)| std::ptr::fn_addr_eq(*one, dot))
            .map(|&(_, rows)| rows);
        let own_order = kernels
            .batch
            .singles_tiles
            .iter()
            .flatten()
            .find(|(one, ..)| std::ptr::fn_addr_eq(*one, dot));
        let (singles_tile, singles_prepare) = match (tile, own_order) {
            (Some(t), _) if t.prepare.is_some() && t.row.is_some() => (Some((t, TILE)), None),
            (_, Some(&(one, dot, prepare))) => {
                let tile = Tile {
                    dot,
                    prepare: None,
                    row: None,
                    same_as: Some(one),
                };
                (Some((tile, TILE)), prepare)
            }
            // The AVX2 tiles (in the row dot's order) have 16 registers: one
            // row by four tokens keeps their accumulators in them.
            (Some(t), None) if t.same_as.is_some_and(|one| std::ptr::fn_addr_eq(one, dot)) => {
                (Some((t, 1)), None)
            }
            _ => (None, None),
        };
        Self {
            ty,
            rows,
            cols,
            data,
            row_bytes,
            dot,
            batch,
            tile,
            singles_tile,
            singles_prepare,
            dot4,
            dot_rows,
            // (No columns, no groups: the row dots give the zeros.)
            lanes: lanes.filter(|_| cols > 0),
            quantize: vec_dot_type(ty).and_then(|a| {
                kernels
                    .quantizers
                    .get(a)
                    .or_else(|| super::activations::scalar_quantizer(a))
            }),
            interleaved: None,
        }
    }

    /// These weights with their row-interleaved copy (made by
    /// [`super::interleaved`] from this matrix's bytes), which the variant's
    /// interleaved kernel then reads for every token.
    pub fn interleaved(mut self, bytes: &'a [u8], kernels: &Kernels) -> Result<Self, KernelError> {
        let shape = |problem: String| KernelError::Shape {
            name: format!("{self:?}"),
            problem,
        };
        let Some(dot) = kernels.interleaved.get(self.ty) else {
            return Err(shape(
                "this kernel variant reads no interleaved weights of its type".into(),
            ));
        };
        let want = interleaved_len(self.ty, self.rows, self.cols);
        if !can_interleave(self.ty, self.rows) || bytes.len() != want {
            return Err(shape(format!(
                "interleaved copy of {} bytes, expected {want}",
                bytes.len(),
            )));
        }
        self.interleaved = Some((dot, bytes));
        Ok(self)
    }

    fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// The kernels ggml would pick for this weight matrix besides its plain row
/// dot, so each token's dot product has llama.cpp's f32 order.
#[derive(Clone, Copy, Default)]
struct BatchPlan {
    /// Batches of at least `.0` tokens use `.1` for every token.
    from: Option<(usize, VecDot)>,
    /// Tokens in whole groups of four (`t < n − n % 4`) use this.
    grouped: Option<VecDot>,
}

impl BatchPlan {
    /// The dot product for token `t` of `n` when the plan says it is not
    /// the plain one.
    #[inline]
    fn special(&self, t: usize, n: usize) -> Option<VecDot> {
        match (self.from, self.grouped) {
            (Some((min, dot)), _) if n >= min => Some(dot),
            (_, Some(dot)) if t < n - n % 4 => Some(dot),
            _ => None,
        }
    }
}

/// Which tokens of a batch run a weight matrix's lane tile: those the
/// batch's own kernel choice ([`BatchPlan`]) gives the order the tile keeps.
#[derive(Clone, Copy)]
struct LanePlan {
    tile: LaneTile,
    /// Batches of fewer tokens run the other kernels.
    min_tokens: usize,
    /// Only tokens in whole groups of four (ggml's repacked Q4_K gemm; the
    /// last `n % 4` take the gemv).
    groups_of_4: bool,
}

impl LanePlan {
    fn new(tile: Option<LaneTile>, min_tokens: usize, groups_of_4: bool) -> Option<Self> {
        Some(Self {
            tile: tile?,
            min_tokens: min_tokens.max(LANE_MIN_TOKENS),
            groups_of_4,
        })
    }

    /// How many leading tokens of a batch (segment) of `n` run the lane tile.
    fn tokens(&self, n: usize) -> usize {
        match n {
            n if n < self.min_tokens => 0,
            n if self.groups_of_4 => n - n % 4,
            n => n,
        }
    }
}

/// Reusable buffers of [`matmul_segments`].
#[derive(Debug, Default)]
pub struct Scratch {
    activations: Vec<u8>,
    row: Vec<u8>,
    /// Activations in a tile kernel's own layout.
    prepared: Vec<u8>,
    /// The tokens that run row dots, each with its kernel.
    row_tokens: Vec<RowToken>,
    /// The segments that run the tile kernel: (first token, tokens).
    tiled: Vec<(usize, usize)>,
    /// One-token segments that share a tile kernel (see
    /// `Weights::singles_tile`) or the four-token dot: their tokens, and
    /// their activations side by side in the tile's layout.
    singles: Vec<usize>,
    single_activations: Vec<u8>,
    /// The segments' tokens that run the lane tile: (first token, tokens,
    /// offset of their groups in `lane_activations`).
    laned: Vec<(usize, usize, usize)>,
    /// Those tokens' activations in the lane tile's groups.
    lane_activations: Vec<u8>,
}

/// One token of [`matmul_segments`] computed by per-row dot products.
#[derive(Debug, Clone, Copy)]
struct RowToken {
    index: usize,
    dot: VecDot,
    /// `dot` over [`ROWS`] rows per call, where the variant has it.
    rows: Option<VecDotRows>,
    /// Reads the tile's prepared activations rather than the quantized ones.
    prepared: bool,
}

/// A raw output pointer that chunks write to at disjoint indices.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every chunk writes a disjoint set of indices (its own rows), and the
// pool's `run` returns only after all chunks are done, so no two threads ever
// touch the same element and the slice outlives every write.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// A method (not a field access) so closures capture the whole `Out`,
    /// which is `Sync`, rather than its raw pointer field, which is not.
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// From this many tokens a batch's activations are quantized on the pool.
const PARALLEL_QUANTIZE_TOKENS: usize = 16;

/// The rows of `xs` (`cols` each) quantized by `quantize` (`act_bytes` each)
/// into `out`, the rows split over the pool: a prefill quantizes every
/// matrix's input, 512 tokens × up to 8192 values, which one thread alone
/// makes a visible serial step.
fn quantize_on_pool(
    pool: &ThreadPool,
    quantize: super::dispatch::Quantize,
    cols: usize,
    xs: &[f32],
    act_bytes: usize,
    out: &mut Vec<u8>,
) {
    let n_tokens = xs.len() / cols;
    out.resize(n_tokens * act_bytes, 0);
    let per_part = n_tokens.div_ceil(2 * pool.threads());
    let parts: Vec<std::sync::Mutex<(&[f32], &mut [u8])>> = xs
        .chunks(per_part * cols)
        .zip(out.chunks_mut(per_part * act_bytes))
        .map(std::sync::Mutex::new)
        .collect();
    pool.run(parts.len(), &|i| {
        let mut part = parts[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (xs, out) = &mut *part;
        let mut quantized = Vec::with_capacity(out.len());
        for x in xs.chunks_exact(cols) {
            quantize(x, &mut quantized);
        }
        out.copy_from_slice(&quantized);
    });
}

/// Below this much work (weight bytes × tokens) waking the other threads costs
/// more than it saves: one chunk, run on the calling thread.
const MIN_PARALLEL_BYTES: usize = 192 * 1024;

/// Rows per chunk of `n_tokens`' work over `rows` rows: enough chunks for
/// balance (~8 per thread), big enough to amortize the claim.
///
/// Where a chunk's rows are swept once per tile of tokens (prefill), a
/// chunk stays within 256 rows so that its weights are still in cache for
/// the next tile. Where they are read once for all the tokens (a decode
/// step: at most one tile of tokens), a chunk may be longer: each chunk
/// starts a new stream from memory (its prefetches ahead begin cold and
/// its last ones land in a neighbour's rows), and the Gemma output
/// projection (Q8_0, 640 × 262144, 174 KB a 256-row chunk) streamed 5–10%
/// faster for one to four tokens in 2048-row chunks (two threads, Zen 3,
/// twelve alternating passes over copies cycled through 512 MiB). The 1B
/// model's Q4_K gate/up and Q6_K output matrices (295 and 430 KB chunks)
/// were no different either way.
pub(super) fn rows_per_chunk(
    rows: usize,
    threads: usize,
    work_bytes: usize,
    n_tokens: usize,
) -> usize {
    if work_bytes < MIN_PARALLEL_BYTES {
        return rows.max(1);
    }
    let most = if n_tokens <= TILE { 2048 } else { 256 };
    rows.div_ceil(threads * 8).clamp(1, most)
}

/// `out[r] = w.row(r) · x` for every row.
pub fn matvec(
    pool: &ThreadPool,
    w: &Weights<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul(pool, w, x, 1, out, scratch)
}

/// `out[t * rows + r] = w.row(r) · xs[t * cols ..][..cols]` for `n_tokens` tokens.
pub fn matmul(
    pool: &ThreadPool,
    w: &Weights<'_>,
    xs: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_segments(pool, w, xs, &[n_tokens], out, scratch)
}

/// [`matmul`] over consecutive segments of tokens (`segments[i]` tokens
/// each, e.g. the sequences of a continuous batch), each computed exactly as
/// `matmul` would compute it alone: a token's kernel depends only on its
/// segment (its size and the token's place in it), never on the others, so
/// every result is bit for bit the one of the segment's own call. The
/// weights are still read once for all of them: each chunk of rows serves
/// every segment while it is in cache.
pub fn matmul_segments(
    pool: &ThreadPool,
    w: &Weights<'_>,
    xs: &[f32],
    segments: &[usize],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    let n_tokens: usize = segments.iter().sum();
    let shape = |problem: String| KernelError::Shape {
        name: format!("{w:?}"),
        problem,
    };
    if xs.len() != n_tokens * w.cols || out.len() != n_tokens * w.rows {
        return Err(shape(format!(
            "{n_tokens} tokens need {} inputs and {} outputs, got {} and {}",
            n_tokens * w.cols,
            n_tokens * w.rows,
            xs.len(),
            out.len()
        )));
    }
    if n_tokens == 0 {
        return Ok(());
    }
    let act_type = vec_dot_type(w.ty).expect("Weights::new checked the type");
    let act_bytes = act_type
        .bytes_for(w.cols as u64)
        .expect("cols fit the activation blocks") as usize;
    let timed = crate::profile::scope(|| format!("quantize activations ({act_type})"));
    scratch.activations.clear();
    match w.quantize {
        Some(quantize) if n_tokens >= PARALLEL_QUANTIZE_TOKENS && pool.threads() > 1 => {
            quantize_on_pool(
                pool,
                quantize,
                w.cols,
                xs,
                act_bytes,
                &mut scratch.activations,
            );
        }
        Some(quantize) => {
            for x in xs.chunks_exact(w.cols) {
                quantize(x, &mut scratch.activations);
            }
        }
        None => {
            for x in xs.chunks_exact(w.cols) {
                quantize_activations(w.ty, x, &mut scratch.row)?;
                scratch.activations.extend_from_slice(&scratch.row);
            }
        }
    }
    drop(timed);
    if let Some((kernel, data)) = w.interleaved {
        run_interleaved(pool, w, kernel, data, segments, out, scratch);
        return Ok(());
    }

    // Per segment: batches of a tile or more through the tile kernel; fewer
    // tokens one row at a time, through the tile's row kernel on its prepared
    // activations where it has one, else the plain dot (or the one ggml
    // picks for this token of this batch size).
    // Segments of enough tokens for the lane tile run it (all their tokens,
    // or those its plan gives it, the rest by row dots).
    let tile = w.tile;
    let row_on_prepared = tile.and_then(|t| Some((t.prepare?, t.row?)));
    scratch.row_tokens.clear();
    scratch.tiled.clear();
    scratch.singles.clear();
    scratch.laned.clear();
    let plain = |index: usize| RowToken {
        index,
        dot: w.dot,
        rows: w.dot_rows,
        prepared: false,
    };
    let row_token = |first: usize, t: usize, n: usize| match (row_on_prepared, tile) {
        (Some((_, row)), _) => RowToken {
            index: first + t,
            dot: row,
            rows: None,
            prepared: true,
        },
        (None, Some(tile)) if tile.row.is_some() => plain(first + t),
        _ => match w.batch.special(t, n) {
            Some(dot) => RowToken {
                index: first + t,
                dot,
                rows: None,
                prepared: false,
            },
            None => plain(first + t),
        },
    };
    let mut first = 0;
    for &n in segments {
        let laned = w.lanes.map_or(0, |p| p.tokens(n));
        if laned > 0 {
            scratch.laned.push((first, laned, 0));
            scratch
                .row_tokens
                .extend((laned..n).map(|t| row_token(first, t, n)));
        } else if tile.is_some() && n >= TILE {
            scratch.tiled.push((first, n));
        } else if n == 1 && (w.singles_tile.is_some() || (w.dot4.is_some() && tile.is_none())) {
            scratch.singles.push(first);
        } else {
            scratch
                .row_tokens
                .extend((0..n).map(|t| row_token(first, t, n)));
        }
        first += n;
    }
    // Single tokens share the tile in fours, twos and threes (or the
    // four-token dot in fours); the rest run their row dots, except where
    // the tile has a layout of its own, which serves one token too.
    let ragged = match scratch.singles.len() % TILE {
        _ if w.singles_prepare.is_some() => 0,
        2 | 3 if w.singles_tile.is_some() => 0,
        // Three go through the four-token dot, the last one twice: the
        // block decoded once for them costs less than three row dots.
        3 if w.dot4.is_some() => 0,
        ragged => ragged,
    };
    for index in scratch.singles.drain(scratch.singles.len() - ragged..) {
        scratch.row_tokens.push(match row_on_prepared {
            Some((_, row)) => RowToken {
                index,
                dot: row,
                rows: None,
                prepared: true,
            },
            None => plain(index),
        });
    }
    let prepare = tile.and_then(|t| t.prepare);
    let singles_tile = w.singles_tile.filter(|_| !scratch.singles.is_empty());
    // A singles tile with a layout of its own is the batch tile itself.
    let singles_prepared = singles_tile.is_some_and(|(t, _)| t.prepare.is_some());
    let needs_prepared = !scratch.tiled.is_empty()
        || singles_prepared
        || scratch.row_tokens.iter().any(|t| t.prepared);
    scratch.prepared.clear();
    if let (Some(prepare), true) = (prepare, needs_prepared) {
        let _timed = crate::profile::scope(|| "prepare tile activations".into());
        for x in scratch.activations.chunks_exact(act_bytes) {
            prepare(w.cols, x, &mut scratch.prepared);
        }
    }
    let acts = Activations {
        quantized: &scratch.activations,
        quantized_bytes: act_bytes,
        prepared: &scratch.prepared,
        prepared_bytes: scratch.prepared.len() / n_tokens,
    };
    scratch.lane_activations.clear();
    let mut group_bytes = 0;
    if let Some(plan) = w.lanes.filter(|_| !scratch.laned.is_empty()) {
        let _timed = crate::profile::scope(|| "prepare lane activations".into());
        for (t0, n, offset) in &mut scratch.laned {
            *offset = scratch.lane_activations.len();
            for g in (*t0..*t0 + *n).step_by(LANES) {
                let tokens = LANES.min(*t0 + *n - g);
                let x = &scratch.activations[g * act_bytes..(g + tokens) * act_bytes];
                let before = scratch.lane_activations.len();
                (plan.tile.prepare)(w.cols, x, act_bytes, tokens, &mut scratch.lane_activations);
                group_bytes = scratch.lane_activations.len() - before;
            }
        }
    }
    scratch.single_activations.clear();
    let timed = w
        .singles_prepare
        .filter(|_| !scratch.singles.is_empty())
        .map(|_| crate::profile::scope(|| "prepare singles activations".into()));
    for &t in scratch.singles.iter().filter(|_| singles_tile.is_some()) {
        match w.singles_prepare {
            Some(prepare) => prepare(w.cols, acts.of(t, false), &mut scratch.single_activations),
            None => scratch
                .single_activations
                .extend_from_slice(acts.of(t, singles_prepared)),
        }
    }
    drop(timed);
    let single_bytes = scratch.single_activations.len() / scratch.singles.len().max(1);

    let chunk_rows = rows_per_chunk(w.rows, pool.threads(), w.data.len() * n_tokens, n_tokens)
        .next_multiple_of(TILE);
    let n_chunks = w.rows.div_ceil(chunk_rows);
    let dst = Out(out.as_mut_ptr());
    let (tiled, row_tokens) = (&scratch.tiled[..], &scratch.row_tokens[..]);
    let (singles, single_xs) = (&scratch.singles[..], &scratch.single_activations[..]);
    let (laned, lane_xs) = (&scratch.laned[..], &scratch.lane_activations[..]);
    pool.run(n_chunks, &|chunk| {
        let first = chunk * chunk_rows;
        let rows = first..(first + chunk_rows).min(w.rows);
        if let Some(plan) = w.lanes {
            for &(t0, n, offset) in laned {
                let groups = &lane_xs[offset..offset + n.div_ceil(LANES) * group_bytes];
                run_lanes(w, plan.tile, groups, group_bytes, n, rows.clone(), dst, t0);
            }
        }
        if let Some(tile) = tile {
            let (xs, x_bytes) = acts.all(tile.prepare.is_some());
            for &(t0, n) in tiled {
                let xs = &xs[t0 * x_bytes..(t0 + n) * x_bytes];
                let group = TileGroup {
                    xs,
                    x_bytes,
                    n_tokens: n,
                    row_step: TILE,
                };
                run_tiles(w, tile, group, rows.clone(), dst, |t| t0 + t);
            }
        }
        if let Some((tile, row_step)) = singles_tile {
            let group = TileGroup {
                xs: single_xs,
                x_bytes: single_bytes,
                n_tokens: singles.len(),
                row_step,
            };
            run_tiles(w, tile, group, rows.clone(), dst, |t| singles[t]);
        } else if let Some(dot4) = w.dot4 {
            for four in singles.chunks(4) {
                let xs = [0, 1, 2, 3].map(|i| acts.of(four[i.min(four.len() - 1)], false));
                for r in rows.clone() {
                    let out = dot4(w.cols, w.row(r), xs);
                    for (&token, v) in four.iter().zip(out) {
                        // SAFETY: as for the row tokens below.
                        unsafe { *dst.at(token * w.rows + r) = v };
                    }
                }
            }
        }
        // A few weight rows stay in L1 across a tile of tokens.
        let rb = w.row_bytes;
        for group in row_tokens.chunks(TOKEN_TILE) {
            for r0 in rows.clone().step_by(ROWS) {
                let nr = ROWS.min(rows.end - r0);
                for token in group {
                    let x = acts.of(token.index, token.prepared);
                    let out = |r: usize, v: f32| {
                        // SAFETY: index * rows + r < n_tokens * rows ==
                        // out.len(), and row r belongs to this chunk only
                        // (see `Out`).
                        unsafe { *dst.at(token.index * w.rows + r) = v };
                    };
                    match token.rows {
                        Some(four) if nr == ROWS => {
                            let v = four(w.cols, &w.data[r0 * rb..(r0 + ROWS) * rb], rb, x);
                            v.into_iter().enumerate().for_each(|(i, v)| out(r0 + i, v));
                        }
                        _ => (r0..r0 + nr).for_each(|r| out(r, (token.dot)(w.cols, w.row(r), x))),
                    }
                }
            }
        }
    });
    Ok(())
}

/// Every token of a [`matmul_segments`] call through the interleaved
/// kernels: the tokens of each segment's whole groups of four through the
/// kernel's `grouped` order where it has one (ggml's batch kernel), the
/// others through `dot` (a token's result then depends only on its place in
/// its own segment, see [`super::interleaved`]). The activations are
/// prepared once, in that order; then each chunk of row groups is swept by
/// tiles of tokens, so the chunk's weights stay in cache while every token
/// passes over them.
fn run_interleaved(
    pool: &ThreadPool,
    w: &Weights<'_>,
    kernel: GroupKernel,
    data: &[u8],
    segments: &[usize],
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let n_tokens: usize = segments.iter().sum();
    let act_bytes = scratch.activations.len() / n_tokens;
    // scratch.singles: the tokens in kernel order, the grouped ones first.
    let order = &mut scratch.singles;
    order.clear();
    let mut first = 0;
    for &n in segments {
        if kernel.grouped.is_some() {
            order.extend(first..first + n - n % 4);
        }
        first += n;
    }
    let n_grouped = order.len();
    first = 0;
    for &n in segments {
        let from = if kernel.grouped.is_some() {
            n - n % 4
        } else {
            0
        };
        order.extend(first + from..first + n);
        first += n;
    }
    scratch.prepared.clear();
    {
        let _timed = crate::profile::scope(|| "prepare interleaved activations".into());
        for &t in order.iter() {
            let x = &scratch.activations[t * act_bytes..(t + 1) * act_bytes];
            (kernel.prepare)(w.cols, x, &mut scratch.prepared);
        }
    }
    let (order, xs) = (&scratch.singles[..], &scratch.prepared[..]);
    let x_bytes = xs.len() / n_tokens;
    let parts = [
        (kernel.grouped.unwrap_or(kernel.dot), 0..n_grouped),
        (kernel.dot, n_grouped..n_tokens),
    ];
    let group_bytes = data.len() / (w.rows / GROUP_ROWS);
    let chunk_rows = rows_per_chunk(w.rows, pool.threads(), data.len() * n_tokens, n_tokens)
        .next_multiple_of(GROUP_ROWS);
    let n_chunks = w.rows.div_ceil(chunk_rows);
    let dst = Out(out.as_mut_ptr());
    pool.run(n_chunks, &|chunk| {
        let rows = chunk * chunk_rows..((chunk + 1) * chunk_rows).min(w.rows);
        let mut o = [[0f32; GROUP_ROWS]; GROUP_TOKENS];
        for (dot, tokens) in parts.clone() {
            for t0 in tokens.clone().step_by(GROUP_TOKENS) {
                let nt = GROUP_TOKENS.min(tokens.end - t0);
                let x = &xs[t0 * x_bytes..(t0 + nt) * x_bytes];
                // Group results `o[t][r]` of rows r0.. for tokens t0.. .
                let store = |r0: usize, o: &[[f32; GROUP_ROWS]]| {
                    for (t, o) in o.iter().enumerate().take(nt) {
                        // SAFETY: order[t0 + t] * rows + r0 + GROUP_ROWS <=
                        // n_tokens * rows == out.len(), and rows r0.. belong
                        // to this chunk only (see `Out`). One copy rather
                        // than a store per row: the output rows are cold,
                        // and sixteen scalar stores to them cost 3% of
                        // Gemma's prefill.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                o.as_ptr(),
                                dst.at(order[t0 + t] * w.rows + r0),
                                GROUP_ROWS,
                            )
                        };
                    }
                };
                let many = kernel
                    .many_groups
                    .filter(|_| std::ptr::fn_addr_eq(dot, kernel.dot));
                if let Some(many) = many {
                    let groups = &data[rows.start / GROUP_ROWS * group_bytes
                        ..rows.end.div_ceil(GROUP_ROWS) * group_bytes];
                    many(w.cols, groups, group_bytes, x, x_bytes, nt, &mut |g, o| {
                        store(rows.start + g * GROUP_ROWS, o)
                    });
                    continue;
                }
                for r0 in rows.clone().step_by(GROUP_ROWS) {
                    let group = &data[r0 / GROUP_ROWS * group_bytes..][..group_bytes];
                    dot(w.cols, group, x, x_bytes, nt, &mut o);
                    store(r0, &o);
                }
            }
        }
    });
}

/// The activations of every token of a [`matmul_segments`] call, quantized
/// and (where the tile kernel has its own layout) prepared.
#[derive(Clone, Copy)]
struct Activations<'a> {
    quantized: &'a [u8],
    quantized_bytes: usize,
    prepared: &'a [u8],
    prepared_bytes: usize,
}

impl<'a> Activations<'a> {
    /// Every token's activations (prepared or quantized) and the bytes of one.
    fn all(&self, prepared: bool) -> (&'a [u8], usize) {
        if prepared {
            (self.prepared, self.prepared_bytes)
        } else {
            (self.quantized, self.quantized_bytes)
        }
    }

    fn of(&self, token: usize, prepared: bool) -> &'a [u8] {
        let (all, bytes) = self.all(prepared);
        &all[token * bytes..(token + 1) * bytes]
    }
}

/// Tokens that go through a tile kernel together: their activations side by
/// side (`x_bytes` each), and how many rows each call takes (up to `TILE`).
struct TileGroup<'a> {
    xs: &'a [u8],
    x_bytes: usize,
    n_tokens: usize,
    row_step: usize,
}

/// One chunk of rows (starting at a multiple of the tile) of one group of
/// tokens through a tile kernel, swept tile of tokens by tile of tokens, so
/// the chunk's weights stay in cache while every token passes over them.
/// Activation row `t` of the group is output token `out_token(t)`.
fn run_tiles(
    w: &Weights<'_>,
    tile: Tile,
    group: TileGroup<'_>,
    rows: std::ops::Range<usize>,
    dst: Out,
    out_token: impl Fn(usize) -> usize,
) {
    let TileGroup {
        xs,
        x_bytes,
        n_tokens,
        row_step,
    } = group;
    let rb = w.row_bytes;
    let mut o = [0f32; TILE * TILE];
    for t0 in (0..n_tokens).step_by(TILE) {
        let nt = TILE.min(n_tokens - t0);
        let x = &xs[t0 * x_bytes..(t0 + nt) * x_bytes];
        for r0 in rows.clone().step_by(row_step) {
            let nr = row_step.min(rows.end - r0);
            (tile.dot)(
                w.cols,
                &w.data[r0 * rb..(r0 + nr) * rb],
                rb,
                nr,
                x,
                x_bytes,
                nt,
                &mut o,
            );
            for t in 0..nt {
                let token = out_token(t0 + t);
                for r in 0..nr {
                    // SAFETY: token * rows + r0 + r < (all tokens of the
                    // call) * rows == out.len(), and rows r0.. belong to
                    // this chunk only.
                    unsafe { *dst.at(token * w.rows + r0 + r) = o[t * TILE + r] };
                }
            }
        }
    }
}

/// One chunk of rows of `n_tokens` consecutive tokens, the first output
/// token `t0`, through a lane tile: their groups of [`LANES`] prepared
/// (`group_bytes` each) in `groups`, taken group by group, so a group's
/// activations stay in cache while the chunk's rows pass over them.
#[allow(clippy::too_many_arguments)]
fn run_lanes(
    w: &Weights<'_>,
    tile: LaneTile,
    groups: &[u8],
    group_bytes: usize,
    n_tokens: usize,
    rows: std::ops::Range<usize>,
    dst: Out,
    t0: usize,
) {
    let rb = w.row_bytes;
    let mut o = [0f32; LANE_ROWS * LANES];
    for (g, x) in groups.chunks_exact(group_bytes).enumerate() {
        let first = g * LANES;
        let nt = LANES.min(n_tokens - first);
        for r0 in rows.clone().step_by(LANE_ROWS) {
            let nr = LANE_ROWS.min(rows.end - r0);
            (tile.dot)(w.cols, &w.data[r0 * rb..(r0 + nr) * rb], rb, nr, x, &mut o);
            for t in 0..nt {
                for r in 0..nr {
                    // SAFETY: (t0 + first + t) * rows + r0 + r < (all tokens
                    // of the call) * rows == out.len(), and rows r0.. belong
                    // to this chunk only.
                    unsafe { *dst.at((t0 + first + t) * w.rows + r0 + r) = o[r * LANES + t] };
                }
            }
        }
    }
}
