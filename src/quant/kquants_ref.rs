//! ggml's reference quantizers for the k-quant weight formats Q4_K, Q5_K
//! (`make_qkx2_quants`: scale and minimum by weighted least squares over a
//! small grid of candidate scales) and Q6_K (`make_qx_quants`: symmetric scale,
//! refined by x²-weighted least squares). These are what `llama-quantize`
//! runs without an importance matrix.
//!
//! Every sum is accumulated in f32 in ggml's order and every product is
//! written in ggml's operand order: the results are bit-identical to
//! `quantize_row_q{4,5,6}_K_ref` (ggml-base is compiled without FMA
//! contraction, so neither are we).

use super::QuantizeBlock;
use super::float::{F16Le, nearest_int};
use super::kquants::{BlockQ4K, BlockQ5K, BlockQ6K, QK_K, scale_min_k4};
use bytemuck::Zeroable;

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qkx2_quants` with `use_mad = false`: quantizes `x` to
/// `L[i]` in 0..=nmax so that `x ≈ scale · L − min`, trying
/// `nstep + 1` candidate scales `(nmax + rmin + rdelta·is) / (max − min)` and
/// keeping the one with the smallest weighted squared error. Returns
/// `(scale, min)` with `min ≥ 0` (the negated offset).
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let quant = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0_f32;
    for i in 0..n {
        l_out[i] = quant(iscale, x[i], min) as u8;
        let diff = scale * f32::from(l_out[i]) + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0_f32, 0.0_f32, 0.0_f32);
        for i in 0..n {
            let l = quant(iscale, x[i], min);
            laux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0_f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights:
/// the signed value of largest magnitude maps to −nmax, then 18 nearby scales
/// are tried and the one maximizing `(Σw·x·l)² / Σw·l²` (weights w = x²) wins.
/// `L[i]` gets `l + nmax` in 0..2·nmax; returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0.0_f32, 0.0_f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..x.len()].fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    // Σ w·x·l and Σ w·l² for one candidate scale, in ggml's operand order.
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0_f32, 0.0_f32);
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (out, &v) in l_out.iter_mut().zip(x) {
        *out = (quant(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (out, &v) in l_out.iter_mut().zip(x) {
                *out = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The 6-bit sub-block scales and mins of Q4_K/Q5_K, as
/// `quantize_row_q{4,5}_K_ref` packs them (see `scale_min_k4`).
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The shared body of `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref`:
/// per 32-weight sub-block a `make_qkx2_quants` fit with weights
/// `rms(x) + |x|`; the scales and mins quantized to 6 bits against their
/// maxima; then every weight re-quantized against the rounded scales.
/// Returns `(d, dmin, scales, L)` with `L[i]` in 0..=nmax.
fn quantize_k_asymmetric(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (F16Le, F16Le, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0_f32; 8];
    let mut mins = [0.0_f32; 8];
    let (mut max_scale, mut max_min) = (0.0_f32, 0.0_f32);
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let sum_x2 = xs.iter().fold(0.0_f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
        let lj = &mut l[32 * j..32 * j + 32];
        (scales[j], mins[j]) = make_qkx2_quants(nmax, xs, &weights, lj, rmin, 0.1, nstep);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // `uint8_t ls = nearest_int(...)` keeps the low byte, then caps at 63.
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = F16Le::from_f32(max_scale / 63.0);
    let dmin = F16Le::from_f32(max_min / 63.0);
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = d.to_f32() * f32::from(sc);
        if dj == 0.0 {
            continue; // keeps make_qkx2_quants' levels, as ggml does
        }
        let dm = dmin.to_f32() * f32::from(m);
        for (out, &v) in l[32 * j..].iter_mut().zip(xs) {
            *out = nearest_int((v + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

impl QuantizeBlock for BlockQ4K {
    /// `quantize_row_q4_K_ref`: `make_qkx2_quants(32, 15, …, -1.0, 0.1, 20)`.
    fn quantize(src: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_k_asymmetric(&src[..QK_K], 15, -1.0, 20);
        let mut qs = [0u8; 128];
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            for (i, byte) in q.iter_mut().enumerate() {
                *byte = l[64 * c + i] | (l[64 * c + i + 32] << 4);
            }
        }
        Self {
            d,
            dmin,
            scales,
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ5K {
    /// `quantize_row_q5_K_ref`: `make_qkx2_quants(32, 31, …, -0.5, 0.1, 15)`.
    fn quantize(src: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_k_asymmetric(&src[..QK_K], 31, -0.5, 15);
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for (i, byte) in q.iter_mut().enumerate() {
                let (mut l1, mut l2) = (l[64 * c + i], l[64 * c + i + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[i] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[i] |= m2;
                }
                *byte = l1 | (l2 << 4);
            }
        }
        Self {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ6K {
    /// `quantize_row_q6_K_ref`: `make_qx_quants(16, 32, …, rmse_type 1)` per
    /// sub-block, the sub-block scales quantized to i8 against the largest
    /// (which maps to −128), then every weight re-quantized.
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK_K];
        let mut l = [0i8; QK_K];
        let mut scales = [0.0_f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0_f32, 0.0_f32);
        for (ib, xs) in x.chunks_exact(16).enumerate() {
            scales[ib] = make_qx_quants(32, xs, &mut l[16 * ib..16 * ib + 16]);
            if scales[ib].abs() > max_abs_scale {
                max_abs_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        let mut block = Self::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            return block;
        }
        let iscale = -128.0 / max_scale;
        block.d = F16Le::from_f32(1.0 / iscale);
        for (s, &scale) in block.scales.iter_mut().zip(&scales) {
            // `MIN(127, nearest_int(...))` stored to an int8_t.
            *s = nearest_int(iscale * scale).min(127) as i8;
        }
        let d = block.d.to_f32();
        for (j, xs) in x.chunks_exact(16).enumerate() {
            let dj = d * f32::from(block.scales[j]);
            if dj == 0.0 {
                continue;
            }
            for (out, &v) in l[16 * j..].iter_mut().zip(xs) {
                *out = (nearest_int(v / dj).clamp(-32, 31) + 32) as i8;
            }
        }
        for (c, (ql, qh)) in block
            .ql
            .chunks_exact_mut(64)
            .zip(block.qh.chunks_exact_mut(32))
            .enumerate()
        {
            let lc = &l[128 * c..128 * c + 128];
            for i in 0..32 {
                let q = |k: usize| lc[i + 32 * k] as u8;
                ql[i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
                ql[i + 32] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
                qh[i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        block
    }
}
