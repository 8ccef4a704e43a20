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
//!
//! A pass runs a list of [`Segment`]s — sequences, each with its own KV
//! cache and positions — through the same matrix products (a continuous
//! batch, or several embedding inputs); each attends only to its own cache.

use super::ModelError;
use super::attention::{AttentionSegment, AttentionShape, OutPtr, attention_batch};
use super::config::{
    Activation, FfnKind, ModelConfig, NormKind, NormPlacement, Positions, RopeStyle,
};
use super::kv_cache::{KvCache, KvType};
use super::ops::{self, RopeAngles};
use super::weights::{Linear, ModelWeights, Norm, QkvProjection};
use crate::gguf::GgufFile;
use crate::kernels::{self, Kernels, Scratch, ThreadPool};
use crate::profile;
use crate::tokenizer::TokenId;

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

impl Logits {
    /// Output rows of a segment of `n_tokens` tokens.
    fn rows(self, n_tokens: usize) -> std::ops::Range<usize> {
        match self {
            Self::Last => n_tokens.saturating_sub(1)..n_tokens,
            Self::All => 0..n_tokens,
            Self::None => 0..0,
        }
    }
}

/// What a pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Each segment's logits, as its [`Segment::logits`] asks.
    Logits,
    /// The final hidden state of every token (after the output norm, where
    /// the model has one): what embeddings pool.
    Hidden,
}

/// One sequence's share of a batched forward pass ([`Model::forward_batch`]):
/// its tokens at positions `pos0..`, the KV cache they extend, and which
/// logits it needs.
#[derive(Debug)]
pub struct Segment<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [TokenId],
    pub pos0: usize,
    pub logits: Logits,
}

impl Segment<'_> {
    /// How many rows of logits [`Model::forward_batch`] returns for it.
    pub fn logit_rows(&self) -> usize {
        self.logits.rows(self.tokens.len()).len()
    }
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
    /// Tokens per segment of the current pass, and logit rows per segment.
    segment_tokens: Vec<usize>,
    segment_logits: Vec<usize>,
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

    /// `linear` over the tokens of every segment (`segments[i]` tokens each),
    /// each segment computed as a batch of its own (see
    /// [`kernels::matmul_segments`]).
    fn matmul(
        &self,
        pool: &ThreadPool,
        linear: &Linear,
        xs: &[f32],
        segments: &[usize],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        let _timed = profile::scope(|| {
            let batch = if segments.iter().any(|&n| n > 1) {
                "batch"
            } else {
                "1 token"
            };
            format!(
                "matmul {} {}→{} {batch}",
                linear.ty, linear.cols, linear.rows
            )
        });
        let w = linear.bind(&self.file, self.kernels)?;
        kernels::matmul_segments(pool, &w, xs, segments, out, scratch)?;
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
        let segment = Segment {
            cache,
            tokens,
            pos0,
            logits,
        };
        self.forward_batch(pool, &mut [segment], scratch, hook)
    }

    /// One forward pass over several sequences (a continuous batch): the
    /// projections and the FFN run as matrix products over every token of
    /// every segment, attention runs per segment against its own cache.
    /// Each segment's results are bit for bit those of its own
    /// [`Model::forward`]: every kernel is picked by the segment's own size.
    /// Returns the segments' logits one after the other
    /// ([`Segment::logit_rows`] rows of `n_vocab` each).
    pub fn forward_batch<'s>(
        &self,
        pool: &ThreadPool,
        segments: &mut [Segment<'_>],
        scratch: &'s mut ForwardScratch,
        hook: Option<ActivationHook<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        self.pass(pool, segments, scratch, Output::Logits, hook)
    }

    /// Runs the segments (independent inputs, e.g. texts to embed, each
    /// usually at position 0 of a cache of its own) in one pass and returns
    /// the final hidden state of every token, segment after segment (`n_embd`
    /// each, after the output norm where the model has one), which
    /// embeddings pool. Their `logits` are ignored.
    pub fn forward_hidden<'s>(
        &self,
        pool: &ThreadPool,
        segments: &mut [Segment<'_>],
        scratch: &'s mut ForwardScratch,
        hook: Option<ActivationHook<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        self.pass(pool, segments, scratch, Output::Hidden, hook)
    }

    /// [`Model::forward_batch`] or [`Model::forward_hidden`].
    fn pass<'s>(
        &self,
        pool: &ThreadPool,
        segments: &mut [Segment<'_>],
        scratch: &'s mut ForwardScratch,
        output: Output,
        mut hook: Option<ActivationHook<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        let c = &self.config;
        let s = scratch;
        s.segment_tokens.clear();
        s.segment_tokens
            .extend(segments.iter().map(|seg| seg.tokens.len()));
        let n: usize = s.segment_tokens.iter().sum();
        if n == 0 {
            return Ok(&[]);
        }
        for seg in segments.iter() {
            let needed = seg.pos0 + seg.tokens.len();
            if needed > seg.cache.n_ctx() {
                return Err(ModelError::ContextFull {
                    needed,
                    n_ctx: seg.cache.n_ctx(),
                });
            }
        }
        // Each token's position: the RoPE angle, or the row of a learned
        // position table (whose length bounds it).
        s.positions.clear();
        for seg in segments.iter() {
            s.positions.extend(seg.pos0..seg.pos0 + seg.tokens.len());
        }
        if c.positions == Positions::Learned
            && let Some(&last) = s.positions.iter().max()
            && last >= c.context_length
        {
            return Err(ModelError::ContextFull {
                needed: last + 1,
                n_ctx: c.context_length,
            });
        }
        let lens = std::mem::take(&mut s.segment_tokens);
        let result = self.forward_segments(pool, segments, &lens, s, output, &mut hook);
        s.segment_tokens = lens;
        let n_out = result?;
        Ok(match output {
            Output::Logits => &s.logits[..n_out * c.n_vocab],
            Output::Hidden => &s.xn[..n_out * c.n_embd],
        })
    }

    /// The body of [`Model::pass`]: returns the number of output rows, in
    /// `s.logits` (logits) or `s.xn` (hidden states).
    fn forward_segments(
        &self,
        pool: &ThreadPool,
        segments: &mut [Segment<'_>],
        lens: &[usize],
        s: &mut ForwardScratch,
        output: Output,
        hook: &mut Option<ActivationHook<'_>>,
    ) -> Result<usize, ModelError> {
        let c = &self.config;
        let w = &self.weights;
        let n: usize = lens.iter().sum();
        let mut dump = |name: &dyn Fn() -> String, values: &[f32]| {
            if let Some(h) = hook.as_mut() {
                h(&name(), values);
            }
        };
        let d = c.n_embd;

        // Token embeddings.
        let x = resize(&mut s.x, n * d);
        let tokens = segments.iter().flat_map(|seg| seg.tokens);
        for (t, &tok) in tokens.enumerate() {
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

        let (q_dim, k_dim, v_dim) = (c.q_dim(), c.k_dim(), c.v_dim());
        let attn_width = c.n_head * c.head_dim_v;
        let mut rope_tables = RopeTables::default();
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
                    self.matmul(pool, wq, attn_in, lens, q, &mut s.kernel)?;
                    self.matmul(pool, wk, attn_in, lens, k, &mut s.kernel)?;
                    self.matmul(pool, wv, attn_in, lens, v, &mut s.kernel)?;
                }
                QkvProjection::Fused(wqkv) => {
                    let qkv = resize(&mut s.qkv, n * wqkv.rows);
                    self.matmul(pool, wqkv, attn_in, lens, qkv, &mut s.kernel)?;
                    for t in 0..n {
                        let row = &qkv[t * wqkv.rows..(t + 1) * wqkv.rows];
                        q[t * q_dim..(t + 1) * q_dim].copy_from_slice(&row[..q_dim]);
                        k[t * k_dim..(t + 1) * k_dim].copy_from_slice(&row[q_dim..q_dim + k_dim]);
                        v[t * v_dim..(t + 1) * v_dim].copy_from_slice(&row[q_dim + k_dim..]);
                    }
                }
            }
            let timed = profile::scope(|| "qk-norm, rope, cache store".into());
            let rope = (c.positions == Positions::Rope).then(|| {
                let factors = w.rope_freqs.as_deref();
                let angles =
                    rope_tables.get(c, lc.rope_base, lc.rope_freq_scale, factors, &s.positions);
                (c.rope.style, angles)
            });
            let heads = QkHeads {
                norms: lw.q_norm.as_deref().zip(lw.k_norm.as_deref()),
                eps: c.norm_eps,
                rope,
                head_dim: c.head_dim_k,
            };
            if n == 1 {
                heads.apply(0, q, k);
            } else {
                heads.apply_on_pool(pool, n, q, k);
            }
            let mut t = 0;
            for seg in segments.iter_mut() {
                for pos in seg.pos0..seg.pos0 + seg.tokens.len() {
                    seg.cache.store(
                        il,
                        pos,
                        &k[t * k_dim..(t + 1) * k_dim],
                        &v[t * v_dim..(t + 1) * v_dim],
                    );
                    t += 1;
                }
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
                let batch = if lens.iter().any(|&n| n > 1) {
                    "batch"
                } else {
                    "1 token"
                };
                format!("attention {:?} cache {batch}", segments[0].cache.kv_type())
            });
            let mut first = 0;
            let queries: Vec<AttentionSegment<'_>> = segments
                .iter()
                .map(|seg| {
                    let n_tokens = seg.tokens.len();
                    first += n_tokens;
                    AttentionSegment {
                        cache: seg.cache,
                        first: first - n_tokens,
                        n_tokens,
                        pos0: seg.pos0,
                        n_kv: seg.pos0 + n_tokens,
                    }
                })
                .collect();
            attention_batch(pool, self.kernels, il, &shape, &queries, q, attn);
            drop(timed);
            dump(&|| format!("blk.{il}.kqv_out"), attn);
            let branch = resize(&mut s.branch, n * d);
            self.matmul(pool, &lw.attn_out, attn, lens, branch, &mut s.kernel)?;
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
            self.matmul(pool, &lw.ffn_up, ffn_in, lens, up, &mut s.kernel)?;
            let hidden: &[f32] = match (c.ffn, &lw.ffn_gate) {
                (FfnKind::Gated(act) | FfnKind::GatedFused(act), Some(gate_w)) => {
                    let gate = resize(&mut s.gate, n * c.n_ff);
                    self.matmul(pool, gate_w, ffn_in, lens, gate, &mut s.kernel)?;
                    let _timed = profile::scope(|| "ffn activation".into());
                    gated_on_pool(pool, act, gate, up, c.n_ff);
                    gate
                }
                (FfnKind::Gated(act) | FfnKind::GatedFused(act), None) => {
                    // `up` holds [gate; up] per token.
                    let _timed = profile::scope(|| "ffn activation".into());
                    let gate = resize(&mut s.gate, n * c.n_ff);
                    gated_fused_on_pool(pool, act, gate, up, c.n_ff);
                    gate
                }
                (FfnKind::Plain(act), _) => {
                    for v in up.iter_mut() {
                        *v = act.apply(*v);
                    }
                    up
                }
            };
            dump(&|| format!("blk.{il}.ffn_hidden"), hidden);
            let branch = resize(&mut s.branch, n * d);
            self.matmul(pool, &lw.ffn_down, hidden, lens, branch, &mut s.kernel)?;
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

        if output == Output::Hidden {
            // Every token's final state, normalized where the model has an
            // output norm (encoders end with their last block's norm).
            let xn = resize(&mut s.xn, n * d);
            match &w.output_norm {
                Some(norm) => self.norm_rows(norm, &s.x, xn),
                None => xn.copy_from_slice(&s.x),
            }
            dump(&|| "result_norm".into(), xn);
            return Ok(n);
        }
        let (Some(output_norm), Some(output_w)) = (&w.output_norm, &w.output) else {
            return Err(ModelError::Unsupported(format!(
                "{} is an embedding model (an encoder without an output head): it computes embeddings, not text",
                c.arch
            )));
        };

        // Output head, on the rows that need logits: each segment's own rows,
        // as a batch of their own.
        s.segment_logits.clear();
        let mut n_out = 0;
        let mut first = 0;
        for seg in segments.iter() {
            let rows = seg.logits.rows(seg.tokens.len());
            let xn = resize(&mut s.xn, (n_out + rows.len()) * d);
            for r in rows.clone() {
                let row = &s.x[(first + r) * d..(first + r + 1) * d];
                self.norm_rows(output_norm, row, &mut xn[n_out * d..(n_out + 1) * d]);
                n_out += 1;
            }
            s.segment_logits.push(rows.len());
            first += seg.tokens.len();
        }
        if n_out == 0 {
            return Ok(0);
        }
        let xn = &s.xn[..n_out * d];
        dump(&|| "result_norm".into(), xn);
        let out = resize(&mut s.logits, n_out * c.n_vocab);
        self.matmul(pool, output_w, xn, &s.segment_logits, out, &mut s.kernel)?;
        if let Some(div) = c.logit_divisor {
            ops::scale(out, 1.0 / div);
        }
        if let Some(cap) = c.final_softcap {
            ops::softcap(out, cap);
        }
        dump(&|| "result_output".into(), out);
        Ok(n_out)
    }
}

/// Each token's RoPE angles for one forward pass, per distinct (base,
/// frequency scale) among the layers (Gemma 3 has two among its 18), made
/// on first use.
#[derive(Default)]
struct RopeTables(Vec<((u32, u32), Vec<RopeAngles>)>);

impl RopeTables {
    fn get(
        &mut self,
        c: &ModelConfig,
        base: f32,
        freq_scale: f32,
        freq_factors: Option<&[f32]>,
        positions: &[usize],
    ) -> &[RopeAngles] {
        let key = (base.to_bits(), freq_scale.to_bits());
        let at = match self.0.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let angles = positions.iter().map(|&pos| {
                    let mut angles = RopeAngles::new(c.rope.n_rot);
                    angles.compute(&c.rope, base, freq_scale, freq_factors, pos);
                    angles
                });
                self.0.push((key, angles.collect()));
                self.0.len() - 1
            }
        };
        &self.0[at].1
    }
}

/// What a layer does to each token's query and key heads before the cache
/// store: the per-head RMS norms (Gemma 3, Qwen 3), then RoPE.
struct QkHeads<'a> {
    norms: Option<(&'a [f32], &'a [f32])>,
    eps: f32,
    /// The pairing, and each token's angles, computed once per forward pass
    /// for all the layers that share a base (per layer, they were a quarter
    /// to a third of this stage in a Gemma prefill).
    rope: Option<(RopeStyle, &'a [RopeAngles])>,
    head_dim: usize,
}

impl QkHeads<'_> {
    /// Token `t`'s heads: `q` and `k` are its rows.
    fn apply(&self, t: usize, q: &mut [f32], k: &mut [f32]) {
        if let Some((qn, kn)) = self.norms {
            ops::rms_norm_heads(q, qn, self.eps);
            ops::rms_norm_heads(k, kn, self.eps);
        }
        if let Some((style, angles)) = self.rope {
            for head in q.chunks_exact_mut(self.head_dim) {
                angles[t].apply(style, head);
            }
            for head in k.chunks_exact_mut(self.head_dim) {
                angles[t].apply(style, head);
            }
        }
    }

    /// All `n` tokens' heads, split over the pool: on one thread this was
    /// 21 µs a layer for a continuous batch of four Gemma tokens, while the
    /// other thread waited.
    fn apply_on_pool(&self, pool: &ThreadPool, n: usize, q: &mut [f32], k: &mut [f32]) {
        let (q_dim, k_dim) = (q.len() / n, k.len() / n);
        let per_task = n.div_ceil(pool.threads()).clamp(1, 64);
        let (qs, ks) = (OutPtr(q.as_mut_ptr()), OutPtr(k.as_mut_ptr()));
        pool.run(n.div_ceil(per_task), &|task| {
            for t in task * per_task..((task + 1) * per_task).min(n) {
                // SAFETY: token t's rows of `q` and `k`, touched by this task
                // only (see `OutPtr`); `run` returns after every task.
                let (q, k) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qs.at(t * q_dim), q_dim),
                        std::slice::from_raw_parts_mut(ks.at(t * k_dim), k_dim),
                    )
                };
                self.apply(t, q, k);
            }
        });
    }
}

/// [`gated_on_pool`] for a fused projection whose rows are `[gate; up]`
/// (`2 · n_ff` values a token): each token's gate copied into `out` and
/// gated by its up there. (Moving the halves apart first, on one thread,
/// was 3–4% of Gemma's prefill in perf.)
fn gated_fused_on_pool(
    pool: &ThreadPool,
    act: Activation,
    out: &mut [f32],
    fused: &[f32],
    n_ff: usize,
) {
    let dst = OutPtr(out.as_mut_ptr());
    gated_rows_on_pool(pool, out.len() / n_ff, n_ff, &|t, part| {
        let row = &fused[t * 2 * n_ff..(t + 1) * 2 * n_ff];
        // SAFETY: values `part` of token t's row of `out`, written by this
        // task only (see `OutPtr` and `gated_rows_on_pool`).
        let o =
            unsafe { std::slice::from_raw_parts_mut(dst.at(t * n_ff + part.start), part.len()) };
        o.copy_from_slice(&row[part.clone()]);
        ops::gated(act, o, &row[n_ff + part.start..n_ff + part.end]);
    });
}

/// [`ops::gated`] on `n` rows of `n_ff` (`gate` and `up` token by token).
fn gated_on_pool(pool: &ThreadPool, act: Activation, gate: &mut [f32], up: &[f32], n_ff: usize) {
    let dst = OutPtr(gate.as_mut_ptr());
    gated_rows_on_pool(pool, gate.len() / n_ff, n_ff, &|t, part| {
        let at = t * n_ff;
        // SAFETY: values `part` of token t's row of `gate`, written by this
        // task only (see `OutPtr` and `gated_rows_on_pool`).
        let g = unsafe { std::slice::from_raw_parts_mut(dst.at(at + part.start), part.len()) };
        ops::gated(act, g, &up[at + part.start..at + part.end]);
    });
}

/// Activations per pool task of the gated FFN, at most (whole rows) and at
/// least (parts of a row).
const GATED_CHUNK: usize = 16 * 1024;
const GATED_PART: usize = 512;

/// Runs `gate(t, part)` over `n` rows of `n_ff` gated activations on the
/// pool, each value once: whole rows per task in a batch; fewer rows than
/// threads (a decode step) split each row in parts, so no thread idles
/// (one token's activation is 10–30 µs: Gemma's 2048 GELUs, whose table
/// the weight stream keeps evicting, a 1B llama's 8192 SiLUs). A part
/// starts at a multiple of 16 from its row's start, where ggml's vector
/// SiLU takes groups of 16, so the row's tail stays the scalar one.
fn gated_rows_on_pool(
    pool: &ThreadPool,
    n: usize,
    n_ff: usize,
    gate: &(dyn Fn(usize, std::ops::Range<usize>) + Sync),
) {
    let threads = pool.threads();
    if n == 0 {
        return;
    }
    let parts = if n >= threads {
        1
    } else {
        threads.div_ceil(n).min(n_ff / GATED_PART).max(1)
    };
    if parts > 1 {
        let part = n_ff.div_ceil(parts).next_multiple_of(16);
        pool.run(n * parts, &|task| {
            let (t, p) = (task / parts, task % parts);
            let range = p * part..((p + 1) * part).min(n_ff);
            if !range.is_empty() {
                gate(t, range);
            }
        });
        return;
    }
    let rows = (GATED_CHUNK / n_ff).clamp(1, n.div_ceil(threads));
    if rows >= n {
        return (0..n).for_each(|t| gate(t, 0..n_ff));
    }
    pool.run(n.div_ceil(rows), &|task| {
        for t in task * rows..((task + 1) * rows).min(n) {
            gate(t, 0..n_ff);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split over the pool (rows in parts for a decode step, whole rows for
    /// a batch), the gated activation is the same, bit for bit, as on one
    /// row at a time: SiLU's vector groups of 16 and scalar tail included.
    #[test]
    fn gated_on_pool_equals_row_by_row() {
        let n_ff = 2048 + 24;
        for act in [Activation::Silu, Activation::GeluTanh] {
            for n in [1, 2, 3, 9] {
                let up: Vec<f32> = (0..n * n_ff)
                    .map(|i| ((i * 37) % 101) as f32 / 17.0 - 3.0)
                    .collect();
                let gate: Vec<f32> = (0..n * n_ff)
                    .map(|i| ((i * 53) % 97) as f32 / 9.0 - 5.0)
                    .collect();
                let mut want = gate.clone();
                for (g, u) in want.chunks_mut(n_ff).zip(up.chunks(n_ff)) {
                    ops::gated(act, g, u);
                }
                let fused: Vec<f32> = gate
                    .chunks(n_ff)
                    .zip(up.chunks(n_ff))
                    .flat_map(|(g, u)| g.iter().chain(u).copied())
                    .collect();
                for threads in [1, 2, 3] {
                    let pool = ThreadPool::new(threads);
                    let mut got = gate.clone();
                    gated_on_pool(&pool, act, &mut got, &up, n_ff);
                    let mut got_fused = vec![0f32; n * n_ff];
                    gated_fused_on_pool(&pool, act, &mut got_fused, &fused, n_ff);
                    for (i, w) in want.iter().enumerate() {
                        let at = || format!("{act:?} n {n} threads {threads} value {i}");
                        assert_eq!(got[i].to_bits(), w.to_bits(), "{}", at());
                        assert_eq!(got_fused[i].to_bits(), w.to_bits(), "fused {}", at());
                    }
                }
            }
        }
    }
}
