//! Compute kernels over the quantized formats of [`crate::quant`]: dot
//! products per ISA chosen once at run time, matrix × vector and matrix ×
//! matrix, and the worker pool that spreads them over cores.
//!
//! Each ISA lives in its own modules beside the scalar reference that defines
//! what every kernel computes; `dispatch` picks one table of function pointers:
//!
//! - `quant_dots`: the table type, `vec_dot_type`, and the dequantizing
//!   reference that defines every quantized dot product;
//! - `scalar*`: ggml's integer formulation, plain Rust (every target);
//! - `x86_avx2*`, `x86_avx512*`, `aarch64_neon*`: SIMD versions, split by
//!   family (`*_legacy`: the 32-element formats, IQ4_NL and MXFP4; `*_kquants`:
//!   the 256-element K-quants and IQ4_XS);
//! - `tiles`: the shapes of the tile kernels (several rows × tokens per
//!   call) that matrix × matrix uses; `x86_avx512_lanes` (and, for Q5_0
//!   and the K-quants, `x86_avx2_lanes`): the lane tiles, in the f32
//!   orders of ggml's batch kernels;
//! - `interleaved`: weights rearranged at load so one register holds
//!   sixteen rows (Q4_0, Q4_K; and Q5_0 on AVX2, to decode cheaply), and
//!   the kernels that read them (`x86_avx512_interleaved`,
//!   `x86_avx2_interleaved`);
//! - `weight_buffer`: memory for those copies, in huge pages;
//! - `matmul`: matrix × vector and matrix × matrix over the pool (`pool`).

#[cfg(target_arch = "aarch64")]
mod aarch64_neon;
pub(crate) mod activations;
mod dispatch;
pub mod f32_blocks;
pub mod interleaved;
mod matmul;
pub mod pool;
mod quant_dots;
mod scalar;
mod scalar_kquants;
mod scalar_legacy;
mod tiles;
pub mod weight_buffer;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_interleaved;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_kquants;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_lanes;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_legacy;
#[cfg(target_arch = "x86_64")]
mod x86_avx2_quantize;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_interleaved;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_kquants;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_lanes;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_legacy;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_quantize;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_rows;
#[cfg(target_arch = "x86_64")]
mod x86_avx512_tiles;

pub use dispatch::{
    ActQuantizers, BatchDots, BatchLanes, Kernels, Order, Quantize, Simd, SimdError, kernels,
    kernels_checked,
};
pub use matmul::{KernelError, Scratch, Weights, matmul, matmul_segments, matvec};
pub use pool::ThreadPool;
pub use quant_dots::{
    QuantDots, ROWS, VecDot, VecDot4, VecDotRows, quantize_activations, vec_dot_type,
};
pub use tiles::{
    LANE_MIN_TOKENS, LANE_ROWS, LANES, LaneDot, LaneTile, Prepare, PrepareLanes, QuantTiles,
    RowDot, TILE, Tile, TileDot,
};

#[cfg(test)]
mod test_rng;
#[cfg(test)]
mod tests;
