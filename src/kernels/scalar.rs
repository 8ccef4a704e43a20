//! The scalar reference: what every SIMD kernel must compute. Plain loops, no
//! architecture assumptions, always compiled.

use half::{bf16, f16};

pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// ggml's `ggml_vec_dot_f16`: both sides f16, products summed in f32.
pub(super) fn dot_f16(w: &[f16], x: &[f16]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a.to_f32() * b.to_f32()).sum()
}

/// ggml's `ggml_vec_dot_bf16`: both sides bf16, products summed in f32.
pub(super) fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a.to_f32() * b.to_f32()).sum()
}
