//! The element-wise and per-row operations of a transformer block, written to
//! round exactly where ggml's CPU backend rounds (llama.cpp's logits are our
//! reference): sums of squares in f64, GELU through an f16 table, RoPE angles
//! by repeated f32 multiplication.

use super::config::{Activation, RopeConfig, RopeScaling, RopeStyle};
use crate::kernels::f32_blocks::expf_like_ggml;
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::sync::OnceLock;

/// `1 / rms(x)` as ggml computes it: squares summed in f64, the mean
/// rounded to f32.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// `out = x / rms(x) · w` (ggml `rms_norm` then `mul`).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let scale = inv_rms(x, eps);
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = (v * scale) * w;
    }
}

/// In-place [`rms_norm`] of every `weight.len()`-wide slice of `x` (per-head
/// QK-norm).
pub fn rms_norm_heads(x: &mut [f32], weight: &[f32], eps: f32) {
    for head in x.chunks_exact_mut(weight.len()) {
        let scale = inv_rms(head, eps);
        for (v, &w) in head.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
}

/// `out = (x − mean) / sd · w + b` (ggml `norm`, `mul`, `add`).
pub fn layer_norm(x: &[f32], weight: &[f32], bias: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / n) as f32;
    let mut sum2 = 0.0f64;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v - mean;
        sum2 += (*o * *o) as f64;
    }
    let variance = (sum2 / n) as f32;
    let scale = 1.0 / (variance + eps).sqrt();
    for (o, &w) in out.iter_mut().zip(weight) {
        *o = (*o * scale) * w;
    }
    if let Some(b) = bias {
        for (o, &b) in out.iter_mut().zip(b) {
            *o += b;
        }
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// `cap · tanh(x / cap)`, in ggml's order (scale, tanh, scale).
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = (*v * (1.0 / cap)).tanh() * cap;
    }
}

/// `x · sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `ggml_v_silu` (`vec.h`, AVX-512): `x / (1 + ggml_v_expf(0 − x))`.
#[inline(always)]
fn ggml_v_silu(x: f32) -> f32 {
    x / (1.0 + expf_like_ggml(0.0 - x))
}

/// `ggml_vec_swiglu_f32`: `silu(x)·g` through ggml's vector SiLU for whole
/// groups of 16 (from the start of `x`, a row or rows of a multiple of 16),
/// the scalar `ggml_silu_f32` (libm `expf`) for the rest.
fn swiglu(x: &mut [f32], g: &[f32]) {
    #[inline(always)]
    fn body(x: &mut [f32], g: &[f32]) {
        let full = x.len() - x.len() % 16;
        let (xv, xt) = x.split_at_mut(full);
        for (a, &b) in xv.iter_mut().zip(g) {
            *a = ggml_v_silu(*a) * b;
        }
        for (a, &b) in xt.iter_mut().zip(&g[full..]) {
            *a = silu(*a) * b;
        }
    }
    // AVX2 too, not FMA alone: the exp's exponent is integer arithmetic,
    // which without AVX2 runs in 128-bit halves.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2(x: &mut [f32], g: &[f32]) {
            body(x, g)
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { with_avx2(x, g) };
    }
    body(x, g)
}

/// ggml's GELU: the tanh approximation evaluated at the f16 rounding of `x`
/// and rounded to f16, through a 64 Ki-entry table; exactly 0 below −10 and
/// the identity above 10.
#[inline]
pub fn gelu(x: f32) -> f32 {
    gelu_of_rounded(x, f16::from_f32(x), gelu_table())
}

/// ggml's rules around its f16 table: saturate outside ±10, look up inside.
/// `rounded` is `x` rounded to f16, passed in so callers can round a slice
/// at a time.
#[inline]
fn gelu_of_rounded(x: f32, rounded: f16, table: &[f32; 1 << 16]) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[rounded.to_bits() as usize]
    }
}

fn gelu_table() -> &'static [f32; 1 << 16] {
    static TABLE: OnceLock<Box<[f32; 1 << 16]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const COEF_A: f32 = 0.044715;
        let mut table = Box::new([0.0f32; 1 << 16]);
        for (bits, out) in table.iter_mut().enumerate() {
            let x = f16::from_bits(bits as u16).to_f32();
            // ggml_gelu_f32 as GCC compiles it (`ggml_cpu_init`): the
            // inner `1 + A·x·x` is one FMA.
            let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * x.mul_add(COEF_A * x, 1.0)).tanh());
            *out = f16::from_f32(y).to_f32();
        }
        table
    })
}

impl Activation {
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => silu(x),
            Activation::GeluTanh => gelu(x),
        }
    }
}

/// `gate[i] = act(gate[i]) · up[i]` (ggml's fused `swiglu`/`geglu`).
pub fn gated(act: Activation, gate: &mut [f32], up: &[f32]) {
    if act == Activation::Silu {
        return swiglu(gate, up);
    }
    let table = gelu_table();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX2 and F16C (checked above).
        return unsafe { geglu_avx2(gate, up, table) };
    }
    // GELU as `gelu` computes it, but the f16 rounding of the inputs done a
    // slice at a time: `half` converts slices with F16C where the CPU has
    // it, where one value at a time it converts in software (measured:
    // 24.6 µs for Gemma's 2048 values a token, most of it conversion).
    let mut halves = [f16::ZERO; 64];
    for (g, u) in gate.chunks_mut(64).zip(up.chunks(64)) {
        let h = &mut halves[..g.len()];
        h.convert_from_f32_slice(g);
        for ((g, &u), &h) in g.iter_mut().zip(u).zip(h.iter()) {
            *g = gelu_of_rounded(*g, h, table) * u;
        }
    }
}

/// [`gated`] GELU eight values at a time: rounded to f16 in a register,
/// looked up with a gather, saturated by the same rules as
/// [`gelu_of_rounded`] (Gemma's 2048 values a token: 18 µs → 1 µs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn geglu_avx2(gate: &mut [f32], up: &[f32], table: &[f32; 1 << 16]) {
    use std::arch::x86_64::*;
    let n = gate.len().min(up.len());
    let full = n - n % 8;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 ≤ n for both slices; every index is an f16 bit
        // pattern, below the table's 2^16 entries.
        unsafe {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let bits = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            let looked_up = _mm256_i32gather_ps::<4>(table.as_ptr(), bits);
            let above = _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi);
            let below = _mm256_cmp_ps::<_CMP_LE_OQ>(x, lo);
            let y = _mm256_andnot_ps(below, _mm256_blendv_ps(looked_up, x, above));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(y, u));
        }
    }
    for (g, &u) in gate[full..n].iter_mut().zip(&up[full..n]) {
        *g = gelu_of_rounded(*g, f16::from_f32(*g), table) * u;
    }
}

/// The cos/sin table of one position for RoPE, as ggml's `rope_cache_init`
/// builds it: angles by repeated multiplication in f32, then YaRN's ramp.
pub struct RopeAngles {
    cos_sin: Vec<(f32, f32)>,
}

impl RopeAngles {
    pub fn new(n_rot: usize) -> Self {
        Self {
            cos_sin: vec![(1.0, 0.0); n_rot / 2],
        }
    }

    /// Fills the table for `pos` with `base` and `freq_scale`; `freq_factors`
    /// (llama3's `rope_freqs`) divide each pair's angle.
    pub fn compute(
        &mut self,
        rope: &RopeConfig,
        base: f32,
        freq_scale: f32,
        freq_factors: Option<&[f32]>,
        pos: usize,
    ) {
        let n_rot = rope.n_rot;
        let theta_scale = base.powf(-2.0 / n_rot as f32);
        let (ext_factor, corr) = match rope.scaling {
            RopeScaling::Yarn {
                ext_factor,
                beta_fast,
                beta_slow,
            } => (
                ext_factor,
                yarn_corr_dims(n_rot, rope.n_ctx_orig, base, beta_fast, beta_slow),
            ),
            _ => (0.0, [0.0, 0.0]),
        };
        let mut theta = pos as f32;
        for (pair, cs) in self.cos_sin.iter_mut().enumerate() {
            let ff = freq_factors.map_or(1.0, |f| f[pair]);
            let theta_extrap = theta / ff;
            let theta_interp = freq_scale * theta_extrap;
            let mut mscale = rope.attn_factor;
            let mut angle = theta_interp;
            if ext_factor != 0.0 {
                let ramp_mix = yarn_ramp(corr[0], corr[1], 2 * pair) * ext_factor;
                angle = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
                mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
            }
            *cs = (angle.cos() * mscale, angle.sin() * mscale);
            theta *= theta_scale;
        }
    }

    /// Rotates the first `n_rot` dimensions of one head in place, with the
    /// fused multiply-adds GCC makes of ggml's `rotate_pairs` (`ops.cpp`,
    /// `-ffp-contract=fast`, read from the reference build's code): for the
    /// NEOX pairing `x0·cos − (x1·sin)` and `x0·sin + (x1·cos)`, each with
    /// the parenthesized product rounded; for adjacent pairs (vectorized
    /// with `vfmaddsub`) the second is `x1·cos + (x0·sin)`.
    pub fn apply(&self, style: RopeStyle, head: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            #[target_feature(enable = "fma")]
            fn with_fma(angles: &RopeAngles, style: RopeStyle, head: &mut [f32]) {
                angles.apply_body(style, head)
            }
            // SAFETY: the CPU has FMA (checked above).
            return unsafe { with_fma(self, style, head) };
        }
        self.apply_body(style, head)
    }

    #[inline(always)]
    fn apply_body(&self, style: RopeStyle, head: &mut [f32]) {
        let half = self.cos_sin.len();
        for (i, &(cos, sin)) in self.cos_sin.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0.mul_add(cos, -(x1 * sin));
            head[b] = x0.mul_add(sin, x1 * cos);
        }
    }
}

fn yarn_corr_dim(n_dims: usize, n_ctx_orig: usize, n_rot: f32, base: f32) -> f32 {
    n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// The dimension range over which YaRN blends (ggml `rope_yarn_corr_dims`).
fn yarn_corr_dims(
    n_dims: usize,
    n_ctx_orig: usize,
    base: f32,
    beta_fast: f32,
    beta_slow: f32,
) -> [f32; 2] {
    let start = yarn_corr_dim(n_dims, n_ctx_orig, beta_fast, base).floor();
    let end = yarn_corr_dim(n_dims, n_ctx_orig, beta_slow, base).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

fn yarn_ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = ((i0 / 2) as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_is_weight() {
        let mut out = [0.0; 4];
        rms_norm(&[3.0; 4], &[1.0, 2.0, 3.0, 4.0], 0.0, &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut out = [0.0; 4];
        layer_norm(
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0; 4],
            Some(&[10.0; 4]),
            0.0,
            &mut out,
        );
        let sd = 1.25f32.sqrt();
        let want = [
            -1.5 / sd + 10.0,
            -0.5 / sd + 10.0,
            0.5 / sd + 10.0,
            1.5 / sd + 10.0,
        ];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn gated_gelu_equals_gelu_value_by_value() {
        let mut gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0273).collect();
        gate.extend([
            -10.0,
            10.0,
            -9.999,
            9.999,
            0.5,
            -0.0,
            65504.0,
            1e-8,
            f32::NAN,
        ]);
        // Every f16 value too, and the specials in vector lanes as well as
        // in the tail (the shifts).
        gate.extend((0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()));
        gate.extend([-10.0, 10.0, f32::NAN, -12.0, 11.0, 1e-8, -0.0]);
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 + i as f32 * 1e-3).collect();
        for shift in 0..8 {
            let (gate, up) = (&gate[shift..], &up[shift..]);
            let mut got = gate.to_vec();
            gated(Activation::GeluTanh, &mut got, up);
            for ((g, u), v) in gate.iter().zip(up).zip(&got) {
                let want = gelu(*g) * u;
                assert!(
                    want.to_bits() == v.to_bits() || want.is_nan() && v.is_nan(),
                    "{g}: {v} vs {want}"
                );
            }
        }
    }

    #[test]
    fn gelu_follows_ggml_table_rules() {
        assert_eq!(gelu(-10.0), 0.0);
        assert_eq!(gelu(12.5), 12.5);
        assert_eq!(gelu(0.0), 0.0);
        // 1.0 is exact in f16; gelu_tanh(1) = 0.841192, rounded to f16 = 0.84130859375.
        assert_eq!(gelu(1.0), 0.841_308_6);
        // Inputs are rounded to f16 first: these two share a table entry.
        assert_eq!(gelu(0.3), gelu(0.300_01));
    }

    #[test]
    fn rope_rotates_pairs_by_position_angle() {
        let rope = RopeConfig {
            style: RopeStyle::Normal,
            n_rot: 4,
            scaling: RopeScaling::None,
            n_ctx_orig: 0,
            attn_factor: 1.0,
        };
        let mut angles = RopeAngles::new(4);
        angles.compute(&rope, 10_000.0, 1.0, None, 3);
        let mut head = [1.0, 0.0, 1.0, 0.0, 7.0];
        angles.apply(RopeStyle::Normal, &mut head);
        // pair 0 angle 3, pair 1 angle 3·10000^(-1/2); dimension 4 untouched.
        assert!((head[0] - 3f32.cos()).abs() < 1e-6 && (head[1] - 3f32.sin()).abs() < 1e-6);
        assert!((head[2] - 0.03f32.cos()).abs() < 1e-6 && (head[3] - 0.03f32.sin()).abs() < 1e-6);
        assert_eq!(head[4], 7.0);
        let mut neox = [1.0, 1.0, 0.0, 0.0];
        angles.apply(RopeStyle::Neox, &mut neox);
        assert!((neox[0] - 3f32.cos()).abs() < 1e-6 && (neox[2] - 3f32.sin()).abs() < 1e-6);
    }
}
