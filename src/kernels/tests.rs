//! Every variant this CPU supports against the scalar reference.

use super::*;
use half::{bf16, f16};

use super::test_rng::values;

fn close(a: f32, b: f32, n: usize) -> bool {
    // Different summation orders: allow a few ulps per term of magnitude ~1.
    (a - b).abs() <= 1e-5 * (n as f32).max(1.0)
}

#[test]
fn float_dots_match_scalar_on_every_supported_variant() {
    let scalar = Kernels::for_simd(Simd::Scalar).unwrap();
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        assert_eq!(k.simd, simd);
        for n in [0, 1, 7, 8, 15, 16, 31, 33, 64, 100, 640, 2048 + 5] {
            let w = values(n, 1 + n as u64);
            let x = values(n, 1000 + n as u64);
            let (a, b) = ((k.dot_f32)(&w, &x), (scalar.dot_f32)(&w, &x));
            assert!(close(a, b, n), "{simd:?} f32 n={n}: {a} vs {b}");

            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let (a, b) = ((k.dot_f16)(&wh, &xh), (scalar.dot_f16)(&wh, &xh));
            assert!(close(a, b, n), "{simd:?} f16 n={n}: {a} vs {b}");

            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let (a, b) = ((k.dot_bf16)(&wb, &xb), (scalar.dot_bf16)(&wb, &xb));
            assert!(close(a, b, n), "{simd:?} bf16 n={n}: {a} vs {b}");
        }
    }
}

#[test]
fn variant_names_and_refusals() {
    assert_eq!(Simd::from_name("AVX512").unwrap(), Simd::Avx512);
    assert!(Simd::from_name("sse9").is_err());
    assert!(Simd::supported().contains(&Simd::Scalar));
    #[cfg(target_arch = "x86_64")]
    {
        let e = Kernels::for_simd(Simd::Neon).unwrap_err().to_string();
        assert!(e.contains("neon") && e.contains("scalar"), "{e}");
    }
}
