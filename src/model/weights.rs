//! The tensors of a decoder, found by name, checked against the config's
//! shapes and kernel support at load time (so a bad file fails before any
//! token is processed), and left in place in the memory-mapped file.

use super::ModelError;
use super::config::{FfnKind, ModelConfig, NormKind, NormPlacement, Positions};
use crate::gguf::{GgmlType, GgufFile};
use crate::kernels::weight_buffer::WeightBuffer;
use crate::kernels::{Kernels, Weights, interleaved};
use std::sync::Arc;

/// A matrix applied to activations: `rows` outputs from `cols` inputs, with
/// an optional bias. It refers to its bytes in the file by tensor index.
#[derive(Debug, Clone)]
pub struct Linear {
    pub name: String,
    /// The file's tensor; for a matrix [`Linear::stacked`] from several,
    /// the first (its bytes are then in `resident` only).
    tensor: usize,
    /// Whether this matrix was [`Linear::stacked`] from several.
    stacked: bool,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bias: Option<Vec<f32>>,
    /// The matrix's own copy in huge pages (see
    /// `kernels::weight_buffer`), made at load; the kernels then read this
    /// instead of the file.
    resident: Option<Resident>,
}

/// A matrix copied out of the file at load.
#[derive(Debug, Clone)]
enum Resident {
    /// Row-interleaved for the kernels (see `kernels::interleaved`).
    Interleaved(Arc<WeightBuffer>),
    /// The file's bytes as they are.
    Verbatim(Arc<WeightBuffer>),
}

impl Linear {
    /// The kernel view of this matrix: its bytes (the resident copy, else
    /// the file's), interleaved where its copy is.
    pub fn bind<'f>(
        &'f self,
        file: &'f GgufFile,
        kernels: &Kernels,
    ) -> Result<Weights<'f>, ModelError> {
        let (name, ty, rows, cols) = (&self.name, self.ty, self.rows, self.cols);
        Ok(match &self.resident {
            Some(Resident::Verbatim(bytes)) => Weights::new(name, ty, rows, cols, bytes, kernels)?,
            Some(Resident::Interleaved(bytes)) if self.stacked => {
                Weights::interleaved_only(name, ty, rows, cols, bytes, kernels)?
            }
            Some(Resident::Interleaved(bytes)) => {
                Weights::new(name, ty, rows, cols, self.data(file), kernels)?
                    .interleaved(bytes, kernels)?
            }
            None => Weights::new(name, ty, rows, cols, self.data(file), kernels)?,
        })
    }

    /// Whether the kernels read this matrix interleaved.
    fn interleaves(&self, kernels: &Kernels) -> bool {
        kernels.interleaved.get(self.ty).is_some()
            && interleaved::can_interleave(self.ty, self.rows)
    }

    /// Copies the matrix into huge pages (interleaved when the kernels read
    /// it so) and releases the file's pages of it, so memory holds it once
    /// (`row` lookups fault them back in). Where there is no memory for the
    /// copy, the file serves every product, only slower.
    pub fn make_resident(&mut self, file: &GgufFile, kernels: &Kernels) {
        if self.resident.is_some() {
            return;
        }
        let data = self.data(file);
        let copy = if self.interleaves(kernels) {
            interleaved::interleave(self.ty, self.rows, self.cols, data)
                .map(|b| Resident::Interleaved(Arc::new(b)))
        } else {
            let tensor = &file.tensors()[self.tensor];
            WeightBuffer::copy_in_rounds(data, |part| file.release_part(tensor, part))
                .map(|b| Resident::Verbatim(Arc::new(b)))
        };
        match copy {
            Ok(resident) => {
                self.resident = Some(resident);
                file.release(&file.tensors()[self.tensor]);
            }
            Err(e) => tracing::warn!("{}: no memory for a resident copy ({e})", self.name),
        }
    }

    /// Row `index` as f32 (a table lookup: token or position embeddings).
    pub fn row(&self, file: &GgufFile, index: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let row_bytes = self.data(file).len() / self.rows;
        let bytes = &self.data(file)[index * row_bytes..][..row_bytes];
        crate::quant::dequantize_row(self.ty, bytes, out)
            .map_err(|e| ModelError::Kernel(e.in_tensor(&self.name).into()))
    }

    /// This matrix's bytes in `file`.
    fn data<'f>(&self, file: &'f GgufFile) -> &'f [u8] {
        debug_assert!(!self.stacked, "a stacked matrix is not in the file");
        file.view(&file.tensors()[self.tensor]).data
    }

    /// One matrix of `parts` stacked by rows (outputs in the order given),
    /// copied into huge pages and the parts' file pages released: one
    /// product then does the work of several on the same input (q, k and v;
    /// gate and up), one quantization of the input and one pass of the
    /// pool instead of two or three. Every output row is computed exactly
    /// as in its own matrix. `None` where the parts differ in type, width,
    /// bias or interleaving, or where there is no memory for the copy.
    fn stacked(parts: &[&Linear], file: &GgufFile, kernels: &Kernels) -> Option<Linear> {
        let first = parts.first()?;
        // Interleaved, each part is whole groups of rows (`interleaves`),
        // so the stack's groups are the parts' own.
        let alike = parts.iter().all(|p| {
            p.ty == first.ty
                && p.cols == first.cols
                && p.bias.is_some() == first.bias.is_some()
                && p.resident.is_none()
                && p.interleaves(kernels) == first.interleaves(kernels)
        });
        if !alike {
            return None;
        }
        let no_memory = |e: std::io::Error| {
            tracing::warn!("{}: no memory to stack it ({e})", first.name);
        };
        let mut stack = WeightBuffer::zeroed(parts.iter().map(|p| p.bytes()).sum())
            .map_err(no_memory)
            .ok()?;
        let mut at = 0;
        for p in parts {
            let data = p.data(file);
            stack[at..at + data.len()].copy_from_slice(data);
            at += data.len();
        }
        let n_rows = parts.iter().map(|p| p.rows).sum();
        let resident = if first.interleaves(kernels) {
            let copy = interleaved::interleave(first.ty, n_rows, first.cols, &stack);
            Resident::Interleaved(Arc::new(copy.map_err(no_memory).ok()?))
        } else {
            Resident::Verbatim(Arc::new(stack))
        };
        for p in parts {
            file.release(&file.tensors()[p.tensor]);
        }
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        Some(Linear {
            name: names.join("+"),
            tensor: first.tensor,
            stacked: true,
            ty: first.ty,
            rows: n_rows,
            cols: first.cols,
            bias: first.bias.is_some().then(|| {
                parts
                    .iter()
                    .flat_map(|p| p.bias.iter().flatten().copied())
                    .collect()
            }),
            resident: Some(resident),
        })
    }

    pub fn bytes(&self) -> usize {
        self.ty.bytes_for(self.cols as u64).unwrap_or(0) as usize * self.rows
    }
}

/// Norm weights (and bias, for LayerNorm), dequantized to f32 at load.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// How a block projects queries, keys and values.
#[derive(Debug, Clone)]
pub enum QkvProjection {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// One matrix whose outputs are `[q; k; v]`: the file's `attn_qkv`
    /// (phi3), or the three stacked at load.
    Fused(Linear),
}

/// One block. With [`NormPlacement::Post`] (BERT) `attn_norm` and `ffn_norm`
/// are the norms after each residual add (`attn_output_norm`,
/// `layer_output_norm`) rather than on each branch's input.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Norm,
    pub qkv: QkvProjection,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub attn_out: Linear,
    pub post_attn_norm: Option<Norm>,
    pub ffn_norm: Norm,
    /// `None` with a gated FFN when `ffn_up` holds `[gate; up]` (the
    /// file's, or the two stacked at load).
    pub ffn_gate: Option<Linear>,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
    pub post_ffn_norm: Option<Norm>,
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// `token_embd.weight`: one row per token, any supported type.
    pub token_embd: Linear,
    /// Row 0 of `token_types.weight` (BERT's segment A), added to every token.
    pub token_type0: Option<Vec<f32>>,
    /// `position_embd.weight`: one learned row per position (BERT).
    pub position_embd: Option<Linear>,
    /// `token_embd_norm`: LayerNorm of the summed input embeddings (BERT).
    pub embedding_norm: Option<Norm>,
    /// `output_norm` and `output.weight` (or `token_embd.weight` when the
    /// model ties them); `None` for encoders, which have no logits.
    pub output_norm: Option<Norm>,
    pub output: Option<Linear>,
    /// llama3-style per-pair RoPE frequency divisors (`rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
}

/// Finds tensors by name and checks them.
struct Loader<'f> {
    file: &'f GgufFile,
    kernels: &'f Kernels,
}

impl Loader<'_> {
    fn index(&self, name: &str) -> Option<usize> {
        self.file.tensors().iter().position(|t| t.name == name)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(i) = self.index(name) else {
            return Ok(None);
        };
        let info = &self.file.tensors()[i];
        if info.elements() != len as u64 {
            return Err(ModelError::TensorShape {
                name: name.into(),
                expected: format!("{len} elements"),
                found: format!("{:?}", info.shape()),
            });
        }
        let values = crate::quant::dequantize_tensor(&self.file.view(info))
            .map_err(|e| ModelError::Kernel(e.in_tensor(name).into()))?;
        Ok(Some(values))
    }

    fn required_vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        self.vector(name, len)?
            .ok_or_else(|| ModelError::MissingTensor(name.into()))
    }

    fn norm(&self, prefix: &str, len: usize, kind: NormKind) -> Result<Option<Norm>, ModelError> {
        let Some(weight) = self.vector(&format!("{prefix}.weight"), len)? else {
            return Ok(None);
        };
        let bias = match kind {
            NormKind::Layer => self.vector(&format!("{prefix}.bias"), len)?,
            NormKind::Rms => None,
        };
        Ok(Some(Norm { weight, bias }))
    }

    fn required_norm(&self, prefix: &str, len: usize, kind: NormKind) -> Result<Norm, ModelError> {
        self.norm(prefix, len, kind)?
            .ok_or_else(|| ModelError::MissingTensor(format!("{prefix}.weight")))
    }

    /// `{prefix}.weight` as `rows` outputs × `cols` inputs, plus its optional bias.
    fn linear(&self, prefix: &str, cols: usize, rows: usize) -> Result<Option<Linear>, ModelError> {
        let name = format!("{prefix}.weight");
        let Some(i) = self.index(&name) else {
            return Ok(None);
        };
        let info = &self.file.tensors()[i];
        let (c, r) = info.rows();
        if (c, r) != (cols as u64, rows as u64) || info.n_dims > 2 {
            return Err(ModelError::TensorShape {
                name,
                expected: format!("[{cols}, {rows}]"),
                found: format!("{:?}", info.shape()),
            });
        }
        let linear = Linear {
            name: name.clone(),
            tensor: i,
            stacked: false,
            ty: info.ggml_type,
            rows,
            cols,
            bias: self.vector(&format!("{prefix}.bias"), rows)?,
            resident: None,
        };
        linear.bind(self.file, self.kernels)?; // type and size checks, once
        Ok(Some(linear))
    }

    /// Row 0 of `token_types.weight` (`n_embd × token types`), when present.
    fn token_type0(&self, c: &ModelConfig) -> Result<Option<Vec<f32>>, ModelError> {
        const NAME: &str = "token_types.weight";
        let Some(i) = self.index(NAME) else {
            return Ok(None);
        };
        let info = &self.file.tensors()[i];
        let (cols, rows) = info.rows();
        let rows_ok = c.n_token_types.is_none_or(|n| n as u64 == rows);
        if cols != c.n_embd as u64 || rows == 0 || !rows_ok || info.n_dims > 2 {
            return Err(ModelError::TensorShape {
                name: NAME.into(),
                expected: format!(
                    "[{}, {}]",
                    c.n_embd,
                    c.n_token_types
                        .map_or("token types".to_string(), |n| n.to_string())
                ),
                found: format!("{:?}", info.shape()),
            });
        }
        let row_bytes = info.ggml_type.bytes_for(cols).unwrap_or(0) as usize;
        let mut row = vec![0.0; c.n_embd];
        crate::quant::dequantize_row(
            info.ggml_type,
            &self.file.view(info).data[..row_bytes],
            &mut row,
        )
        .map_err(|e| ModelError::Kernel(e.in_tensor(NAME).into()))?;
        Ok(Some(row))
    }

    fn required_linear(
        &self,
        prefix: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Linear, ModelError> {
        self.linear(prefix, cols, rows)?
            .ok_or_else(|| ModelError::MissingTensor(format!("{prefix}.weight")))
    }
}

impl ModelWeights {
    pub fn load(
        file: &GgufFile,
        config: &ModelConfig,
        kernels: &Kernels,
    ) -> Result<Self, ModelError> {
        let l = Loader { file, kernels };
        let c = config;
        let token_embd = l.required_linear("token_embd", c.n_embd, c.n_vocab)?;
        let (output_norm, output) = if c.output_head {
            let output = match l.linear("output", c.n_embd, c.n_vocab)? {
                Some(output) => output,
                None => token_embd.clone(),
            };
            let norm = l.required_norm("output_norm", c.n_embd, c.norm)?;
            (Some(norm), Some(output))
        } else {
            (None, None)
        };
        let token_type0 = l.token_type0(c)?;
        let position_embd = match c.positions {
            Positions::Learned => {
                Some(l.required_linear("position_embd", c.n_embd, c.context_length)?)
            }
            Positions::Rope => None,
        };
        let embedding_norm = if c.embedding_norm {
            Some(l.required_norm("token_embd_norm", c.n_embd, c.norm)?)
        } else {
            None
        };
        // Post-norm blocks keep their two norms under other names.
        let (attn_norm_name, ffn_norm_name) = match c.norm_placement {
            NormPlacement::Pre => ("attn_norm", "ffn_norm"),
            NormPlacement::Post => ("attn_output_norm", "layer_output_norm"),
        };
        let rope_freqs = l.vector("rope_freqs.weight", c.rope.n_rot / 2)?;

        let mut layers = Vec::with_capacity(c.n_layers);
        for il in 0..c.n_layers {
            let p = |s: &str| format!("blk.{il}.{s}");
            let qkv = match l.linear(&p("attn_qkv"), c.n_embd, c.q_dim() + c.k_dim() + c.v_dim())? {
                Some(fused) => QkvProjection::Fused(fused),
                None => QkvProjection::Separate {
                    q: l.required_linear(&p("attn_q"), c.n_embd, c.q_dim())?,
                    k: l.required_linear(&p("attn_k"), c.n_embd, c.k_dim())?,
                    v: l.required_linear(&p("attn_v"), c.n_embd, c.v_dim())?,
                },
            };
            let (q_norm, k_norm) = if c.qk_norm {
                (
                    Some(l.required_vector(&p("attn_q_norm.weight"), c.head_dim_k)?),
                    Some(l.required_vector(&p("attn_k_norm.weight"), c.head_dim_k)?),
                )
            } else {
                (None, None)
            };
            let (post_attn_norm, post_ffn_norm) = if c.post_norms {
                (
                    Some(l.required_norm(&p("post_attention_norm"), c.n_embd, c.norm)?),
                    Some(l.required_norm(&p("post_ffw_norm"), c.n_embd, c.norm)?),
                )
            } else {
                (None, None)
            };
            let (ffn_gate, up_rows) = match c.ffn {
                FfnKind::Gated(_) => (
                    Some(l.required_linear(&p("ffn_gate"), c.n_embd, c.n_ff)?),
                    c.n_ff,
                ),
                FfnKind::GatedFused(_) => (None, 2 * c.n_ff),
                FfnKind::Plain(_) => (None, c.n_ff),
            };
            layers.push(LayerWeights {
                attn_norm: l.required_norm(&p(attn_norm_name), c.n_embd, c.norm)?,
                qkv,
                q_norm,
                k_norm,
                attn_out: l.required_linear(
                    &p("attn_output"),
                    c.n_head * c.head_dim_v,
                    c.n_embd,
                )?,
                post_attn_norm,
                ffn_norm: l.required_norm(&p(ffn_norm_name), c.n_embd, c.norm)?,
                ffn_gate,
                ffn_up: l.required_linear(&p("ffn_up"), c.n_embd, up_rows)?,
                ffn_down: l.required_linear(&p("ffn_down"), c.n_ff, c.n_embd)?,
                post_ffn_norm,
            });
        }
        let mut weights = Self {
            token_embd,
            token_type0,
            position_embd,
            embedding_norm,
            output_norm,
            output,
            rope_freqs,
            layers,
        };
        weights.make_resident(file, kernels);
        Ok(weights)
    }

    /// Every matrix that multiplies activations (not the embedding tables,
    /// which are row lookups).
    fn products(&mut self) -> impl Iterator<Item = &mut Linear> {
        let layers = self.layers.iter_mut().flat_map(|l| {
            let qkv: Vec<&mut Linear> = match &mut l.qkv {
                QkvProjection::Separate { q, k, v } => vec![q, k, v],
                QkvProjection::Fused(qkv) => vec![qkv],
            };
            qkv.into_iter()
                .chain([&mut l.attn_out, &mut l.ffn_up, &mut l.ffn_down])
                .chain(l.ffn_gate.as_mut())
        });
        self.output.as_mut().into_iter().chain(layers)
    }

    /// Copies every matrix into huge pages, interleaving those the kernels
    /// read interleaved (a copy per matrix, the file's pages released as it
    /// goes), with a progress bar: a 1B model moves 0.8–1.3 GB.
    fn make_resident(&mut self, file: &GgufFile, kernels: &Kernels) {
        let todo: u64 = self.products().map(|m| m.bytes() as u64).sum();
        if todo == 0 {
            return;
        }
        let bar = indicatif::ProgressBar::new(todo).with_message("preparing weights");
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes}",
        ) {
            bar.set_style(style);
        }
        let started = std::time::Instant::now();
        for layer in &mut self.layers {
            if let QkvProjection::Separate { q, k, v } = &layer.qkv
                && let Some(qkv) = Linear::stacked(&[q, k, v], file, kernels)
            {
                bar.inc(qkv.bytes() as u64);
                layer.qkv = QkvProjection::Fused(qkv);
            }
            // [gate; up], as a `GatedFused` file stores them.
            if let Some(gate) = &layer.ffn_gate
                && let Some(gate_up) = Linear::stacked(&[gate, &layer.ffn_up], file, kernels)
            {
                bar.inc(gate_up.bytes() as u64);
                layer.ffn_gate = None;
                layer.ffn_up = gate_up;
            }
        }
        for m in self.products().filter(|m| m.resident.is_none()) {
            m.make_resident(file, kernels);
            bar.inc(m.bytes() as u64);
        }
        let interleaved: usize = self
            .products()
            .filter(|m| matches!(m.resident, Some(Resident::Interleaved(_))))
            .map(|m| m.bytes())
            .sum();
        bar.finish_and_clear();
        tracing::debug!(
            "copied {:.1} MB of weights into huge pages ({:.1} MB interleaved) in {:.2?}",
            todo as f64 / 1e6,
            interleaved as f64 / 1e6,
            started.elapsed()
        );
    }
}
