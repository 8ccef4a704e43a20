//! Chooses the kernels once, at run time, from the CPU's features, into a table
//! of function pointers. `RUSTY_LLM_SIMD=scalar|avx2|avx512|neon` forces a
//! variant (tests, odd machines); asking for one the CPU lacks is an error.
//! `RUSTY_LLM_KERNELS=exact|fast` picks the f32 summation order (see
//! [`Order`]).

use super::interleaved::InterleavedDots;
use super::quant_dots::{QuantDots, VecDot, VecDot4, VecDotRows};
use super::scalar;
use super::tiles::{LaneTile, Prepare, QuantTiles, TileDot};
use half::{bf16, f16};
use std::sync::OnceLock;
use thiserror::Error;

/// An instruction-set variant of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

/// The f32 order of the quantized kernels. Their integer sums are exact
/// either way; only the order in which block results are added differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// llama.cpp's own order on this CPU class, kernel by kernel and batch
    /// size by batch size, so logits equal its logits (the default).
    #[default]
    Ggml,
    /// Our widest kernels (AVX-512 VNNI rows and tiles for Q5_0, Q8_0, Q4_1,
    /// Q5_1 and the K-quants): faster, and as accurate, but logits differ
    /// from llama.cpp's in the last bits, so a near-tie can pick another
    /// token. Only the AVX-512 variant has such kernels.
    Fast,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Ggml => "exact",
            Order::Fast => "fast",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SimdError {
    #[error("RUSTY_LLM_SIMD={0:?} is not one of scalar, avx2, avx512, neon")]
    Unknown(String),
    #[error("RUSTY_LLM_SIMD={0}: this CPU does not support it (supported here: {1})")]
    Unsupported(&'static str, String),
    #[error("RUSTY_LLM_KERNELS={0:?} is not one of exact, fast")]
    UnknownOrder(String),
}

impl Simd {
    pub const ALL: [Simd; 4] = [Simd::Scalar, Simd::Avx2, Simd::Avx512, Simd::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
            Simd::Neon => "neon",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, SimdError> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| SimdError::Unknown(name.to_string()))
    }

    /// Whether this CPU can run the variant.
    pub fn is_supported(self) -> bool {
        match self {
            Simd::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                Simd::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Simd::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every variant this CPU can run, best last.
    pub fn supported() -> Vec<Simd> {
        Self::ALL.into_iter().filter(|s| s.is_supported()).collect()
    }

    /// The best variant for this CPU.
    pub fn best() -> Simd {
        [Simd::Avx512, Simd::Avx2, Simd::Neon]
            .into_iter()
            .find(|s| s.is_supported())
            .unwrap_or(Simd::Scalar)
    }
}

/// The kernels of one variant.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub simd: Simd,
    /// The f32 order the quantized kernels keep.
    pub order: Order,
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    pub dot_f16: fn(&[f16], &[f16]) -> f32,
    pub dot_bf16: fn(&[bf16], &[bf16]) -> f32,
    /// Row dot products for every weight type (raw bytes in, see `VecDot`).
    pub dots: QuantDots,
    /// Tile kernels (several rows × several tokens) where a type has one.
    pub tiles: QuantTiles,
    /// SIMD activation quantizers, bit for bit equal to `kernels::activations`
    /// (`None`: the scalar ones).
    pub quantizers: ActQuantizers,
    /// Row dots in the f32 order of ggml's batch kernels, where llama.cpp
    /// switches kernels with the batch size (see [`BatchDots`]).
    pub batch: BatchDots,
    /// Kernels on row-interleaved weights (see `kernels::interleaved`);
    /// the model loader interleaves the matrices of the types listed here.
    pub interleaved: InterleavedDots,
}

/// The row dot products of ggml's other matmul kernels on x86, each in its
/// own f32 order, that llama.cpp (CPU backend, repack and tiled matmul on)
/// picks by weight shape and batch size; `matmul` follows the same choice.
/// The integer sums are the same as the `dots` ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchDots {
    /// Q4_K weights whose row count is a multiple of 8 are repacked at load
    /// (`repack.cpp`, `block_q4_Kx8`): one token (and the last `n % 4` of a
    /// batch) through `ggml_gemv_q4_K_8x8_q8_K`, the rest in groups of four
    /// through `ggml_gemm_q4_K_8x8_q8_K`: `(gemv, gemm)`. (Where the
    /// variant reads Q4_K interleaved, matrices of 16k rows take those
    /// kernels instead, in the same orders.)
    pub q4_k_repacked: Option<(VecDot, VecDot)>,
    /// Batches of at least [`BatchDots::TILED_MIN`] tokens through ggml's
    /// tiled K-quant matmul (`tiled/tiled.cpp`), for weights not repacked.
    pub q4_k_tiled: Option<VecDot>,
    pub q6_k_tiled: Option<VecDot>,
    pub q5_k_tiled: Option<VecDot>,
    pub q3_k_tiled: Option<VecDot>,
    /// Float weights, two or more tokens: `llamafile_sgemm` (tinyBLAS),
    /// for rows a multiple of [`BatchDots::TINYBLAS_K`] (32 for BF16).
    pub f32_tinyblas: Option<VecDot>,
    pub f16_tinyblas: Option<VecDot>,
    pub bf16_tinyblas: Option<VecDot>,
    /// Row dots paired with a form that takes four tokens at once, each
    /// token's result bit for bit the row dot's (the weights read once):
    /// what the single tokens of a continuous batch share.
    pub four_tokens: [Option<(VecDot, VecDot4)>; 2],
    /// Row dots paired with a form that takes [`super::quant_dots::ROWS`]
    /// weight rows at once, each row's result bit for bit the row dot's:
    /// what matrix × vector runs.
    pub rows: [Option<(VecDot, VecDotRows)>; 3],
    /// Row dots paired with a tile kernel whose every (row, token) is bit
    /// for bit the row dot's: what the single tokens of a continuous batch
    /// share, in preference to `four_tokens`; with the activation layout
    /// the tile reads, where it has one of its own.
    pub singles_tiles: [Option<(VecDot, TileDot, Option<Prepare>)>; 4],
    /// The K-quant orders above and tinyBLAS's for Q8_0/Q5_0 as lane
    /// tiles, where the variant has them.
    pub lanes: BatchLanes,
}

/// Lane tiles (several rows × [`super::tiles::LANES`] tokens per call) whose
/// every (row, token) result equals, bit for bit, that of the [`BatchDots`]
/// row dot of the same name.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchLanes {
    /// `q4_k_repacked`'s gemm (tokens in whole groups of four).
    pub q4_k_gemm: Option<LaneTile>,
    pub q4_k_tiled: Option<LaneTile>,
    pub q5_k_tiled: Option<LaneTile>,
    pub q6_k_tiled: Option<LaneTile>,
    pub q3_k_tiled: Option<LaneTile>,
    /// `tinyBLAS_Q0_AVX` (2+ tokens), the order of the Q8_0/Q5_0 tiles of
    /// [`QuantTiles`].
    pub q8_0: Option<LaneTile>,
    pub q5_0: Option<LaneTile>,
}

impl BatchDots {
    /// `ggml_tiled_min_batch`: the tiled matmul takes batches of 8 or more.
    pub const TILED_MIN: usize = 8;
    /// `llamafile_sgemm` takes batches of 2 or more (`n < 2` returns false).
    pub const TINYBLAS_MIN: usize = 2;
    /// tinyBLAS's `KN` for F32/F16 on AVX-512 (`k % KN` must be 0).
    pub const TINYBLAS_K: usize = 16;
}

/// Quantizes an f32 activation row (a whole number of blocks) into one
/// activation format, appending to `out`.
pub type Quantize = fn(x: &[f32], out: &mut Vec<u8>);

/// The activation quantizers a variant speeds up, by target format.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActQuantizers {
    pub q8_0: Option<Quantize>,
    pub q8_1: Option<Quantize>,
    pub q8_k: Option<Quantize>,
}

impl ActQuantizers {
    /// The quantizer into `act_type`, if this variant has its own.
    pub fn get(&self, act_type: crate::gguf::GgmlType) -> Option<Quantize> {
        match act_type {
            crate::gguf::GgmlType::Q8_0 => self.q8_0,
            crate::gguf::GgmlType::Q8_1 => self.q8_1,
            crate::gguf::GgmlType::Q8_K => self.q8_k,
            _ => None,
        }
    }
}

impl Kernels {
    /// The table for `simd`, or an error when the CPU cannot run it.
    pub fn for_simd(simd: Simd) -> Result<Kernels, SimdError> {
        Self::for_simd_order(simd, Order::Ggml)
    }

    /// The table for `simd` with the kernels of `order` where the variant
    /// has them.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub fn for_simd_order(simd: Simd, order: Order) -> Result<Kernels, SimdError> {
        if !simd.is_supported() {
            let here: Vec<&str> = Simd::supported().iter().map(|s| s.name()).collect();
            return Err(SimdError::Unsupported(simd.name(), here.join(", ")));
        }
        let mut k = Kernels {
            simd,
            order: Order::Ggml,
            dot_f32: scalar::dot_f32,
            dot_f16: scalar::dot_f16,
            dot_bf16: scalar::dot_bf16,
            dots: QuantDots::reference(),
            tiles: QuantTiles::default(),
            quantizers: ActQuantizers::default(),
            batch: BatchDots::default(),
            interleaved: InterleavedDots::default(),
        };
        // ggml's integer formulation of each quantized dot product.
        super::scalar_legacy::install(&mut k.dots);
        super::scalar_kquants::install(&mut k.dots);
        // Each variant starts from the one below it and replaces what it speeds up.
        match simd {
            Simd::Scalar => {}
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => install_avx2(&mut k),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                install_avx2(&mut k);
                super::x86_avx512::install(&mut k);
                super::x86_avx512_legacy::install(&mut k.dots);
                // No x86_avx512_kquants: the AVX2 K-quant kernels follow
                // ggml's f32 order (see x86_avx2_kquants).
                super::x86_avx512_tiles::install(&mut k.tiles);
                super::x86_avx512_tiles::install_singles(&mut k.batch);
                super::x86_avx512_rows::install(&mut k.batch);
                super::x86_avx512_lanes::install(&mut k.batch);
                super::x86_avx512_quantize::install(&mut k);
                super::x86_avx512_interleaved::install(&mut k.interleaved);
                if order == Order::Fast {
                    super::x86_avx512_kquants::install(&mut k.dots);
                    super::x86_avx512_legacy::install_all(&mut k.dots);
                    super::x86_avx512_tiles::install_fast(&mut k.tiles);
                    k.batch = BatchDots::default();
                    k.order = Order::Fast;
                }
            }
            #[cfg(target_arch = "aarch64")]
            Simd::Neon => super::aarch64_neon::install(&mut k),
            #[allow(unreachable_patterns)]
            _ => {}
        }
        Ok(k)
    }

    /// The variant chosen from `RUSTY_LLM_SIMD`, else the best for this CPU.
    pub fn select() -> Result<Kernels, SimdError> {
        let order = match std::env::var("RUSTY_LLM_KERNELS") {
            Ok(name) if !name.trim().is_empty() => {
                match name.trim().to_ascii_lowercase().as_str() {
                    "exact" => Order::Ggml,
                    "fast" => Order::Fast,
                    _ => return Err(SimdError::UnknownOrder(name)),
                }
            }
            _ => Order::Ggml,
        };
        match std::env::var("RUSTY_LLM_SIMD") {
            Ok(name) if !name.trim().is_empty() => {
                Self::for_simd_order(Simd::from_name(&name)?, order)
            }
            _ => Self::for_simd_order(Simd::best(), order),
        }
    }
}

/// The process-wide kernel table, chosen on first use. A bad `RUSTY_LLM_SIMD`
/// is reported once (by whoever calls [`kernels_checked`] first, e.g. the CLI)
/// and falls back to the best variant here.
pub fn kernels() -> &'static Kernels {
    static TABLE: OnceLock<Kernels> = OnceLock::new();
    TABLE.get_or_init(|| {
        Kernels::select().unwrap_or_else(|e| {
            tracing::warn!("{e}; using {}", Simd::best().name());
            Kernels::for_simd(Simd::best()).expect("the best variant is supported")
        })
    })
}

/// Validates `RUSTY_LLM_SIMD` and returns the table, for callers that want to
/// refuse a bad setting instead of falling back.
pub fn kernels_checked() -> Result<&'static Kernels, SimdError> {
    Kernels::select()?;
    Ok(kernels())
}

#[cfg(target_arch = "x86_64")]
fn install_avx2(k: &mut Kernels) {
    super::x86_avx2::install(k);
    super::x86_avx2_legacy::install(&mut k.dots);
    super::x86_avx2_kquants::install(&mut k.dots);
    super::x86_avx2_kquants::install_batch(&mut k.batch);
    super::x86_avx2_legacy::install_tiles(&mut k.tiles);
    super::x86_avx2_legacy::install_rows(&mut k.batch);
    super::x86_avx2_quantize::install(k);
    super::x86_avx2_interleaved::install(&mut k.interleaved);
    super::x86_avx2_lanes::install(&mut k.batch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_order_changes_only_what_the_variant_has_kernels_for() {
        for simd in Simd::supported() {
            let exact = Kernels::for_simd(simd).unwrap();
            let fast = Kernels::for_simd_order(simd, Order::Fast).unwrap();
            assert_eq!(exact.order, Order::Ggml);
            #[cfg(target_arch = "x86_64")]
            if simd == Simd::Avx512 && is_x86_feature_detected!("avx512vnni") {
                assert_eq!(fast.order, Order::Fast);
                assert!(fast.tiles.q4_k.is_some() && exact.tiles.q4_k.is_none());
                assert!(exact.batch.q4_k_repacked.is_some() && fast.batch.q4_k_repacked.is_none());
                continue;
            }
            assert_eq!(fast.order, Order::Ggml, "{simd:?}");
        }
    }
}
