//! Matrix × vector (decode) and matrix × matrix (prefill) over quantized
//! weights, spread over the worker pool by chunks of rows.
//!
//! Activations are quantized once per call into the weight type's activation
//! format; each chunk then runs row dot products. For a batch of tokens the rows
//! of a chunk are visited tile by tile of tokens, so a weight row is read from
//! memory once per tile and served from cache for the other tokens. Batches of
//! at least `tiles::TILE` tokens go through the type's tile kernel where the
//! variant has one (4 rows × 4 tokens per call, see `tiles`).

use super::dispatch::{BatchDots, Kernels, Quantize};
use super::pool::ThreadPool;
use super::quant_dots::{VecDot, quantize_activations, vec_dot_type};
use super::tiles::{TILE, Tile};
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
    /// The variant's own activation quantizer, if it has one.
    quantize: Option<Quantize>,
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
        let unsupported = || KernelError::UnsupportedType {
            name: name.into(),
            ty,
        };
        let dot = kernels.dots.get(ty).ok_or_else(unsupported)?;
        let shape = |problem: String| KernelError::Shape {
            name: name.into(),
            problem,
        };
        let row_bytes = ty.bytes_for(cols as u64).ok_or_else(|| {
            shape(format!(
                "row of {cols} is not a whole number of {ty} blocks"
            ))
        })? as usize;
        if row_bytes.checked_mul(rows) != Some(data.len()) {
            return Err(shape(format!(
                "{rows} rows of {cols} {ty} need {} bytes, found {}",
                row_bytes.saturating_mul(rows),
                data.len()
            )));
        }
        let mut dot = dot;
        let mut batch = BatchPlan::default();
        match ty {
            GgmlType::Q4_K => match kernels.batch.q4_k_repacked {
                // ggml_repack_get_optimal_repack_type: rows a multiple of 8.
                Some((gemv, gemm)) if rows.is_multiple_of(8) => {
                    dot = gemv;
                    batch.grouped = Some(gemm);
                }
                _ => batch.from = kernels.batch.q4_k_tiled.map(|d| (BatchDots::TILED_MIN, d)),
            },
            GgmlType::Q6_K | GgmlType::Q5_K | GgmlType::Q3_K => {
                let dot = match ty {
                    GgmlType::Q6_K => kernels.batch.q6_k_tiled,
                    GgmlType::Q5_K => kernels.batch.q5_k_tiled,
                    _ => kernels.batch.q3_k_tiled,
                };
                batch.from = dot.map(|d| (BatchDots::TILED_MIN, d))
            }
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
        Ok(Self {
            ty,
            rows,
            cols,
            data,
            row_bytes,
            dot,
            batch,
            tile: kernels.tiles.get(ty),
            quantize: vec_dot_type(ty).and_then(|a| kernels.quantizers.get(a)),
        })
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
    /// The dot product for token `t` of `n`, `plain` unless the plan says
    /// otherwise.
    #[inline]
    fn dot(&self, plain: VecDot, t: usize, n: usize) -> VecDot {
        match (self.from, self.grouped) {
            (Some((min, dot)), _) if n >= min => dot,
            (_, Some(dot)) if t < n - n % 4 => dot,
            _ => plain,
        }
    }
}

/// Reusable buffer for quantized activations.
#[derive(Debug, Default)]
pub struct Scratch {
    activations: Vec<u8>,
    row: Vec<u8>,
    /// Activations in a tile kernel's own layout.
    prepared: Vec<u8>,
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

/// Below this much work (weight bytes × tokens) waking the other threads costs
/// more than it saves: one chunk, run on the calling thread.
const MIN_PARALLEL_BYTES: usize = 192 * 1024;

fn rows_per_chunk(rows: usize, threads: usize, work_bytes: usize) -> usize {
    if work_bytes < MIN_PARALLEL_BYTES {
        return rows.max(1);
    }
    // Enough chunks for balance (~8 per thread), big enough to amortize the claim.
    rows.div_ceil(threads * 8).clamp(1, 256)
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
    let act_type = vec_dot_type(w.ty).expect("Weights::new checked the type");
    let act_bytes = act_type
        .bytes_for(w.cols as u64)
        .expect("cols fit the activation blocks") as usize;
    let timed = crate::profile::scope(|| format!("quantize activations ({act_type})"));
    scratch.activations.clear();
    for x in xs.chunks_exact(w.cols) {
        match w.quantize {
            Some(quantize) => quantize(x, &mut scratch.activations),
            None => {
                quantize_activations(w.ty, x, &mut scratch.row)?;
                scratch.activations.extend_from_slice(&scratch.row);
            }
        }
    }
    drop(timed);
    let acts = &scratch.activations;

    if let Some(tile) = w.tile.filter(|_| n_tokens >= TILE) {
        let (xs, x_bytes) = match tile.prepare {
            Some(prepare) => {
                let _timed = crate::profile::scope(|| "prepare tile activations".into());
                scratch.prepared.clear();
                for x in acts.chunks_exact(act_bytes) {
                    prepare(w.cols, x, &mut scratch.prepared);
                }
                (
                    &scratch.prepared[..],
                    scratch.prepared.len() / n_tokens.max(1),
                )
            }
            None => (&acts[..], act_bytes),
        };
        run_tiles(pool, w, tile, xs, x_bytes, n_tokens, out);
        return Ok(());
    }

    // Fewer tokens than a tile: one row at a time, through the tile's row
    // kernel on its prepared activations where it has one.
    let (acts, act_bytes, dot) = match w.tile.and_then(|t| Some((t.prepare?, t.row?))) {
        Some((prepare, row)) => {
            scratch.prepared.clear();
            for x in acts.chunks_exact(act_bytes) {
                prepare(w.cols, x, &mut scratch.prepared);
            }
            let bytes = scratch.prepared.len() / n_tokens.max(1);
            (&scratch.prepared[..], bytes, row)
        }
        None => (&acts[..], act_bytes, w.dot),
    };
    let batch = if w.tile.and_then(|t| t.row).is_some() {
        BatchPlan::default()
    } else {
        w.batch
    };
    let chunk_rows = rows_per_chunk(w.rows, pool.threads(), w.data.len() * n_tokens);
    let n_chunks = w.rows.div_ceil(chunk_rows);
    let dst = Out(out.as_mut_ptr());
    let (rows, cols) = (w.rows, w.cols);
    pool.run(n_chunks, &|chunk| {
        let first = chunk * chunk_rows;
        let last = (first + chunk_rows).min(rows);
        for t0 in (0..n_tokens).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(n_tokens);
            for r in first..last {
                let wr = w.row(r);
                for t in t0..t1 {
                    let dot = batch.dot(dot, t, n_tokens);
                    let x = &acts[t * act_bytes..(t + 1) * act_bytes];
                    // SAFETY: t * rows + r < n_tokens * rows == out.len(), and
                    // row r belongs to this chunk only (see `Out`).
                    unsafe { *dst.at(t * rows + r) = dot(cols, wr, x) };
                }
            }
        }
    });
    Ok(())
}

/// `matmul` through a tile kernel: each chunk of rows (a multiple of the
/// tile) is swept tile of tokens by tile of tokens, so the chunk's weights
/// stay in cache while every token passes over them.
fn run_tiles(
    pool: &ThreadPool,
    w: &Weights<'_>,
    tile: Tile,
    xs: &[u8],
    x_bytes: usize,
    n_tokens: usize,
    out: &mut [f32],
) {
    let chunk_rows =
        rows_per_chunk(w.rows, pool.threads(), w.data.len() * n_tokens).next_multiple_of(TILE);
    let n_chunks = w.rows.div_ceil(chunk_rows);
    let dst = Out(out.as_mut_ptr());
    let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes);
    pool.run(n_chunks, &|chunk| {
        let first = chunk * chunk_rows;
        let last = (first + chunk_rows).min(rows);
        let mut o = [0f32; TILE * TILE];
        for t0 in (0..n_tokens).step_by(TILE) {
            let nt = TILE.min(n_tokens - t0);
            let x = &xs[t0 * x_bytes..(t0 + nt) * x_bytes];
            for r0 in (first..last).step_by(TILE) {
                let nr = TILE.min(last - r0);
                (tile.dot)(
                    cols,
                    &w.data[r0 * rb..(r0 + nr) * rb],
                    rb,
                    nr,
                    x,
                    x_bytes,
                    nt,
                    &mut o,
                );
                for t in 0..nt {
                    for r in 0..nr {
                        // SAFETY: (t0 + t) * rows + r0 + r < n_tokens * rows ==
                        // out.len(), and rows r0.. belong to this chunk only.
                        unsafe { *dst.at((t0 + t) * rows + r0 + r) = o[t * TILE + r] };
                    }
                }
            }
        }
    });
}
