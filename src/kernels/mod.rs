//! Compute kernels over the quantized formats of [`crate::quant`]: dot
//! products per ISA chosen once at run time, matrix × vector and matrix ×
//! matrix, and the worker pool that spreads them over cores.
//!
//! Each ISA lives in its own module beside `scalar`, the reference that defines
//! what every kernel computes; `dispatch` picks one table of function pointers.

mod dispatch;
pub mod pool;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

pub use dispatch::{Kernels, Simd, SimdError, kernels, kernels_checked};
pub use pool::ThreadPool;

#[cfg(test)]
mod tests;
