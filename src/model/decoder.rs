//! The one generic transformer decoder. Every family runs through
//! [`Model::forward`]; what differs is data in [`ModelConfig`] and which
//! tensors [`ModelWeights`] found, never a per-family code path.
//!
//! One block, in llama.cpp's order (names are the debug-hook names):
//!
//! ```text
//! x ─ attn_norm ─ q,k,v (+bias) ─ [qk-norm] ─ RoPE ─ KV cache ─ attention ─ attn_output (+bias)
//!   ─ [post_attention_norm] ─ [× residual_scale] ─ + x  = ffn_inp
//!   ─ ffn_norm ─ FFN ─ [post_ffw_norm] ─ [× residual_scale] ─ + ffn_inp  = l_out
//! ```
//!
//! Encoders (BERT) take the same path with [`NormPlacement::Post`]: the
//! block's two norms move from each branch's input to each residual sum
//! (`ffn_inp = norm(x + attention)`, `l_out = norm(ffn_inp + FFN)`); their
//! input embeddings add learned position rows and token type 0 and are
//! normalized; attention is bidirectional, and the output is the final
//! hidden states rather than logits ([`Model::forward_hidden`]).

use super::ModelError;
use super::attention::{AttentionShape, KeySlots, OutPtr, attention};
use super::config::{Activation, FfnKind, ModelConfig, NormKind, NormPlacement, Positions};
use super::kv_cache::{KvCache, KvType};
use super::ops::{self, RopeAngles};
use super::weights::{Linear, ModelWeights, Norm, QkvProjection};
use crate::gguf::GgufFile;
use crate::kernels::{self, Kernels, Scratch, ThreadPool};
use crate::profile;
use crate::tokenizer::TokenId;
use std::ops::Range;

/// A loaded model: the file (memory-mapped or read), its typed config and
/// the checked tensor directory.
pub struct Model {
    file: GgufFile,
    config: ModelConfig,
    weights: ModelWeights,
    kernels: &'static Kernels,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.config.arch)
            .field("layers", &self.config.n_layers)
            .finish()
    }
}

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (scoring, parity tests).
    All,
    /// None: the batch only fills the KV cache (all but the last prefill chunk).
    None,
}

/// What a pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Logits(Logits),
    /// The final hidden state of every token (after the output norm, where
    /// the model has one): what embeddings pool.
    Hidden,
}

/// Where a pass's tokens sit.
#[derive(Debug, Clone, Copy)]
enum Layout<'a> {
    /// One sequence continuing at position (and cache slot) `pos0`.
    Sequence { pos0: usize },
    /// Independent inputs side by side, as token ranges of the batch: each
    /// starts at position 0, is cached at its batch slots, and attends only
    /// within itself.
    Inputs(&'a [Range<usize>]),
}

/// Called with the name and value of intermediate activations
/// (`blk.3.attn_out`, `result_norm`, …), `n_tokens × width` row-major.
pub type ActivationHook<'h> = &'h mut dyn FnMut(&str, &[f32]);

/// Reusable buffers of a forward pass, sized on first use.
#[derive(Debug, Default)]
pub struct ForwardScratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    branch: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    logits: Vec<f32>,
    /// Each token's position (RoPE angle or learned row).
    positions: Vec<usize>,
    kernel: Scratch,
}

fn resize(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
}

impl Model {
    /// Builds the model from an opened file, checking every tensor it will use.
    pub fn load(file: GgufFile, kernels: &'static Kernels) -> Result<Self, ModelError> {
        let n_vocab = file
            .tensor_info("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?
            .rows()
            .1 as usize;
        let config = ModelConfig::from_metadata(file.metadata(), n_vocab)?;
        let weights = ModelWeights::load(&file, &config, kernels)?;
        Ok(Self {
            file,
            config,
            weights,
            kernels,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// An empty KV cache for `n_ctx` positions.
    pub fn new_cache(&self, kv_type: KvType, n_ctx: usize) -> KvCache {
        let c = &self.config;
        KvCache::new(
            kv_type,
            n_ctx,
            c.n_layers,
            c.n_head_kv,
            c.head_dim_k,
            c.head_dim_v,
        )
    }

    /// Bytes of weights read per generated token (every matrix once; the
    /// embedding table contributes one row).
    pub fn weight_bytes_per_token(&self) -> usize {
        let w = &self.weights;
        let mut total = w.output.as_ref().map_or(0, Linear::bytes);
        for l in &w.layers {
            total += match &l.qkv {
                QkvProjection::Separate { q, k, v } => q.bytes() + k.bytes() + v.bytes(),
                QkvProjection::Fused(qkv) => qkv.bytes(),
            };
            total += l.attn_out.bytes() + l.ffn_up.bytes() + l.ffn_down.bytes();
            total += l.ffn_gate.as_ref().map_or(0, Linear::bytes);
        }
        total
    }

    fn matmul(
        &self,
        pool: &ThreadPool,
        linear: &Linear,
        xs: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        let _timed = profile::scope(|| {
            let batch = if n_tokens > 1 { "batch" } else { "1 token" };
            format!(
                "matmul {} {}→{} {batch}",
                linear.ty, linear.cols, linear.rows
            )
        });
        let w = linear.bind(&self.file, self.kernels)?;
        kernels::matmul(pool, &w, xs, n_tokens, out, scratch)?;
        if let Some(bias) = &linear.bias {
            for row in out.chunks_exact_mut(linear.rows) {
                ops::add_assign(row, bias);
            }
        }
        Ok(())
    }

    fn norm_rows(&self, norm: &Norm, x: &[f32], out: &mut [f32]) {
        let _timed = profile::scope(|| "norms".into());
        let (n, eps) = (self.config.n_embd, self.config.norm_eps);
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            match self.config.norm {
                NormKind::Rms => ops::rms_norm(xr, &norm.weight, eps, or),
                NormKind::Layer => ops::layer_norm(xr, &norm.weight, norm.bias.as_deref(), eps, or),
            }
        }
    }

    /// Normalizes the rows of `x` in place (`tmp` holds the result meanwhile).
    fn norm_in_place(&self, norm: &Norm, x: &mut [f32], tmp: &mut Vec<f32>) {
        let out = resize(tmp, x.len());
        self.norm_rows(norm, x, out);
        x.copy_from_slice(out);
    }

    /// Runs `tokens` at positions `pos0..` through the model, appending their
    /// keys and values to `cache`, and returns the requested logits
    /// (`n_vocab` per output row; empty for [`Logits::None`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &'s mut ForwardScratch,
        tokens: &[TokenId],
        pos0: usize,
        logits: Logits,
        hook: Option<ActivationHook<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        let layout = Layout::Sequence { pos0 };
        self.run(
            pool,
            cache,
            scratch,
            tokens,
            layout,
            Output::Logits(logits),
            hook,
        )
    }

    /// Runs several independent inputs in one pass — `tokens` holds them
    /// back to back, `inputs` their ranges — and returns the final hidden
    /// state of every token (`n_embd` each, after the output norm where the
    /// model has one), which embeddings pool. The weights are applied to all
    /// tokens at once (matrix × matrix); each input starts at position 0 and
    /// attends only to itself. `cache` is scratch: it needs a slot per token
    /// and is overwritten.
    pub fn forward_hidden<'s>(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &'s mut ForwardScratch,
        tokens: &[TokenId],
        inputs: &[Range<usize>],
        hook: Option<ActivationHook<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        let mut next = 0;
        for r in inputs {
            if r.start != next || r.is_empty() {
                return Err(ModelError::Unsupported(format!(
                    "input ranges must cover the tokens in order without gaps or empty inputs (got {r:?} after {next})"
                )));
            }
            next = r.end;
        }
        if next != tokens.len() {
            return Err(ModelError::Unsupported(format!(
                "input ranges cover {next} tokens of {}",
                tokens.len()
            )));
        }
        let layout = Layout::Inputs(inputs);
        self.run(pool, cache, scratch, tokens, layout, Output::Hidden, hook)
    }

    /// The forward pass behind [`Model::forward`] and [`Model::forward_hidden`].
    #[allow(clippy::too_many_arguments)]
    fn run<'s>(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &'s mut ForwardScratch,
        tokens: &[TokenId],
        layout: Layout<'_>,
        output: Output,
        mut hook: Option<ActivationHook<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        let c = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        if n == 0 {
            return Ok(&[]);
        }
        // The first cache slot of the batch; slots follow token order.
        let pos0 = match layout {
            Layout::Sequence { pos0 } => pos0,
            Layout::Inputs(_) => 0,
        };
        if pos0 + n > cache.n_ctx() {
            return Err(ModelError::ContextFull {
                needed: pos0 + n,
                n_ctx: cache.n_ctx(),
            });
        }
        let positions = &mut scratch.positions;
        positions.clear();
        match layout {
            Layout::Sequence { pos0 } => positions.extend(pos0..pos0 + n),
            Layout::Inputs(inputs) => {
                for r in inputs {
                    positions.extend(0..r.len());
                }
            }
        }
        if c.positions == Positions::Learned
            && let Some(&last) = positions.iter().max()
            && last >= c.context_length
        {
            return Err(ModelError::ContextFull {
                needed: last + 1,
                n_ctx: c.context_length,
            });
        }
        let mut dump = |name: &dyn Fn() -> String, values: &[f32]| {
            if let Some(h) = hook.as_mut() {
                h(&name(), values);
            }
        };
        let s = scratch;
        let d = c.n_embd;

        // Token embeddings.
        let x = resize(&mut s.x, n * d);
        for (t, &tok) in tokens.iter().enumerate() {
            if tok as usize >= c.n_vocab {
                return Err(ModelError::TokenOutOfRange {
                    token: tok,
                    n_vocab: c.n_vocab,
                });
            }
            w.token_embd
                .row(&self.file, tok as usize, &mut x[t * d..(t + 1) * d])?;
        }
        if let Some(scale) = c.embedding_scale {
            ops::scale(x, scale);
        }
        // BERT: + token type 0 + the learned row of each position, then a
        // LayerNorm (llama.cpp's order: (token + type) + position).
        if let Some(type0) = &w.token_type0 {
            for row in x.chunks_exact_mut(d) {
                ops::add_assign(row, type0);
            }
        }
        if let Some(table) = &w.position_embd {
            let mut row = vec![0.0; d];
            for (xr, &pos) in x.chunks_exact_mut(d).zip(&s.positions) {
                table.row(&self.file, pos, &mut row)?;
                ops::add_assign(xr, &row);
            }
        }
        dump(&|| "inp_embd".into(), x);
        if let Some(norm) = &w.embedding_norm {
            self.norm_in_place(norm, &mut s.x, &mut s.xn);
            dump(&|| "inp_norm".into(), &s.x);
        }
        let pre_norm = c.norm_placement == NormPlacement::Pre;
        // Inputs side by side are cached at their batch indices and see
        // only their own slots.
        let key_slots = match layout {
            Layout::Sequence { pos0 } => KeySlots::Upto(pos0 + n),
            Layout::Inputs(inputs) => KeySlots::PerInput(inputs),
        };

        let (q_dim, k_dim, v_dim) = (c.q_dim(), c.k_dim(), c.v_dim());
        let attn_width = c.n_head * c.head_dim_v;
        let mut angles = RopeAngles::new(c.rope.n_rot);
        for (il, lw) in w.layers.iter().enumerate() {
            let lc = &c.layers[il];
            // Post-norm blocks feed the block input itself to attention.
            let attn_in: &[f32] = if pre_norm {
                let xn = resize(&mut s.xn, n * d);
                self.norm_rows(&lw.attn_norm, &s.x, xn);
                dump(&|| format!("blk.{il}.attn_norm"), xn);
                xn
            } else {
                &s.x
            };

            // Projections.
            let q = resize(&mut s.q, n * q_dim);
            let k = resize(&mut s.k, n * k_dim);
            let v = resize(&mut s.v, n * v_dim);
            match &lw.qkv {
                QkvProjection::Separate {
                    q: wq,
                    k: wk,
                    v: wv,
                } => {
                    self.matmul(pool, wq, attn_in, n, q, &mut s.kernel)?;
                    self.matmul(pool, wk, attn_in, n, k, &mut s.kernel)?;
                    self.matmul(pool, wv, attn_in, n, v, &mut s.kernel)?;
                }
                QkvProjection::Fused(wqkv) => {
                    let qkv = resize(&mut s.qkv, n * wqkv.rows);
                    self.matmul(pool, wqkv, attn_in, n, qkv, &mut s.kernel)?;
                    for t in 0..n {
                        let row = &qkv[t * wqkv.rows..(t + 1) * wqkv.rows];
                        q[t * q_dim..(t + 1) * q_dim].copy_from_slice(&row[..q_dim]);
                        k[t * k_dim..(t + 1) * k_dim].copy_from_slice(&row[q_dim..q_dim + k_dim]);
                        v[t * v_dim..(t + 1) * v_dim].copy_from_slice(&row[q_dim + k_dim..]);
                    }
                }
            }
            let timed = profile::scope(|| "qk-norm, rope, cache store".into());
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                ops::rms_norm_heads(q, qn, c.norm_eps);
                ops::rms_norm_heads(k, kn, c.norm_eps);
            }
            for t in 0..n {
                if c.positions == Positions::Rope {
                    angles.compute(
                        &c.rope,
                        lc.rope_base,
                        lc.rope_freq_scale,
                        w.rope_freqs.as_deref(),
                        s.positions[t],
                    );
                    for head in q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(c.head_dim_k) {
                        angles.apply(c.rope.style, head);
                    }
                    for head in k[t * k_dim..(t + 1) * k_dim].chunks_exact_mut(c.head_dim_k) {
                        angles.apply(c.rope.style, head);
                    }
                }
                cache.store(
                    il,
                    pos0 + t,
                    &k[t * k_dim..(t + 1) * k_dim],
                    &v[t * v_dim..(t + 1) * v_dim],
                );
            }
            drop(timed);
            dump(&|| format!("blk.{il}.q_roped"), q);

            // Attention and output projection.
            let attn = resize(&mut s.attn, n * attn_width);
            let shape = AttentionShape {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim_k: c.head_dim_k,
                head_dim_v: c.head_dim_v,
                scale: c.attn_scale,
                scale_on_q: c.attn_scale_on_q,
                softcap: c.attn_softcap,
                window: lc.sliding_window,
                causal: c.causal,
            };
            let timed = profile::scope(|| {
                let batch = if n > 1 { "batch" } else { "1 token" };
                format!("attention {:?} cache {batch}", cache.kv_type())
            });
            attention(
                pool,
                self.kernels,
                cache,
                il,
                &shape,
                q,
                pos0,
                key_slots,
                attn,
            );
            drop(timed);
            dump(&|| format!("blk.{il}.kqv_out"), attn);
            let branch = resize(&mut s.branch, n * d);
            self.matmul(pool, &lw.attn_out, attn, n, branch, &mut s.kernel)?;
            if let Some(post) = &lw.post_attn_norm {
                let xn = resize(&mut s.xn, n * d);
                self.norm_rows(post, branch, xn);
                branch.copy_from_slice(xn);
            }
            if let Some(rs) = c.residual_scale {
                ops::scale(branch, rs);
            }
            dump(&|| format!("blk.{il}.attn_out"), branch);
            ops::add_assign(&mut s.x, branch);
            if !pre_norm {
                self.norm_in_place(&lw.attn_norm, &mut s.x, &mut s.xn);
            }
            dump(&|| format!("blk.{il}.ffn_inp"), &s.x);

            // Feed-forward (post-norm blocks: on `ffn_inp` itself).
            let ffn_in: &[f32] = if pre_norm {
                let xn = resize(&mut s.xn, n * d);
                self.norm_rows(&lw.ffn_norm, &s.x, xn);
                dump(&|| format!("blk.{il}.ffn_norm"), xn);
                xn
            } else {
                &s.x
            };
            let up = resize(&mut s.up, n * lw.ffn_up.rows);
            self.matmul(pool, &lw.ffn_up, ffn_in, n, up, &mut s.kernel)?;
            let hidden: &[f32] = match c.ffn {
                FfnKind::Gated(act) => {
                    let gate_w = lw.ffn_gate.as_ref().expect("loader requires ffn_gate");
                    let gate = resize(&mut s.gate, n * c.n_ff);
                    self.matmul(pool, gate_w, ffn_in, n, gate, &mut s.kernel)?;
                    let _timed = profile::scope(|| "ffn activation".into());
                    gated_on_pool(pool, act, gate, up);
                    gate
                }
                FfnKind::GatedFused(act) => {
                    let gate = resize(&mut s.gate, n * c.n_ff);
                    for t in 0..n {
                        let row = &up[t * 2 * c.n_ff..(t + 1) * 2 * c.n_ff];
                        let g = &mut gate[t * c.n_ff..(t + 1) * c.n_ff];
                        g.copy_from_slice(&row[..c.n_ff]);
                        ops::gated(act, g, &row[c.n_ff..]);
                    }
                    gate
                }
                FfnKind::Plain(act) => {
                    for v in up.iter_mut() {
                        *v = act.apply(*v);
                    }
                    up
                }
            };
            dump(&|| format!("blk.{il}.ffn_hidden"), hidden);
            let branch = resize(&mut s.branch, n * d);
            self.matmul(pool, &lw.ffn_down, hidden, n, branch, &mut s.kernel)?;
            dump(&|| format!("blk.{il}.ffn_down"), branch);
            if let Some(post) = &lw.post_ffn_norm {
                let xn = resize(&mut s.xn, n * d);
                self.norm_rows(post, branch, xn);
                branch.copy_from_slice(xn);
            }
            if let Some(rs) = c.residual_scale {
                ops::scale(branch, rs);
            }
            dump(&|| format!("blk.{il}.ffn_out"), branch);
            ops::add_assign(&mut s.x, branch);
            if !pre_norm {
                self.norm_in_place(&lw.ffn_norm, &mut s.x, &mut s.xn);
            }
            dump(&|| format!("blk.{il}.l_out"), &s.x);
        }

        // Output head, on the rows that need logits (or hidden states).
        let rows: &[f32] = match output {
            Output::Logits(Logits::None) => return Ok(&[]),
            Output::Logits(Logits::Last) => &s.x[(n - 1) * d..],
            Output::Logits(Logits::All) | Output::Hidden => &s.x,
        };
        let n_out = rows.len() / d;
        let Some(output_norm) = &w.output_norm else {
            return match output {
                Output::Hidden => Ok(&s.x),
                Output::Logits(_) => Err(ModelError::Unsupported(format!(
                    "{} is an embedding model (an encoder without an output head): it computes embeddings, not text",
                    c.arch
                ))),
            };
        };
        let xn = resize(&mut s.xn, n_out * d);
        self.norm_rows(output_norm, rows, xn);
        dump(&|| "result_norm".into(), xn);
        if output == Output::Hidden {
            return Ok(&s.xn[..n_out * d]);
        }
        let output_w = w
            .output
            .as_ref()
            .expect("the loader pairs output with output_norm");
        let out = resize(&mut s.logits, n_out * c.n_vocab);
        self.matmul(pool, output_w, xn, n_out, out, &mut s.kernel)?;
        if let Some(div) = c.logit_divisor {
            ops::scale(out, 1.0 / div);
        }
        if let Some(cap) = c.final_softcap {
            ops::softcap(out, cap);
        }
        dump(&|| "result_output".into(), out);
        Ok(&s.logits[..n_out * c.n_vocab])
    }
}

/// [`ops::gated`] spread over the pool: a batch's FFN activation (tokens ×
/// FFN width GELUs) is worth sharing, one token's is not.
fn gated_on_pool(pool: &ThreadPool, act: Activation, gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 16 * 1024;
    let len = gate.len();
    if len <= CHUNK || pool.threads() == 1 {
        return ops::gated(act, gate, up);
    }
    let dst = OutPtr(gate.as_mut_ptr());
    pool.run(len.div_ceil(CHUNK), &|chunk| {
        let (start, end) = (chunk * CHUNK, ((chunk + 1) * CHUNK).min(len));
        // SAFETY: chunks are disjoint ranges inside `gate` (see `OutPtr`).
        let g = unsafe { std::slice::from_raw_parts_mut(dst.at(start), end - start) };
        ops::gated(act, g, &up[start..end]);
    });
}
