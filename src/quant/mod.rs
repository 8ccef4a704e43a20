//! PLACEHOLDER owned by the quant helper: block formats and kernels.
