//! The generation loop: prefill, then sample → stop checks → decode, one
//! token at a time, streaming text that never splits a UTF-8 character nor
//! shows any part of a stop string.

use super::logprobs::{TokenLogprob, token_logprob};
use super::runner::Runner;
use super::sampling::{Sampler, SamplerConfig, SamplingError};
use super::session::Session;
use super::stop::StopStrings;
use crate::model::ModelError;
use crate::tokenizer::{StreamDecoder, TokenId, Tokenizer, Vocab};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use thiserror::Error;

/// What to generate and how to sample it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation ends when the text contains one of these (not shown).
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// When the context fills up, drop the older half of the conversation
    /// (after the first token) and go on, instead of failing.
    pub context_shift: bool,
    /// Record each generated token's log-probability with this many most
    /// likely alternatives (`Some(0)`: the token's own only); `None` skips
    /// the extra pass over the vocabulary.
    pub top_logprobs: Option<usize>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            ignore_eos: false,
            context_shift: false,
            top_logprobs: None,
        }
    }
}

impl GenerationOptions {
    /// Deterministic argmax decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            sampler: SamplerConfig {
                temperature: 0.0,
                ..SamplerConfig::default()
            },
            ..Self::default()
        }
    }
}

/// What [`Session::generate_pieces`] hands over as it goes.
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    /// New text (possibly empty).
    pub text: &'a str,
    /// Log-probabilities of the tokens behind it, when asked for.
    pub logprobs: &'a [TokenLogprob],
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// The outcome of one generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<TokenId>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the session's cache.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    /// One entry per generated token when `top_logprobs` was set, else empty.
    pub logprobs: Vec<TokenLogprob>,
    pub stop_reason: StopReason,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// From the call to the first generated token.
    pub time_to_first_token_ms: f64,
    pub total_ms: f64,
}

impl Generation {
    /// Prompt tokens per second (computed ones only).
    pub fn prefill_tokens_per_s(&self) -> f64 {
        let computed = self.prompt_tokens - self.cached_tokens;
        computed as f64 / (self.prefill_ms / 1e3).max(1e-9)
    }

    /// Generated tokens per second after the first (each needs one decode).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let decoded = self.generated_tokens.saturating_sub(1);
        decoded as f64 / (self.decode_ms / 1e3).max(1e-9)
    }
}

#[derive(Debug, Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt} tokens but the context holds {ctx_size} (raise --ctx-size)")]
    PromptTooLong { prompt: usize, ctx_size: usize },
    #[error(
        "{prompt} prompt tokens + {max_tokens} requested tokens exceed the context of {ctx_size} \
         (raise --ctx-size, lower --max-tokens, or allow --context-shift)"
    )]
    WouldOverflow {
        prompt: usize,
        max_tokens: usize,
        ctx_size: usize,
    },
    #[error("the context of {ctx_size} tokens is full")]
    ContextFull { ctx_size: usize },
    #[error(
        "this {arch} model is an embedding model: it computes embeddings (--embed, /v1/embeddings), not text"
    )]
    EmbeddingModel { arch: crate::model::Architecture },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),
    #[error("the engine stopped before the generation finished")]
    Stopped,
    #[error("the forward pass this request ran in failed: {0}")]
    BatchFailed(String),
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Refuses, before any work, a request a context of `ctx_size` cannot
/// complete: an embedding model, invalid sampler settings, or a prompt plus
/// `max_tokens` beyond the context (unless the options allow context
/// shifting).
pub(super) fn check_request(
    runner: &Runner,
    prompt_tokens: usize,
    options: &GenerationOptions,
    ctx_size: usize,
) -> Result<(), GenerateError> {
    let config = runner.model().config();
    if !config.output_head {
        return Err(GenerateError::EmbeddingModel { arch: config.arch });
    }
    options.sampler.validate()?;
    if !options.context_shift && prompt_tokens + options.max_tokens > ctx_size {
        return Err(GenerateError::WouldOverflow {
            prompt: prompt_tokens,
            max_tokens: options.max_tokens,
            ctx_size,
        });
    }
    Ok(())
}

/// What a sequence does after its logits were sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Run this token through the model and sample again.
    Feed(TokenId),
    /// Generation is over.
    Stop(StopReason),
}

/// One sequence's generation between forward passes: its sampler, the
/// streaming text decoder, stop strings and what it produced so far.
/// [`Session::generate_pieces`] drives one; the scheduler one per slot.
pub(super) struct Decoding<'r> {
    options: GenerationOptions,
    sampler: Sampler,
    decoder: StreamDecoder<'r>,
    stops: StopStrings,
    vocab: &'r Vocab,
    text: String,
    tokens: Vec<TokenId>,
    logprobs: Vec<TokenLogprob>,
    /// How many of `logprobs` went out with a piece.
    delivered: usize,
    prompt_tokens: usize,
    /// When the request arrived (time to first token counts from here).
    start: Instant,
    /// When the prompt's logits were ready.
    decode_start: Option<Instant>,
    first_token_ms: Option<f64>,
}

impl<'r> Decoding<'r> {
    /// A generation after `prompt` (the sampler sees the prompt's tokens, for
    /// its penalties) that arrived at `start`.
    pub(super) fn new(
        tokenizer: &'r Tokenizer,
        prompt: &[TokenId],
        options: &GenerationOptions,
        start: Instant,
    ) -> Result<Self, GenerateError> {
        let mut sampler = Sampler::new(options.sampler.clone())?;
        for &t in prompt {
            sampler.accept(t);
        }
        Ok(Self {
            options: options.clone(),
            sampler,
            decoder: tokenizer.stream_decoder(false, false),
            stops: StopStrings::new(options.stop.clone()),
            vocab: tokenizer.vocab(),
            text: String::new(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            delivered: 0,
            prompt_tokens: prompt.len(),
            start,
            decode_start: None,
            first_token_ms: None,
        })
    }

    /// Hands `piece` over with the log-probabilities not yet delivered;
    /// `false` when the caller asked to stop.
    fn emit(&mut self, piece: &str, on_piece: &mut dyn FnMut(Piece<'_>) -> bool) -> bool {
        self.text.push_str(piece);
        if piece.is_empty() {
            return true;
        }
        let fresh = &self.logprobs[self.delivered..];
        self.delivered = self.logprobs.len();
        on_piece(Piece {
            text: piece,
            logprobs: fresh,
        })
    }

    /// Samples the next token from `logits`, checks it against the stop
    /// conditions and hands over the text it completes; says whether to run
    /// it through the model next.
    pub(super) fn advance(
        &mut self,
        logits: &[f32],
        on_piece: &mut dyn FnMut(Piece<'_>) -> bool,
    ) -> Result<Next, GenerateError> {
        self.decode_start.get_or_insert_with(Instant::now);
        if self.tokens.len() >= self.options.max_tokens {
            return Ok(Next::Stop(StopReason::MaxTokens));
        }
        let timed = crate::profile::scope(|| "sampling".into());
        let token = self.sampler.sample(logits)?;
        self.sampler.accept(token);
        drop(timed);
        self.first_token_ms
            .get_or_insert_with(|| ms_since(self.start));
        if !self.options.ignore_eos && self.vocab.is_eog(token) {
            return Ok(Next::Stop(StopReason::EndOfGeneration));
        }
        if let Some(n) = self.options.top_logprobs {
            self.logprobs.push(token_logprob(logits, token, n));
        }
        self.tokens.push(token);
        let out = self.stops.push(&self.decoder.push(token));
        if !self.emit(&out.emit, on_piece) {
            return Ok(Next::Stop(StopReason::Cancelled));
        }
        if out.stopped {
            return Ok(Next::Stop(StopReason::StopString));
        }
        if self.tokens.len() >= self.options.max_tokens {
            return Ok(Next::Stop(StopReason::MaxTokens));
        }
        Ok(Next::Feed(token))
    }

    /// Tokens generated so far.
    pub(super) fn generated(&self) -> usize {
        self.tokens.len()
    }

    pub(super) fn options(&self) -> &GenerationOptions {
        &self.options
    }

    /// From the request's arrival to its first sampled token, once there is one.
    pub(super) fn time_to_first_token_ms(&self) -> Option<f64> {
        self.first_token_ms
    }

    /// Ends the generation: hands over the text held back (unless it was
    /// cut by a stop string or cancelled) and the log-probabilities not yet
    /// delivered, and sums it up.
    pub(super) fn finish(
        mut self,
        stop_reason: StopReason,
        on_piece: &mut dyn FnMut(Piece<'_>) -> bool,
        cached_tokens: usize,
        prefill_ms: f64,
    ) -> Generation {
        if matches!(
            stop_reason,
            StopReason::MaxTokens | StopReason::EndOfGeneration
        ) {
            let rest = self.stops.push(&self.decoder.finish());
            let mut tail = rest.emit;
            if !rest.stopped {
                tail.push_str(&self.stops.finish());
            }
            self.emit(&tail, on_piece);
        }
        if self.delivered < self.logprobs.len() && stop_reason != StopReason::Cancelled {
            // Tokens whose text was held back (or cut by a stop string).
            on_piece(Piece {
                text: "",
                logprobs: &self.logprobs[self.delivered..],
            });
        }
        let total_ms = ms_since(self.start);
        Generation {
            text: self.text,
            generated_tokens: self.tokens.len(),
            tokens: self.tokens,
            logprobs: self.logprobs,
            prompt_tokens: self.prompt_tokens,
            cached_tokens,
            stop_reason,
            prefill_ms,
            decode_ms: self.decode_start.map_or(0.0, ms_since),
            time_to_first_token_ms: self.first_token_ms.unwrap_or(total_ms),
            total_ms,
        }
    }
}

impl Session<'_> {
    /// Refuses, before any work, a request this session cannot complete:
    /// an embedding model, invalid sampler settings, or a prompt plus
    /// `max_tokens` beyond the context (unless the options allow context
    /// shifting).
    pub fn check_request(
        &self,
        prompt_tokens: usize,
        options: &GenerationOptions,
    ) -> Result<(), GenerateError> {
        check_request(self.runner, prompt_tokens, options, self.options().ctx_size)
    }

    /// Generates a continuation of `prompt`, calling `on_text` with each
    /// piece of text; returning `false` from it stops generation.
    pub fn generate(
        &mut self,
        prompt: &[TokenId],
        options: &GenerationOptions,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, GenerateError> {
        self.generate_pieces(prompt, options, |piece| {
            piece.text.is_empty() || on_text(piece.text)
        })
    }

    /// [`Session::generate`] that also hands over, with each piece, the
    /// log-probabilities of the tokens sampled since the previous piece
    /// (text held back for stop strings delays them with it). Pieces may
    /// have empty text; the last one carries the remaining log-probabilities.
    pub fn generate_pieces(
        &mut self,
        prompt: &[TokenId],
        options: &GenerationOptions,
        mut on_piece: impl FnMut(Piece<'_>) -> bool,
    ) -> Result<Generation, GenerateError> {
        let start = Instant::now();
        let ctx_size = self.options().ctx_size;
        self.check_request(prompt.len(), options)?;
        let mut decoding = Decoding::new(self.runner.tokenizer(), prompt, options, start)?;
        let (mut logits, cached_tokens) = self.prefill(prompt)?;
        let prefill_ms = ms_since(start);
        let stop_reason = loop {
            let token = match decoding.advance(&logits, &mut on_piece)? {
                Next::Feed(token) => token,
                Next::Stop(reason) => break reason,
            };
            if self.tokens().len() >= ctx_size {
                if !options.context_shift {
                    return Err(GenerateError::ContextFull { ctx_size });
                }
                self.shift_context(1)?;
            }
            logits = self.step(token)?.to_vec();
        };
        Ok(decoding.finish(stop_reason, &mut on_piece, cached_tokens, prefill_ms))
    }
}
