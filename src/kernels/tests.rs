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

/// Random weight rows of `ty`: quantized where the project has a quantizer,
/// else random blocks with a small f16 scale (Q5_0 and Q3_K, whose `d` is
/// up front and at the end).
fn weight_rows(ty: crate::gguf::GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if crate::quant::can_quantize(ty) {
        let v = values(rows * cols, seed);
        for r in v.chunks_exact(cols) {
            crate::quant::quantize_row(ty, r, &mut out).unwrap();
        }
    } else {
        out = super::test_rng::bytes(rows * ty.bytes_for(cols as u64).unwrap() as usize, seed);
        for block in out.chunks_mut(ty.block_bytes() as usize) {
            let d = match ty {
                crate::gguf::GgmlType::Q3_K => block.len() - 2,
                _ => 0,
            };
            block[d..d + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        }
    }
    out
}

/// The tile kernels against the scalar reference and against matrix ×
/// vector, on shapes that leave partial tiles (rows, tokens) and partial
/// groups of blocks (columns); and every tile shape against one-by-one
/// (1×1) calls of the same kernel, bit for bit.
#[test]
fn tile_kernels_match_scalar_and_matvec_on_ragged_shapes() {
    use crate::gguf::GgmlType;
    let scalar = Kernels::for_simd(Simd::Scalar).unwrap();
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let block = ty.block_elements() as usize;
            let col_blocks: &[usize] = if block == 32 {
                &[1, 2, 3, 4, 5, 7, 20]
            } else {
                &[1, 2, 3]
            };
            for &nb in col_blocks {
                let cols = nb * block;
                for rows in [1, 3, 4, 6, 9] {
                    let data = weight_rows(ty, rows, cols, (rows * 7 + nb) as u64);
                    let mut deq = vec![0f32; rows * cols];
                    crate::quant::dequantize_row(ty, &data, &mut deq).unwrap();
                    let ws = Weights::new("w", ty, rows, cols, &data, &k).unwrap();
                    let wr = Weights::new("w", ty, rows, cols, &data, &scalar).unwrap();
                    if let Some(tile) = k.tiles.get(ty) {
                        tile_shapes_agree(tile, ty, rows, cols, &data);
                    }
                    for threads in [1, 3] {
                        let pool = ThreadPool::new(threads);
                        for tokens in [1, 2, 4, 5, 7] {
                            let xs = values(tokens * cols, (tokens * 13 + rows) as u64);
                            let mut got = vec![0f32; tokens * rows];
                            let mut want = vec![0f32; tokens * rows];
                            let mut s = Scratch::default();
                            matmul(&pool, &ws, &xs, tokens, &mut got, &mut s).unwrap();
                            matmul(&pool, &wr, &xs, tokens, &mut want, &mut s).unwrap();
                            for t in 0..tokens {
                                let x = &xs[t * cols..(t + 1) * cols];
                                let mut one = vec![0f32; rows];
                                matvec(&pool, &ws, x, &mut one, &mut s).unwrap();
                                for r in 0..rows {
                                    let mag: f32 = deq[r * cols..(r + 1) * cols]
                                        .iter()
                                        .zip(x)
                                        .map(|(a, b)| (a * b).abs())
                                        .sum();
                                    let a = got[t * rows + r];
                                    for (b, what) in
                                        [(want[t * rows + r], "scalar"), (one[r], "matvec")]
                                    {
                                        assert!(
                                            (a - b).abs() <= 1e-5 * mag.max(1e-3),
                                            "{simd:?} {ty} rows {rows} cols {cols} tokens {tokens} \
                                             r {r} t {t}: {a} vs {what} {b}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A tile kernel's results for every tile shape (up to 4×4) equal its
/// one-row, one-token calls bit for bit, and so does its row kernel.
fn tile_shapes_agree(tile: Tile, ty: crate::gguf::GgmlType, rows: usize, cols: usize, data: &[u8]) {
    let row_bytes = data.len() / rows;
    // Each token's `vec_dot_type` bytes (what the row dots read), and the
    // same in the tile's own layout where it has one.
    let raws: Vec<Vec<u8>> = (0..TILE)
        .map(|t| {
            let mut row = Vec::new();
            quantize_activations(ty, &values(cols, 99 + t as u64), &mut row).unwrap();
            row
        })
        .collect();
    let mut acts = Vec::new();
    for row in &raws {
        match tile.prepare {
            Some(p) => p(cols, row, &mut acts),
            None => acts.extend_from_slice(row),
        }
    }
    let x_bytes = acts.len() / TILE;
    let nr = rows.min(TILE);
    for nt in 1..=TILE {
        let mut all = [0f32; TILE * TILE];
        (tile.dot)(
            cols,
            &data[..nr * row_bytes],
            row_bytes,
            nr,
            &acts[..nt * x_bytes],
            x_bytes,
            nt,
            &mut all,
        );
        for t in 0..nt {
            for r in 0..nr {
                let mut one = [0f32; TILE * TILE];
                let w = &data[r * row_bytes..(r + 1) * row_bytes];
                (tile.dot)(
                    cols,
                    w,
                    row_bytes,
                    1,
                    &acts[t * x_bytes..(t + 1) * x_bytes],
                    x_bytes,
                    1,
                    &mut one,
                );
                assert_eq!(
                    all[t * TILE + r].to_bits(),
                    one[0].to_bits(),
                    "{ty} {nr}x{nt} r {r} t {t}"
                );
                if let Some(row) = tile.row {
                    let v = row(cols, w, &acts[t * x_bytes..(t + 1) * x_bytes]);
                    assert_eq!(v.to_bits(), one[0].to_bits(), "{ty} row kernel r {r} t {t}");
                }
                // A tile in its row dot's order (single tokens of several
                // sequences share it) equals that dot bit for bit, on the
                // dot's own activations.
                if let Some(dot) = tile.same_as {
                    let v = dot(cols, w, &raws[t]);
                    assert_eq!(v.to_bits(), one[0].to_bits(), "{ty} row dot r {r} t {t}");
                }
            }
        }
    }
}

/// The lane tiles change no result: `matmul` with them equals `matmul`
/// with them switched off (the per-row dots and 4×4 tiles of the same f32
/// orders), bit for bit, on ragged batches (groups of 16 partly filled, the
/// Q4_K gemm's `n % 4` tail), rows that leave partial row tiles, Q4_K both
/// repacked (rows % 8 = 0) and not, and more than one thread.
#[test]
fn lane_tiles_change_no_result() {
    use crate::gguf::GgmlType;
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        let mut without = k;
        without.batch.lanes = BatchLanes::default();
        for ty in [
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q3_K,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
        ] {
            let cols = 2 * 256;
            for rows in [5, 9, 16, 24] {
                let data = weight_rows(ty, rows, cols, (rows + 3) as u64);
                let ws = Weights::new("w", ty, rows, cols, &data, &k).unwrap();
                let wr = Weights::new("w", ty, rows, cols, &data, &without).unwrap();
                for threads in [1, 3] {
                    let pool = ThreadPool::new(threads);
                    for tokens in [LANE_MIN_TOKENS - 1, LANE_MIN_TOKENS, 13, 16, 19, 35] {
                        let xs = values(tokens * cols, (tokens * 5 + rows) as u64);
                        let mut got = vec![0f32; tokens * rows];
                        let mut want = vec![0f32; tokens * rows];
                        let mut s = Scratch::default();
                        matmul(&pool, &ws, &xs, tokens, &mut got, &mut s).unwrap();
                        matmul(&pool, &wr, &xs, tokens, &mut want, &mut s).unwrap();
                        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                            assert!(a.is_finite(), "{ty}: {a}");
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{simd:?} {ty} rows {rows} tokens {tokens} threads {threads} \
                                 t {} r {}: {a} vs {b}",
                                i / rows,
                                i % rows
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Tokens `xs` (`cols` each) quantized for weights `ty`, and prepared by
/// an interleaved layout's `prepare`.
fn quantize_and_prepare(
    ty: crate::gguf::GgmlType,
    xs: &[f32],
    cols: usize,
    prepare: interleaved::Prepare,
) -> (Vec<u8>, Vec<u8>) {
    let (mut q8, mut x) = (Vec::new(), Vec::new());
    for t in xs.chunks_exact(cols) {
        let mut row = Vec::new();
        quantize_activations(ty, t, &mut row).unwrap();
        q8.extend_from_slice(&row);
        prepare(cols, &row, &mut x);
    }
    (q8, x)
}

/// One matrix of an interleaved layout whose reference results `want[t][r]`
/// are known: [`InterleavedCase::check`] holds every SIMD kernel of the
/// layout (any tokens per call) and `matmul` on the interleaved weights
/// (any batch, chunking, thread count) to them bit for bit.
struct InterleavedCase<'a> {
    ty: crate::gguf::GgmlType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
    packed: &'a [u8],
    /// The tokens' prepared activations, and the same tokens in f32.
    x: &'a [u8],
    xs: &'a [f32],
    want: &'a [Vec<f32>],
}

impl InterleavedCase<'_> {
    fn check(
        &self,
        kernel_of: impl Fn(&Kernels) -> Option<interleaved::GroupKernel>,
        batches: &[usize],
    ) {
        use interleaved::{GROUP_ROWS, GROUP_TOKENS};
        let (rows, cols) = (self.rows, self.cols);
        let group_bytes = GROUP_ROWS * self.data.len() / rows;
        let x_bytes = self.x.len() / self.want.len();
        for simd in Simd::supported() {
            let k = Kernels::for_simd(simd).unwrap();
            let Some(kernel) = kernel_of(&k) else {
                continue;
            };
            for n in 1..=GROUP_TOKENS {
                let mut o = [[0f32; GROUP_ROWS]; GROUP_TOKENS];
                let group = &self.packed[group_bytes..2 * group_bytes];
                (kernel.dot)(cols, group, self.x, x_bytes, n, &mut o);
                for (t, o) in o.iter().enumerate().take(n) {
                    for (r, v) in o.iter().enumerate() {
                        let w = self.want[t][GROUP_ROWS + r];
                        assert_eq!(v.to_bits(), w.to_bits(), "{simd:?} n {n} t {t} r {r}");
                    }
                }
            }
            for n in 1..=GROUP_TOKENS {
                let Some(many) = kernel.many_groups else {
                    break;
                };
                // Every group by the first n tokens in one call.
                let mut seen = 0;
                many(
                    cols,
                    self.packed,
                    group_bytes,
                    self.x,
                    x_bytes,
                    n,
                    &mut |g, o| {
                        for (t, o) in o.iter().enumerate().take(n) {
                            for (r, v) in o.iter().enumerate() {
                                let w = self.want[t][g * GROUP_ROWS + r];
                                assert_eq!(
                                    v.to_bits(),
                                    w.to_bits(),
                                    "{simd:?} many n {n} g {g} t {t} r {r}"
                                );
                            }
                        }
                        seen += 1;
                    },
                );
                assert_eq!(seen, rows / GROUP_ROWS);
            }
            let ws = Weights::new("w", self.ty, rows, cols, self.data, &k)
                .unwrap()
                .interleaved(self.packed, &k)
                .unwrap();
            for threads in [1, 3] {
                let pool = ThreadPool::new(threads);
                for &n in batches {
                    let mut got = vec![0f32; n * rows];
                    let x = &self.xs[..n * cols];
                    matmul(&pool, &ws, x, n, &mut got, &mut Scratch::default()).unwrap();
                    for (i, v) in got.iter().enumerate() {
                        let w = self.want[i / rows][i % rows];
                        assert_eq!(v.to_bits(), w.to_bits(), "{simd:?} matmul {n} tokens, {i}");
                    }
                }
            }
        }
    }
}

/// The interleaved Q4_0 layout: the reference equals the plain Q4_0 dot to
/// rounding (same integer sums, another f32 order), every SIMD kernel
/// equals the reference bit for bit for any number of tokens per call, and
/// `matmul` on interleaved weights gives each (row, token) the reference's
/// value whatever the batch, the chunking or the thread count.
#[test]
fn interleaved_q4_0_equals_its_reference_bit_for_bit() {
    use crate::gguf::GgmlType;
    use interleaved::{GROUP_ROWS, group_dot, interleave_q4_0, prepare_q4_0};
    let scalar = Kernels::for_simd(Simd::Scalar).unwrap();
    for cols in [32, 96, 2048] {
        let rows = 48;
        let data = weight_rows(GgmlType::Q4_0, rows, cols, cols as u64);
        let packed = interleave_q4_0(rows, cols, &data).unwrap();
        let plain = Weights::new("w", GgmlType::Q4_0, rows, cols, &data, &scalar).unwrap();
        let row_bytes = data.len() / rows;
        let group_bytes = GROUP_ROWS * row_bytes;
        let tokens = 11;
        let xs = values(tokens * cols, 7 + cols as u64);
        let (q8, x) = quantize_and_prepare(GgmlType::Q4_0, &xs, cols, prepare_q4_0);
        let (q8_bytes, x_bytes) = (q8.len() / tokens, x.len() / tokens);
        // want[t][r]: the reference, checked against the plain dot.
        let want: Vec<Vec<f32>> = (0..tokens)
            .map(|t| {
                let xt = &x[t * x_bytes..(t + 1) * x_bytes];
                let row: Vec<f32> = (0..rows / GROUP_ROWS)
                    .flat_map(|g| group_dot(cols, &packed[g * group_bytes..][..group_bytes], xt))
                    .collect();
                for (r, v) in row.iter().enumerate() {
                    let q = &q8[t * q8_bytes..(t + 1) * q8_bytes];
                    let plain = (scalar.dots.q4_0)(cols, &data[r * row_bytes..][..row_bytes], q);
                    assert!(
                        close(*v, plain, cols),
                        "cols {cols} t {t} r {r}: {v} vs {plain}"
                    );
                }
                row
            })
            .collect();
        let refused = plain.interleaved(&packed, &scalar).unwrap_err().to_string();
        assert!(refused.contains("no interleaved weights"), "{refused}");
        let case = InterleavedCase {
            ty: GgmlType::Q4_0,
            rows,
            cols,
            data: &data,
            packed: &packed,
            x: &x,
            xs: &xs,
            want: &want,
        };
        case.check(|k| k.interleaved.q4_0, &[1, 4, tokens]);
    }
}

/// The interleaved Q5_0 layout keeps the plain Q5_0 order: its reference
/// equals the row dot bit for bit, and every SIMD kernel and `matmul` on
/// interleaved weights equal the reference bit for bit for any number of
/// tokens per call, chunking or thread count.
#[test]
fn interleaved_q5_0_equals_the_plain_dot_bit_for_bit() {
    use crate::gguf::GgmlType;
    use interleaved::{GROUP_ROWS, group_dot_q5_0, interleave_q5_0, prepare_q5_0};
    let scalar = Kernels::for_simd(Simd::Scalar).unwrap();
    for cols in [32, 640, 2048] {
        let rows = 48;
        let mut data = weight_rows(GgmlType::Q5_0, rows, cols, 3 + cols as u64);
        // A scale of its own per block (`weight_rows` gives them one).
        for (i, block) in data.chunks_exact_mut(22).enumerate() {
            let d = f16::from_f32(0.01 * (1.0 + (i % 13) as f32 / 8.0));
            block[..2].copy_from_slice(&d.to_le_bytes());
        }
        let packed = interleave_q5_0(rows, cols, &data).unwrap();
        assert_eq!(packed.len(), data.len());
        let row_bytes = data.len() / rows;
        let group_bytes = GROUP_ROWS * row_bytes;
        let tokens = 19;
        let xs = values(tokens * cols, 11 + cols as u64);
        let (q8, x) = quantize_and_prepare(GgmlType::Q5_0, &xs, cols, prepare_q5_0);
        let (q8_bytes, x_bytes) = (q8.len() / tokens, x.len() / tokens);
        // want[t][r]: the reference, which is ggml's x86 row dot (the AVX2
        // one: ours where the CPU has it) and the scalar one to rounding.
        let avx2 = Simd::supported()
            .contains(&Simd::Avx2)
            .then(|| Kernels::for_simd(Simd::Avx2).unwrap());
        let want: Vec<Vec<f32>> = (0..tokens)
            .map(|t| {
                let xt = &x[t * x_bytes..(t + 1) * x_bytes];
                let row: Vec<f32> = (0..rows / GROUP_ROWS)
                    .flat_map(|g| {
                        group_dot_q5_0(cols, &packed[g * group_bytes..][..group_bytes], xt)
                    })
                    .collect();
                for (r, v) in row.iter().enumerate() {
                    let q = &q8[t * q8_bytes..(t + 1) * q8_bytes];
                    let w = &data[r * row_bytes..][..row_bytes];
                    let plain = (scalar.dots.q5_0)(cols, w, q);
                    assert!(close(*v, plain, cols), "cols {cols} t {t} r {r}");
                    if let Some(avx2) = &avx2 {
                        let x86 = (avx2.dots.q5_0)(cols, w, q);
                        assert_eq!(v.to_bits(), x86.to_bits(), "cols {cols} t {t} r {r}");
                    }
                }
                row
            })
            .collect();
        let case = InterleavedCase {
            ty: GgmlType::Q5_0,
            rows,
            cols,
            data: &data,
            packed: &packed,
            x: &x,
            xs: &xs,
            want: &want,
        };
        case.check(|k| k.interleaved.q5_0, &[1, 2, 5, tokens]);
    }
}

/// The interleaved Q4_K layout keeps ggml's repacked Q4_K orders: the
/// reference equals the one-row gemv / gemm kernels (`BatchDots::
/// q4_k_repacked`) bit for bit, the SIMD kernels equal the reference bit for
/// bit for any number of tokens per call, and `matmul_segments` gives each
/// token the order of its place in its own segment (whole groups of four:
/// gemm, the rest: gemv).
#[test]
fn interleaved_q4_k_keeps_the_repacked_orders_bit_for_bit() {
    use crate::gguf::GgmlType;
    use interleaved::{GROUP_ROWS, GROUP_TOKENS, group_dot_q4_k, interleave_q4_k, prepare_q4_k};
    let (rows, cols) = (32, 512);
    let data = weight_rows(GgmlType::Q4_K, rows, cols, 5);
    let packed = interleave_q4_k(rows, cols, &data).unwrap();
    let group_bytes = packed.len() / (rows / GROUP_ROWS);
    let row_bytes = data.len() / rows;
    let tokens = 11;
    let xs = values(tokens * cols, 9);
    let (mut q8, mut x) = (Vec::new(), Vec::new());
    for t in xs.chunks_exact(cols) {
        let mut row = Vec::new();
        quantize_activations(GgmlType::Q4_K, t, &mut row).unwrap();
        q8.extend_from_slice(&row);
        prepare_q4_k(cols, &row, &mut x);
    }
    let (q8_bytes, x_bytes) = (q8.len() / tokens, x.len() / tokens);
    // want[order][t][r], order 0: gemv, 1: gemm.
    let want: Vec<Vec<Vec<f32>>> = [false, true]
        .map(|per_chunk| {
            (0..tokens)
                .map(|t| {
                    let xt = &x[t * x_bytes..(t + 1) * x_bytes];
                    (0..rows / GROUP_ROWS)
                        .flat_map(|g| {
                            let group = &packed[g * group_bytes..][..group_bytes];
                            group_dot_q4_k(cols, group, xt, per_chunk)
                        })
                        .collect()
                })
                .collect()
        })
        .into();
    let mut checked_one_row = false;
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        if let Some((gemv, gemm)) = k.batch.q4_k_repacked {
            for t in 0..tokens {
                let q = &q8[t * q8_bytes..(t + 1) * q8_bytes];
                for r in 0..rows {
                    let w = &data[r * row_bytes..(r + 1) * row_bytes];
                    for (order, dot) in [gemv, gemm].into_iter().enumerate() {
                        let (a, b) = (want[order][t][r], dot(cols, w, q));
                        assert_eq!(a.to_bits(), b.to_bits(), "{simd:?} order {order} {t} {r}");
                    }
                }
            }
            checked_one_row = true;
        }
        let Some(kernel) = k.interleaved.q4_k else {
            continue;
        };
        for (order, dot) in [kernel.dot, kernel.grouped.unwrap()]
            .into_iter()
            .enumerate()
        {
            for n in 1..=GROUP_TOKENS {
                let mut o = [[0f32; GROUP_ROWS]; GROUP_TOKENS];
                dot(cols, &packed[group_bytes..], &x, x_bytes, n, &mut o);
                for (t, o) in o.iter().enumerate().take(n) {
                    for (r, v) in o.iter().enumerate() {
                        let w = want[order][t][GROUP_ROWS + r];
                        assert_eq!(
                            v.to_bits(),
                            w.to_bits(),
                            "{simd:?} {order} n {n} t {t} r {r}"
                        );
                    }
                }
            }
        }
        let ws = Weights::new("w", GgmlType::Q4_K, rows, cols, &data, &k)
            .unwrap()
            .interleaved(&packed, &k)
            .unwrap();
        let pool = ThreadPool::new(2);
        let segments = [1, 6, 4];
        let mut got = vec![0f32; tokens * rows];
        matmul_segments(
            &pool,
            &ws,
            &xs,
            &segments,
            &mut got,
            &mut Scratch::default(),
        )
        .unwrap();
        // Segment [1]: gemv; [6]: four gemm, two gemv; [4]: gemm.
        let orders = [0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1];
        for (i, v) in got.iter().enumerate() {
            let (t, r) = (i / rows, i % rows);
            let w = want[orders[t]][t][r];
            assert_eq!(
                v.to_bits(),
                w.to_bits(),
                "{simd:?} matmul token {t} row {r}"
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    assert!(checked_one_row || !Simd::Avx2.is_supported());
    let _ = checked_one_row;
}

/// The single tokens of a continuous batch (segments of one token each,
/// one per sequence) get exactly what each gets alone through `matvec`,
/// bit for bit, however many share a step (the singles tiles take them in
/// twos, threes and fours), on ragged row counts and more than one thread.
#[test]
fn continuous_batch_singles_equal_each_token_alone() {
    use crate::gguf::GgmlType;
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let cols = 2 * 256;
            for rows in [7, 16, 21] {
                let data = weight_rows(ty, rows, cols, (rows + 11) as u64);
                let ws = Weights::new("w", ty, rows, cols, &data, &k).unwrap();
                for threads in [1, 2] {
                    let pool = ThreadPool::new(threads);
                    let mut s = Scratch::default();
                    for singles in 1..=9 {
                        let xs = values(singles * cols, (singles * 3 + rows) as u64);
                        let mut got = vec![0f32; singles * rows];
                        let segments = vec![1; singles];
                        matmul_segments(&pool, &ws, &xs, &segments, &mut got, &mut s).unwrap();
                        for t in 0..singles {
                            let mut alone = vec![0f32; rows];
                            matvec(
                                &pool,
                                &ws,
                                &xs[t * cols..(t + 1) * cols],
                                &mut alone,
                                &mut s,
                            )
                            .unwrap();
                            for r in 0..rows {
                                let (a, b) = (got[t * rows + r], alone[r]);
                                assert_eq!(
                                    a.to_bits(),
                                    b.to_bits(),
                                    "{simd:?} {ty} rows {rows} {singles} singles t {t} r {r}: \
                                     {a} vs {b}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The four-row kernels matrix × vector runs equal their row dots bit for
/// bit (each row's f32 order is its row dot's), for every type that has
/// one on every variant this CPU supports.
#[test]
fn four_row_kernels_equal_their_row_dots_bit_for_bit() {
    use crate::gguf::GgmlType;
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        for (one, four) in k.batch.rows.iter().flatten() {
            let ty = [GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4_0]
                .into_iter()
                .find(|&ty| std::ptr::fn_addr_eq(k.dots.get(ty).unwrap(), *one))
                .expect("a four-row kernel of a 32-element type");
            for nb in [1, 2, 20, 64] {
                let cols = 32 * nb;
                let data = weight_rows(ty, ROWS, cols, nb as u64);
                let row_bytes = data.len() / ROWS;
                let mut x = Vec::new();
                quantize_activations(ty, &values(cols, 5 + nb as u64), &mut x).unwrap();
                let got = four(cols, &data, row_bytes, &x);
                for (r, got) in got.into_iter().enumerate() {
                    let want = one(cols, &data[r * row_bytes..(r + 1) * row_bytes], &x);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{simd:?} {ty} cols {cols} row {r}"
                    );
                }
            }
        }
    }
}

/// The singles tiles (a continuous batch's one-token sequences sharing the
/// weights) equal their row dots bit for bit, for every row and token count
/// of a tile, on prepared activations where the tile has its own layout.
/// Q8_0 weights include −128 (a byte ggml's quantizer never writes but a
/// file may hold), which the sign trick must still multiply exactly.
#[test]
fn singles_tiles_equal_their_row_dots_bit_for_bit() {
    use crate::gguf::GgmlType;
    use tiles::TILE;
    let mut checked = 0;
    for simd in Simd::supported() {
        let k = Kernels::for_simd(simd).unwrap();
        for &(one, tile, prepare) in k.batch.singles_tiles.iter().flatten() {
            let ty = [
                GgmlType::Q8_0,
                GgmlType::Q5_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ]
            .into_iter()
            .find(|&ty| std::ptr::fn_addr_eq(k.dots.get(ty).unwrap(), one))
            .expect("a singles tile of a supported type");
            let nbs: &[usize] = match ty {
                GgmlType::Q4_K | GgmlType::Q6_K => &[8, 1, 2],
                _ => &[1, 2, 20, 64],
            };
            for &nb in nbs {
                let cols = nb * ty.block_elements() as usize;
                let mut data = weight_rows(ty, TILE, cols, nb as u64 + 40);
                if ty == GgmlType::Q8_0 {
                    for block in data.chunks_exact_mut(34) {
                        block[2 + nb % 32] = 0x80;
                        block[33] = 0x80;
                    }
                }
                let row_bytes = data.len() / TILE;
                let raw: Vec<Vec<u8>> = (0..TILE)
                    .map(|t| {
                        let mut x = Vec::new();
                        let xs = values(cols, (7 * nb + t) as u64);
                        quantize_activations(ty, &xs, &mut x).unwrap();
                        x
                    })
                    .collect();
                let mut acts = Vec::new();
                for x in &raw {
                    match prepare {
                        Some(prepare) => prepare(cols, x, &mut acts),
                        None => acts.extend_from_slice(x),
                    }
                }
                let x_bytes = acts.len() / TILE;
                for rows in 1..=TILE {
                    for tokens in 1..=TILE {
                        let mut out = [f32::NAN; TILE * TILE];
                        tile(
                            cols,
                            &data[..rows * row_bytes],
                            row_bytes,
                            rows,
                            &acts[..tokens * x_bytes],
                            x_bytes,
                            tokens,
                            &mut out,
                        );
                        for t in 0..tokens {
                            for r in 0..rows {
                                let want =
                                    one(cols, &data[r * row_bytes..(r + 1) * row_bytes], &raw[t]);
                                let got = out[t * TILE + r];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{simd:?} {ty} cols {cols} {rows}x{tokens} r {r} t {t}: {got} vs {want}"
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    // Only the x86 variants have singles tiles so far.
    assert!(checked > 0 || !Simd::Avx2.is_supported());
}

/// Decode steps split a large matrix into long chunks (up to 2048 rows)
/// and prefill into short ones (256); either way every row, the ragged
/// last chunk's included, is computed once and equals its row dot.
#[test]
fn long_decode_chunks_cover_every_row() {
    use crate::gguf::GgmlType;
    use matmul::rows_per_chunk;
    let big = 1 << 30;
    assert_eq!(rows_per_chunk(262_144, 2, big, 1), 2048);
    assert_eq!(rows_per_chunk(262_144, 2, big, 4), 2048);
    assert_eq!(rows_per_chunk(262_144, 2, big, 5), 256);
    assert_eq!(
        rows_per_chunk(4096, 2, big, 1),
        256,
        "eight chunks a thread"
    );
    assert_eq!(
        rows_per_chunk(4096, 2, 1000, 1),
        4096,
        "too little work to split"
    );

    let (ty, cols) = (GgmlType::Q8_0, 64);
    // 33 chunks of 2048 rows for one token, and a ragged 1001-row tail.
    let rows = 2 * 8 * 2048 + 1001;
    let data = weight_rows(ty, rows, cols, 3);
    let row_bytes = data.len() / rows;
    let k = kernels();
    let ws = Weights::new("w", ty, rows, cols, &data, k).unwrap();
    let pool = ThreadPool::new(2);
    let mut s = Scratch::default();
    let dot = k.dots.get(ty).unwrap();
    for n_tokens in [1, 5] {
        let xs = values(n_tokens * cols, 9 + n_tokens as u64);
        let mut got = vec![f32::NAN; n_tokens * rows];
        matmul(&pool, &ws, &xs, n_tokens, &mut got, &mut s).unwrap();
        for t in 0..n_tokens {
            let mut x = Vec::new();
            quantize_activations(ty, &xs[t * cols..(t + 1) * cols], &mut x).unwrap();
            for r in 0..rows {
                let want = dot(cols, &data[r * row_bytes..(r + 1) * row_bytes], &x);
                let got = got[t * rows + r];
                assert!(
                    close(got, want, cols),
                    "{n_tokens} tokens, token {t} row {r}: {got} vs {want}"
                );
            }
        }
    }
}
