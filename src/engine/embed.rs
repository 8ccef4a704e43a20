//! Embeddings: texts → tokens → batched forward passes that run several
//! inputs at once (each attending only to itself) → one pooled vector per
//! input (the model's `pooling_type`: mean, CLS or last token), scaled to
//! unit length.
//!
//! Encoders (BERT, nomic-bert) are made for this. A decoder (llama, gemma, …)
//! embeds by mean-pooling its last layer, after the final norm, as llama.cpp
//! does; such vectors work for rough similarity, but a dedicated embedding
//! model is much better at retrieval.

use super::runner::Runner;
use crate::model::{ForwardScratch, KvType, Logits, ModelError, Positions, Segment};
use crate::tokenizer::TokenId;
use std::ops::Range;
use thiserror::Error;

/// How to embed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Longest input, in tokens (special tokens included).
    pub ctx_size: usize,
    /// Cut a longer input to `ctx_size` tokens instead of refusing it.
    pub truncate: bool,
    /// Scale each vector to unit length (L2), as llama-embedding, OpenAI
    /// and Ollama's `/api/embed` do; off, the pooled vector as it is.
    pub normalize: bool,
    /// Inputs are packed into forward passes of at most this many tokens
    /// (an input longer than that runs alone).
    pub batch_tokens: usize,
}

/// Tokens per embedding pass by default (the CLI's and server's `--ubatch`).
pub const DEFAULT_BATCH_TOKENS: usize = 512;

impl EmbedOptions {
    /// The runner's context (for encoders: the position table), unit
    /// vectors, no truncation, passes of up to `DEFAULT_BATCH_TOKENS` (512).
    pub fn new(runner: &Runner) -> Self {
        Self {
            ctx_size: runner.embedding_ctx_size(),
            truncate: false,
            normalize: true,
            batch_tokens: DEFAULT_BATCH_TOKENS,
        }
    }
}

/// One input's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// `n_embd` values.
    pub vector: Vec<f32>,
    /// Tokens the model saw (after any truncation).
    pub n_tokens: usize,
}

/// Why inputs could not be embedded.
#[derive(Debug, Error)]
pub enum EmbedError {
    #[error(
        "input {index} is {tokens} tokens long, more than the context of {ctx_size} tokens \
         (shorten it, or ask for truncation)"
    )]
    InputTooLong {
        index: usize,
        tokens: usize,
        ctx_size: usize,
    },
    #[error("input {index} has no tokens to embed")]
    EmptyInput { index: usize },
    #[error("input {index}: token id {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        index: usize,
        token: TokenId,
        n_vocab: usize,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Why two vectors have no cosine similarity.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SimilarityError {
    #[error("the vectors have different lengths ({0} and {1})")]
    LengthMismatch(usize, usize),
    #[error("vector {0} is zero (or empty), so it has no direction")]
    ZeroVector(usize),
    #[error("vector {0} holds a value that is not finite")]
    NotFinite(usize),
}

/// `a·b / (|a| |b|)`, summed in f64. Vectors of different lengths, zero
/// vectors and non-finite values are errors rather than NaN.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> Result<f32, SimilarityError> {
    if a.len() != b.len() {
        return Err(SimilarityError::LengthMismatch(a.len(), b.len()));
    }
    let norm = |v: &[f32], which: usize| {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(SimilarityError::NotFinite(which));
        }
        let n = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if n == 0.0 {
            return Err(SimilarityError::ZeroVector(which));
        }
        Ok(n)
    };
    let (na, nb) = (norm(a, 0)?, norm(b, 1)?);
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    Ok((dot / (na * nb)).clamp(-1.0, 1.0) as f32)
}

/// Scales `v` to unit length as llama.cpp's `common_embd_normalize` does
/// (squares summed in f64, one multiplication by the f32 inverse); a zero
/// vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| f64::from(x * x)).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
    for x in v {
        *x *= inv;
    }
}

impl Runner {
    /// The longest input [`Runner::embed`] takes by default: an encoder's
    /// position table (its training context), a decoder's default context.
    pub fn embedding_ctx_size(&self) -> usize {
        let c = self.model().config();
        if c.output_head {
            self.default_ctx_size()
        } else {
            c.context_length
        }
    }

    /// The longest input `options` allow: its `ctx_size`, and never more
    /// than a learned position table holds.
    fn input_limit(&self, options: &EmbedOptions) -> usize {
        let c = self.model().config();
        match c.positions {
            Positions::Learned => options.ctx_size.min(c.context_length),
            Positions::Rope => options.ctx_size,
        }
    }

    /// The unit-length embedding of `text`.
    ///
    /// ```no_run
    /// use rusty_llm::engine::{Runner, cosine_similarity};
    /// let runner = Runner::from_path("models/nomic-embed-text-v1.5.Q8_0.gguf")?;
    /// let a = runner.embed("The cat sat on the mat.")?;
    /// let b = runner.embed("A cat was sitting on a rug.")?;
    /// println!("{:.3}", cosine_similarity(&a, &b)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut out = self.embed_batch(&[text], &EmbedOptions::new(self))?;
        Ok(out.pop().map(|e| e.vector).unwrap_or_default())
    }

    /// Embeds every text, several per forward pass, in order.
    pub fn embed_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let inputs = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.tokenize_for_embedding(i, t.as_ref(), options))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_tokens(&inputs, options)
    }

    /// The tokens of input `index` as the model embeds it (special tokens
    /// added as its metadata asks, `[CLS] … [SEP]` for BERT), checked against
    /// the context: cut to `ctx_size` when `options.truncate`, keeping a
    /// closing special token (`[SEP]`, EOS) last; an error otherwise.
    pub fn tokenize_for_embedding(
        &self,
        index: usize,
        text: &str,
        options: &EmbedOptions,
    ) -> Result<Vec<TokenId>, EmbedError> {
        let mut tokens = self.tokenizer().encode(text, true, false);
        let ctx_size = self.input_limit(options);
        if tokens.len() > ctx_size {
            if !options.truncate || ctx_size == 0 {
                return Err(EmbedError::InputTooLong {
                    index,
                    tokens: tokens.len(),
                    ctx_size,
                });
            }
            let special = &self.tokenizer().vocab().special;
            let closing = [special.sep, special.eos]
                .into_iter()
                .flatten()
                .find(|&id| tokens.last() == Some(&id));
            tokens.truncate(ctx_size);
            if let (Some(id), Some(last)) = (closing, tokens.last_mut()) {
                *last = id;
            }
        }
        if tokens.is_empty() {
            return Err(EmbedError::EmptyInput { index });
        }
        Ok(tokens)
    }

    /// Refuses inputs given as tokens that [`Runner::embed_tokens`] cannot
    /// take: empty, longer than the context, or with ids outside the
    /// vocabulary.
    pub fn check_embedding_inputs(
        &self,
        inputs: &[Vec<TokenId>],
        options: &EmbedOptions,
    ) -> Result<(), EmbedError> {
        let ctx_size = self.input_limit(options);
        let n_vocab = self.model().config().n_vocab;
        for (index, tokens) in inputs.iter().enumerate() {
            if tokens.is_empty() {
                return Err(EmbedError::EmptyInput { index });
            }
            if tokens.len() > ctx_size {
                return Err(EmbedError::InputTooLong {
                    index,
                    tokens: tokens.len(),
                    ctx_size,
                });
            }
            if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(EmbedError::TokenOutOfRange {
                    index,
                    token,
                    n_vocab,
                });
            }
        }
        Ok(())
    }

    /// Embeds inputs given as tokens: packs them into passes of up to
    /// `options.batch_tokens` tokens, runs each pass once through the model
    /// ([`crate::model::Model::forward_hidden`]), and pools each input.
    pub fn embed_tokens(
        &self,
        inputs: &[Vec<TokenId>],
        options: &EmbedOptions,
    ) -> Result<Vec<Embedding>, EmbedError> {
        self.check_embedding_inputs(inputs, options)?;
        let model = self.model();
        let c = model.config();
        let mut out = Vec::with_capacity(inputs.len());
        let mut scratch = ForwardScratch::default();
        let lengths: Vec<usize> = inputs.iter().map(Vec::len).collect();
        for pass in passes(&lengths, options.batch_tokens) {
            let inputs = &inputs[pass];
            // Each input is a sequence of its own from position 0, with
            // scratch keys and values for this pass only: F32, the exact
            // path (llama.cpp's encoders keep no cache and attend in f32).
            let mut caches: Vec<_> = inputs
                .iter()
                .map(|t| model.new_cache(KvType::F32, t.len()))
                .collect();
            let mut segments: Vec<Segment<'_>> = inputs
                .iter()
                .zip(&mut caches)
                .map(|(tokens, cache)| Segment {
                    cache,
                    tokens,
                    pos0: 0,
                    logits: Logits::None,
                })
                .collect();
            let n_tokens: usize = inputs.iter().map(Vec::len).sum();
            let pool = if n_tokens > 1 {
                self.batch_pool()
            } else {
                self.pool()
            };
            let hidden = model.forward_hidden(pool, &mut segments, &mut scratch, None)?;
            let mut start = 0;
            for tokens in inputs {
                let rows = &hidden[start * c.n_embd..(start + tokens.len()) * c.n_embd];
                start += tokens.len();
                let mut vector = c.pooling.pool(rows, c.n_embd);
                if options.normalize {
                    l2_normalize(&mut vector);
                }
                out.push(Embedding {
                    vector,
                    n_tokens: tokens.len(),
                });
            }
        }
        Ok(out)
    }
}

/// Groups inputs (by their token counts) into forward passes, in order: as
/// many as fit in `batch_tokens`, and an input longer than that alone.
fn passes(lengths: &[usize], batch_tokens: usize) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut tokens = 0;
    for (i, &len) in lengths.iter().enumerate() {
        match out.last_mut() {
            Some(pass) if tokens + len <= batch_tokens => {
                pass.end = i + 1;
                tokens += len;
            }
            _ => {
                out.push(i..i + 1);
                tokens = len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_take_what_fits_and_long_inputs_alone() {
        assert_eq!(passes(&[5, 16, 34, 10], 64), [0..3, 3..4]);
        assert_eq!(passes(&[5, 16, 34, 10], 21), [0..2, 2..3, 3..4]);
        assert_eq!(passes(&[5, 16, 34, 10], 1), [0..1, 1..2, 2..3, 3..4]);
        assert_eq!(passes(&[100, 1, 1], 10), [0..1, 1..3]);
        assert_eq!(passes(&[], 10), Vec::<Range<usize>>::new());
    }

    #[test]
    fn cosine_similarity_of_known_vectors() {
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[0.0, 2.0]), Ok(0.0));
        assert_eq!(cosine_similarity(&[1.0, 1.0], &[3.0, 3.0]), Ok(1.0));
        assert_eq!(cosine_similarity(&[1.0, 2.0], &[-1.0, -2.0]), Ok(-1.0));
        let c = cosine_similarity(&[1.0, 0.0], &[1.0, 1.0]).unwrap();
        assert!((c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7, "{c}");
    }

    #[test]
    fn cosine_similarity_refuses_what_has_no_angle() {
        assert_eq!(
            cosine_similarity(&[1.0, 2.0], &[1.0]),
            Err(SimilarityError::LengthMismatch(2, 1))
        );
        assert_eq!(
            cosine_similarity(&[0.0, 0.0], &[1.0, 1.0]),
            Err(SimilarityError::ZeroVector(0))
        );
        assert_eq!(
            cosine_similarity(&[], &[]),
            Err(SimilarityError::ZeroVector(0))
        );
        assert_eq!(
            cosine_similarity(&[1.0, 1.0], &[f32::NAN, 1.0]),
            Err(SimilarityError::NotFinite(1))
        );
    }

    #[test]
    fn l2_normalize_gives_unit_length_and_keeps_zero() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }
}
