//! NEON kernels (every aarch64 CPU: Apple Silicon, Graviton, Ampere, phones),
//! with the quantized dot products in two flavours, chosen once in [`install`]:
//!
//! - [`Sdot`]: the dot-product extension (`sdot`, FEAT_DotProd: Apple M1 on,
//!   Neoverse, Cortex-A55/A76 on), four `i8·i8` products summed per `i32` lane
//!   in one instruction;
//! - [`Mull`]: plain ARMv8.0 NEON (Cortex-A53/A72, Raspberry Pi 3/4):
//!   `smull`/`smull2` to `i16`, then `sadalp` pairwise into the `i32` lanes.
//!
//! Both give the same exact `i32` sums; the kernels reduce whole vectors only,
//! so which lane a product lands in does not matter.
//!
//! Two instructions come through `asm!` because their intrinsics are unstable
//! (Rust 1.95/1.96): `sdot` (`vdotq_s32`, feature `stdarch_neon_dotprod`) and
//! `fcvtl`/`fcvtl2`/`fcvt` for f16 → f32 (the `float16x4_t` types). Both
//! conversions are base ARMv8.0 AdvSIMD/FP (no FEAT_FP16 needed) and exact,
//! including subnormals, infinities and NaNs, so the hardware does in one
//! instruction what bit manipulation would take a dozen for.
//!
//! Safety: NEON is part of every aarch64 target's baseline, so the NEON
//! intrinsics are callable anywhere; the `#[target_feature]` inner functions
//! document it. `dotprod` is not baseline: the `*_sdot` kernels, the only code
//! that executes `sdot`, are installed by [`install`] only after
//! `is_aarch64_feature_detected!("dotprod")`, which is the safety argument of
//! every `unsafe` call of them.

#[path = "aarch64_neon_kquants.rs"]
mod kquants;
#[path = "aarch64_neon_legacy.rs"]
mod legacy;

use super::dispatch::Kernels;
use half::{bf16, f16};
use std::arch::aarch64::*;
use std::arch::asm;

/// Installs this module's kernels into the table: the float dots, then the
/// quantized dots in the flavour this CPU runs.
pub(super) fn install(k: &mut Kernels) {
    k.dot_f32 = dot_f32;
    k.dot_f16 = dot_f16;
    k.dot_bf16 = dot_bf16;
    k.dots.f32 = dot_f32_bytes;
    k.dots.f16 = dot_f16_bytes;
    k.dots.bf16 = dot_bf16_bytes;
    let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    legacy::install(&mut k.dots, dotprod);
    kquants::install(&mut k.dots, dotprod);
}

// ---------------------------------------------------------------------------
// Integer dot products of 16 signed bytes.

/// `acc + a·b` over 16 signed bytes, four products per `i32` lane (which four
/// is up to the implementation: callers only ever sum whole vectors).
pub(super) trait I8Dot {
    fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// The dot-product extension. Code generic over [`I8Dot`] and instantiated
/// with `Sdot` executes `sdot`, so it must only run where `dotprod` was
/// detected: only the `*_sdot` kernels do, and [`install`] checks.
pub(super) struct Sdot;

/// Plain NEON: widening multiplies, then pairwise accumulation. Every
/// product of two `i8` fits an `i16` (at most 128² = 16384), and `sadalp`
/// adds pairs of them straight into `i32`, so nothing can overflow.
pub(super) struct Mull;

impl I8Dot for Sdot {
    #[inline(always)]
    fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: register-only instruction; reached only from kernels that
        // `install` chose after detecting dotprod (see `Sdot`). The directive
        // lets the assembler accept `sdot` whatever the module's features.
        unsafe {
            asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }
}

impl I8Dot for Mull {
    #[inline(always)]
    fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is baseline on aarch64 (a trait method cannot carry
        // `#[target_feature]`; it inlines into the NEON kernels).
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

/// Defines the two flavours of a quantized dot product from a body generic
/// over [`I8Dot`]: `$mull` (plain NEON) and `$sdot` (dot-product extension).
macro_rules! flavours {
    ($body:ident => $mull:ident, $sdot:ident) => {
        pub(super) fn $mull(n: usize, w: &[u8], x: &[u8]) -> f32 {
            #[target_feature(enable = "neon")]
            fn inner(n: usize, w: &[u8], x: &[u8]) -> f32 {
                $body::<super::Mull>(n, w, x)
            }
            // SAFETY: NEON is baseline on aarch64.
            unsafe { inner(n, w, x) }
        }

        pub(super) fn $sdot(n: usize, w: &[u8], x: &[u8]) -> f32 {
            #[target_feature(enable = "neon,dotprod")]
            fn inner(n: usize, w: &[u8], x: &[u8]) -> f32 {
                $body::<super::Sdot>(n, w, x)
            }
            // SAFETY: installed only after `install` detected dotprod.
            unsafe { inner(n, w, x) }
        }
    };
}
pub(super) use flavours;

/// Loads 16 bytes from `b[at..at + 16]` (bounds-checked).
#[inline(always)]
pub(super) fn load_u8(b: &[u8], at: usize) -> uint8x16_t {
    let s: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    // SAFETY: `s` is 16 readable bytes; `vld1q_u8` has no alignment needs.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// Loads 16 signed bytes from `b[at..at + 16]` (bounds-checked).
#[inline(always)]
pub(super) fn load_i8(b: &[i8], at: usize) -> int8x16_t {
    let s: &[i8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    // SAFETY: `s` is 16 readable bytes; `vld1q_s8` has no alignment needs.
    unsafe { vld1q_s8(s.as_ptr()) }
}

/// The f32 value of an IEEE half given as its bits (`GGML_FP16_TO_FP32`).
#[inline(always)]
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: register-only, base ARMv8.0 FP (half → single is not FEAT_FP16).
    unsafe {
        asm!(
            "fcvt {o:s}, {i:h}",
            i = in(vreg) bits,
            o = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Four halves (as bits) widened to f32, exactly.
#[inline(always)]
fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: register-only, base ARMv8.0 AdvSIMD.
    unsafe {
        asm!(
            "fcvtl {o:v}.4s, {i:v}.4h",
            i = in(vreg) h,
            o = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

// ---------------------------------------------------------------------------
// Float dot products.

/// Σ w·x over `n` elements with four f32x4 accumulators; `load(i)` gives
/// elements `i..i + 4`. Returns the sum and how many elements it covered.
#[inline]
#[target_feature(enable = "neon")]
fn dot_by_4(
    n: usize,
    load_w: impl Fn(usize) -> float32x4_t,
    load_x: impl Fn(usize) -> float32x4_t,
) -> (f32, usize) {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_f32(*a, load_w(i + 4 * k), load_x(i + 4 * k));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], load_w(i), load_x(i));
        i += 4;
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    (vaddvq_f32(s), i)
}

/// The three element encodings: how to load 4 of them as f32 from raw bytes
/// (little-endian, any alignment) and how to read one.
#[derive(Clone, Copy)]
enum Elem {
    F32,
    F16,
    BF16,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 | Elem::BF16 => 2,
        }
    }

    /// Elements `i..i + 4` of `b`. Callers guarantee `(i + 4) · size <= len`.
    #[inline(always)]
    fn load4(self, b: &[u8], i: usize) -> float32x4_t {
        let p = b[i * self.size()..(i + 4) * self.size()].as_ptr();
        // SAFETY: the slice just taken holds the 16 or 8 bytes read; the
        // loads have no alignment needs.
        unsafe {
            match self {
                Elem::F32 => vld1q_f32(p.cast()),
                Elem::F16 => f16x4_to_f32(vld1_u16(p.cast())),
                // bf16 is the top half of an f32: widen and shift, exactly.
                Elem::BF16 => vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))),
            }
        }
    }

    fn get(self, b: &[u8], i: usize) -> f32 {
        let s = self.size();
        match self {
            Elem::F32 => f32::from_le_bytes(b[i * s..i * s + 4].try_into().expect("4 bytes")),
            Elem::F16 => f16::from_le_bytes([b[i * s], b[i * s + 1]]).to_f32(),
            Elem::BF16 => bf16::from_le_bytes([b[i * s], b[i * s + 1]]).to_f32(),
        }
    }
}

/// Σ w·x over the first `n` elements of two rows of raw bytes (fewer when a
/// row is shorter).
fn dot_elems(e: Elem, n: usize, w: &[u8], x: &[u8]) -> f32 {
    #[target_feature(enable = "neon")]
    fn inner(e: Elem, n: usize, w: &[u8], x: &[u8]) -> f32 {
        // Monomorphic per encoding, so the loads inline without a branch.
        let (sum, done) = match e {
            Elem::F32 => dot_by_4(n, |i| Elem::F32.load4(w, i), |i| Elem::F32.load4(x, i)),
            Elem::F16 => dot_by_4(n, |i| Elem::F16.load4(w, i), |i| Elem::F16.load4(x, i)),
            Elem::BF16 => dot_by_4(n, |i| Elem::BF16.load4(w, i), |i| Elem::BF16.load4(x, i)),
        };
        sum + (done..n).map(|i| e.get(w, i) * e.get(x, i)).sum::<f32>()
    }
    let n = n.min(w.len() / e.size()).min(x.len() / e.size());
    // SAFETY: NEON is baseline on aarch64.
    unsafe { inner(e, n, w, x) }
}

pub(super) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    dot_elems(
        Elem::F32,
        n,
        bytemuck::cast_slice(w),
        bytemuck::cast_slice(x),
    )
}

pub(super) fn dot_f16(w: &[f16], x: &[f16]) -> f32 {
    let n = w.len().min(x.len());
    dot_elems(
        Elem::F16,
        n,
        bytemuck::cast_slice(w),
        bytemuck::cast_slice(x),
    )
}

pub(super) fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    let n = w.len().min(x.len());
    dot_elems(
        Elem::BF16,
        n,
        bytemuck::cast_slice(w),
        bytemuck::cast_slice(x),
    )
}

fn dot_f32_bytes(n: usize, w: &[u8], x: &[u8]) -> f32 {
    dot_elems(Elem::F32, n, w, x)
}

fn dot_f16_bytes(n: usize, w: &[u8], x: &[u8]) -> f32 {
    dot_elems(Elem::F16, n, w, x)
}

fn dot_bf16_bytes(n: usize, w: &[u8], x: &[u8]) -> f32 {
    dot_elems(Elem::BF16, n, w, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_are_exact_for_every_half() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
            // SAFETY: NEON is baseline on aarch64.
            let lane = unsafe { vgetq_lane_f32::<3>(f16x4_to_f32(vdup_n_u16(bits))) };
            assert_eq!(lane.to_bits(), got.to_bits());
        }
    }

    #[test]
    fn dotprod_detection_is_what_the_runner_expects() {
        // scripts/test-neon.sh sets this per emulated CPU model.
        let detected = std::arch::is_aarch64_feature_detected!("dotprod");
        match std::env::var("RUSTY_LLM_EXPECT_DOTPROD").as_deref() {
            Ok("1") => assert!(detected, "dotprod expected"),
            Ok("0") => assert!(!detected, "dotprod not expected"),
            _ => eprintln!("dotprod detected: {detected}"),
        }
    }

    #[test]
    fn both_byte_dot_flavours_agree_exactly() {
        let a: Vec<i8> = (0..16)
            .map(|i| if i % 2 == 0 { -128 } else { 127 - i })
            .collect();
        let b: Vec<i8> = (0..16)
            .map(|i| if i % 3 == 0 { -128 } else { i * 7 - 50 })
            .collect();
        let want: i32 = a
            .iter()
            .zip(&b)
            .map(|(&p, &q)| i32::from(p) * i32::from(q))
            .sum();
        let (va, vb) = (load_i8(&a, 0), load_i8(&b, 0));
        // SAFETY: NEON is baseline on aarch64; `Sdot` runs only after the
        // dotprod check.
        unsafe {
            assert_eq!(vaddvq_s32(Mull::dot(vdupq_n_s32(1), va, vb)), want + 4);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                assert_eq!(vaddvq_s32(Sdot::dot(vdupq_n_s32(1), va, vb)), want + 4);
            }
        }
    }

    #[test]
    fn byte_float_dots_match_on_unaligned_rows() {
        let v: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut raw = vec![0u8; 1];
        raw.extend(v.iter().flat_map(|f| f.to_le_bytes()));
        let (a, b) = (dot_f32_bytes(67, &raw[1..], &raw[1..]), dot_f32(&v, &v));
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
    }
}
