//! Whole-file conversion, like llama.cpp's `llama-quantize`: pick each tensor's
//! type by llama.cpp's rules (`src/llama-quant.cpp`), convert it row by row
//! with the bit-exact quantizers of this module's parent, and stream the result
//! to disk, so memory stays bounded by one chunk of rows per thread.

use super::{QuantError, dequantize_row, quantize_row};
use crate::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, TensorInfo, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A target of `rusty-llm quantize`: llama.cpp's `llama_ftype` names.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantTarget {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl QuantTarget {
    pub const ALL: [QuantTarget; 10] = [
        Self::Q4_0,
        Self::Q4_K_S,
        Self::Q4_K_M,
        Self::Q5_K_S,
        Self::Q5_K_M,
        Self::Q6_K,
        Self::Q8_0,
        Self::F16,
        Self::BF16,
        Self::F32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_K_S => "Q4_K_S",
            Self::Q4_K_M => "Q4_K_M",
            Self::Q5_K_S => "Q5_K_S",
            Self::Q5_K_M => "Q5_K_M",
            Self::Q6_K => "Q6_K",
        }
    }

    /// The type most weight matrices get.
    pub fn default_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::BF16 => GgmlType::BF16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_K_S | Self::Q4_K_M => GgmlType::Q4_K,
            Self::Q5_K_S | Self::Q5_K_M => GgmlType::Q5_K,
            Self::Q6_K => GgmlType::Q6_K,
        }
    }

    /// `general.file_type`: llama.cpp's `llama_ftype` (include/llama.h).
    pub fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 7,
            Self::Q4_K_S => 14,
            Self::Q4_K_M => 15,
            Self::Q5_K_S => 16,
            Self::Q5_K_M => 17,
            Self::Q6_K => 18,
            Self::BF16 => 32,
        }
    }

    /// Every accepted name, aliases included, for error messages and help.
    pub fn names_help() -> String {
        let mut names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
        names.push("Q4_K (= Q4_K_M)");
        names.push("Q5_K (= Q5_K_M)");
        names.join(", ")
    }
}

impl fmt::Display for QuantTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantTarget {
    type Err = String;

    /// Case-insensitive; `Q4_K` and `Q5_K` mean `Q4_K_M` and `Q5_K_M`, as in
    /// llama-quantize.
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        let name = match upper.as_str() {
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown type {s:?}; supported: {}",
                    QuantTarget::names_help()
                )
            })
    }
}

/// Settings of [`quantize_file`].
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub target: QuantTarget,
    /// Threads converting rows (each takes a share of every chunk).
    pub threads: usize,
}

impl QuantizeOptions {
    pub fn new(target: QuantTarget) -> Self {
        Self {
            target,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// What [`quantize_file`] reports while it works.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// Before the first tensor: how many there are and their input bytes.
    Begin { tensors: usize, input_bytes: u64 },
    /// A tensor starts: its type in the input and in the output.
    Tensor {
        index: usize,
        name: &'a str,
        from: GgmlType,
        to: GgmlType,
    },
    /// This many more input bytes are done.
    Advance(u64),
    /// Something the user should know (e.g. requantizing quantized weights).
    Warning(String),
}

/// The outcome of [`quantize_file`].
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub elapsed: Duration,
    /// Tensors converted to another type.
    pub converted: usize,
    /// Tensors copied unchanged (norms, biases, or already in the target type).
    pub copied: usize,
    /// How many output tensors have each type, most frequent first.
    pub type_counts: Vec<(GgmlType, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error("{}: the output folder does not exist", .0.display())]
    OutputDir(PathBuf),
    #[error("{}: the output would overwrite the input", .0.display())]
    SameFile(PathBuf),
}

/// One output tensor: its input entry and the type it gets.
struct Plan<'a> {
    info: &'a TensorInfo,
    to: GgmlType,
}

/// Rows converted per chunk and thread share: bounds memory to about this many
/// output values per chunk whatever the tensor size.
const CHUNK_VALUES: u64 = 16 << 20;

/// Converts `input` to `options.target`, writing `output` atomically (a
/// temporary file renamed into place). Metadata is copied, with
/// `general.file_type` and `general.quantization_version` set as llama.cpp sets
/// them.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    options: &QuantizeOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<QuantizeReport, QuantizeError> {
    let started = Instant::now();
    let file = GgufFile::open(input)?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(QuantizeError::OutputDir(parent.to_path_buf()));
    }
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize())
        && a == b
    {
        return Err(QuantizeError::SameFile(output.to_path_buf()));
    }

    let plans = plan(&file, options.target);
    let requantized: Vec<String> = {
        let mut types: Vec<String> = plans
            .iter()
            .filter(|p| p.to != p.info.ggml_type && !is_float(p.info.ggml_type))
            .map(|p| p.info.ggml_type.name().to_string())
            .collect();
        types.sort();
        types.dedup();
        types
    };
    if !requantized.is_empty() {
        progress(Progress::Warning(format!(
            "{}: requantizing tensors that are already {} loses accuracy; quantize from the F32/F16/BF16 model if you have it",
            input.display(),
            requantized.join(", ")
        )));
    }

    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata().iter() {
        writer.set(key, value.clone());
    }
    writer.set("general.file_type", Value::U32(options.target.file_type()));
    // GGML_QNT_VERSION, which llama.cpp writes into every quantized file.
    writer.set("general.quantization_version", Value::U32(2));
    for p in &plans {
        writer.declare_tensor(&p.info.name, p.to, p.info.shape())?;
    }
    let mut stream = writer.stream_file(output)?;

    let input_bytes: u64 = plans.iter().map(|p| p.info.size).sum();
    progress(Progress::Begin {
        tensors: plans.len(),
        input_bytes,
    });
    let threads = options.threads.max(1);
    let (mut converted, mut copied) = (0, 0);
    for (index, p) in plans.iter().enumerate() {
        let view = file.view(p.info);
        let from = p.info.ggml_type;
        progress(Progress::Tensor {
            index,
            name: &p.info.name,
            from,
            to: p.to,
        });
        if p.to == from {
            stream.write(view.data)?;
            progress(Progress::Advance(p.info.size));
            copied += 1;
            continue;
        }
        converted += 1;
        let (ncols, nrows) = p.info.rows();
        // Both sizes exist: the reader checked the input's geometry, and
        // `plan` picked an output type whose block divides the row.
        let in_row = from.bytes_for(ncols).unwrap_or(0) as usize;
        let rows_per_chunk = (CHUNK_VALUES / ncols.max(1)).max(1);
        let mut row = 0;
        while row < nrows {
            let rows = rows_per_chunk.min(nrows - row);
            let start = row as usize * in_row;
            let chunk = &view.data[start..start + rows as usize * in_row];
            for part in convert_rows(chunk, from, p.to, ncols as usize, threads) {
                stream.write(&part.map_err(|e| e.in_tensor(&p.info.name))?)?;
            }
            progress(Progress::Advance(chunk.len() as u64));
            row += rows;
        }
    }
    stream.finish()?;

    let mut type_counts: Vec<(GgmlType, usize)> = Vec::new();
    for p in &plans {
        match type_counts.iter_mut().find(|(t, _)| *t == p.to) {
            Some((_, n)) => *n += 1,
            None => type_counts.push((p.to, 1)),
        }
    }
    type_counts.sort_by_key(|&(t, n)| (std::cmp::Reverse(n), t.id()));
    let output_bytes = std::fs::metadata(output)
        .map_err(|source| GgufError::Io {
            path: output.to_path_buf(),
            source,
        })?
        .len();
    Ok(QuantizeReport {
        input_bytes: file.file_size(),
        output_bytes,
        elapsed: started.elapsed(),
        converted,
        copied,
        type_counts,
    })
}

/// Converts whole rows of `from` to `to`, split over `threads` threads; the
/// parts come back in row order. Each thread holds one f32 row at a time.
fn convert_rows(
    chunk: &[u8],
    from: GgmlType,
    to: GgmlType,
    ncols: usize,
    threads: usize,
) -> Vec<Result<Vec<u8>, QuantError>> {
    let in_row = from.bytes_for(ncols as u64).unwrap_or(0) as usize;
    let rows = chunk.len().checked_div(in_row).unwrap_or(0);
    let convert = |part: &[u8]| -> Result<Vec<u8>, QuantError> {
        let mut values = vec![0.0f32; ncols];
        let mut out = Vec::new();
        for src in part.chunks_exact(in_row) {
            dequantize_row(from, src, &mut values)?;
            quantize_row(to, &values, &mut out)?;
        }
        Ok(out)
    };
    let per_thread = rows.div_ceil(threads.max(1)).max(1);
    if threads <= 1 || rows < 2 {
        return vec![convert(chunk)];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunk
            .chunks(per_thread * in_row)
            .map(|part| s.spawn(move || convert(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Each tensor's output type, by llama.cpp's `llama_tensor_get_type`.
fn plan(file: &GgufFile, target: QuantTarget) -> Vec<Plan<'_>> {
    let tensors = file.tensors();
    let arch = file
        .metadata()
        .str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("");
    let meta_u64 = |key: &str| file.metadata().u64(&format!("{arch}.{key}")).ok().flatten();
    let has_output = tensors.iter().any(|t| t.name == "output.weight");
    let n_attention_wv = tensors
        .iter()
        .filter(|t| is_attn_v(category(&t.name)))
        .count();
    // llama.cpp counts ffn_down layers as hparams.n_layer.
    let n_layer = meta_u64("block_count").map_or_else(
        || {
            tensors
                .iter()
                .filter(|t| category(&t.name) == Category::FfnDown)
                .count()
        },
        |n| n as usize,
    );
    let n_expert = meta_u64("expert_count").unwrap_or(0);
    let mut state = MixState {
        target,
        has_output,
        n_attention_wv,
        i_attention_wv: 0,
        n_layer,
        i_ffn_down: 0,
        n_expert,
    };
    tensors
        .iter()
        .map(|info| Plan {
            info,
            to: state.tensor_type(info),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    FfnDown,
    Other,
}

/// llama.cpp's `tensor_get_category`, reduced to the categories whose rules
/// this build's targets use.
fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Category::AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        Category::AttnKvB
    } else if name.contains("attn_v.weight") {
        Category::AttnV
    } else if name.contains("ffn_up") || name.contains("ffn_gate") {
        // Matched before ffn_down in llama.cpp; no rule of ours uses them.
        Category::Other
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// llama.cpp's `category_is_attn_v`: fused QKV and MLA's kv_b count as attn_v.
fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// llama.cpp's `tensor_allows_quantization`: 2-D (and 3-D expert) weights,
/// except norms, gates, position and type embeddings and a few small tensors.
fn allows_quantization(info: &TensorInfo) -> bool {
    let name = info.name.as_str();
    const NEVER: [&str; 9] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "attn_rel_b.weight",
        ".position_embd",
    ];
    info.n_dims >= 2
        && name.ends_with("weight")
        && !NEVER.iter().any(|s| name.contains(s))
        && !name.contains("time_mix_")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The counters llama.cpp's mixture rules walk through, in file order.
struct MixState {
    target: QuantTarget,
    has_output: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    n_layer: usize,
    i_ffn_down: usize,
    n_expert: u64,
}

impl MixState {
    /// llama.cpp's `llama_tensor_get_type` (no imatrix, no overrides).
    fn tensor_type(&mut self, info: &TensorInfo) -> GgmlType {
        use GgmlType as T;
        use QuantTarget as Q;
        if !allows_quantization(info) {
            return info.ggml_type;
        }
        let default = self.target.default_type();
        if is_float(default) {
            // Float targets have no mixture and no fallback.
            return default;
        }
        let use_more_bits = |i: usize, n: usize| {
            let (i, n) = (i as i64, n as i64);
            i < n / 8 || i >= 7 * n / 8 || (i - n / 8).rem_euclid(3) == 2
        };
        let ncols = info.dims[0];
        let cat = category(&info.name);
        let mut ty = default;
        if cat == Category::Output || (!self.has_output && cat == Category::TokenEmbd) {
            // The output projection keeps more bits: Q8_0 when the row does not
            // fit the default's block, otherwise Q6_K unless the target is Q8_0.
            if !ncols.is_multiple_of(default.block_elements()) {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if is_attn_v(cat) {
            ty = match self.target {
                Q::Q4_K_M | Q::Q5_K_M
                    if use_more_bits(self.i_attention_wv, self.n_attention_wv) =>
                {
                    T::Q6_K
                }
                Q::Q4_K_S if self.i_attention_wv < 4 => T::Q5_K,
                _ => ty,
            };
            if self.n_expert == 8 {
                ty = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::FfnDown {
            let i_layer = if self.n_expert > 1 {
                // Expert tensors are not in layer order: read the layer from the name.
                info.name
                    .strip_prefix("blk.")
                    .and_then(|r| r.split('.').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(self.i_ffn_down)
            } else {
                self.i_ffn_down
            };
            let n_layer = self.n_layer;
            ty = match self.target {
                Q::Q4_K_M | Q::Q5_K_M if use_more_bits(i_layer, n_layer) => T::Q6_K,
                Q::Q4_K_S if i_layer < n_layer / 8 => T::Q5_K,
                _ => ty,
            };
            self.i_ffn_down += 1;
        }
        fallback(ty, ncols)
    }
}

/// llama.cpp's `tensor_type_fallback` for rows that do not fit the type's block.
/// llama.cpp falls back Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0; we cannot produce
/// Q5_0/Q5_1, so every 256-block K-quant falls back to Q8_0 (more bits, never
/// less accurate). A row that does not fit 32 either becomes F16, as in llama.cpp.
fn fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    if ncols.is_multiple_of(ty.block_elements()) {
        return ty;
    }
    if ncols.is_multiple_of(32) {
        GgmlType::Q8_0
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_parse_with_aliases() {
        for t in QuantTarget::ALL {
            assert_eq!(t.name().parse::<QuantTarget>(), Ok(t));
        }
        assert_eq!("q4_k".parse::<QuantTarget>(), Ok(QuantTarget::Q4_K_M));
        assert_eq!("Q5_K".parse::<QuantTarget>(), Ok(QuantTarget::Q5_K_M));
        let err = "Q3_K".parse::<QuantTarget>().unwrap_err();
        assert!(err.contains("Q4_K_M") && err.contains("Q8_0"), "{err}");
    }

    #[test]
    fn ragged_rows_fall_back() {
        assert_eq!(fallback(GgmlType::Q4_K, 4096), GgmlType::Q4_K);
        assert_eq!(fallback(GgmlType::Q4_K, 96), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q6_K, 100), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4_0, 48), GgmlType::F16);
    }
}
