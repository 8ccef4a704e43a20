//! Compute kernels over the quantized formats of [`crate::quant`]: dot
//! products per ISA chosen once at run time, matrix × vector and matrix ×
//! matrix, and the worker pool that spreads them over cores.

pub mod pool;

pub use pool::ThreadPool;
