//! The generation loop: prefill, then sample → stop checks → decode, one
//! token at a time, streaming text that never splits a UTF-8 character nor
//! shows any part of a stop string.

use super::logprobs::{TokenLogprob, token_logprob};
use super::sampling::{Sampler, SamplerConfig, SamplingError};
use super::session::Session;
use super::stop::StopStrings;
use crate::model::ModelError;
use crate::tokenizer::TokenId;
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
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
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
        let config = self.runner.model().config();
        if !config.output_head {
            return Err(GenerateError::EmbeddingModel { arch: config.arch });
        }
        options.sampler.validate()?;
        let ctx_size = self.options().ctx_size;
        if !options.context_shift && prompt_tokens + options.max_tokens > ctx_size {
            return Err(GenerateError::WouldOverflow {
                prompt: prompt_tokens,
                max_tokens: options.max_tokens,
                ctx_size,
            });
        }
        Ok(())
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
        let mut sampler = Sampler::new(options.sampler.clone())?;
        let runner = self.runner;
        let tokenizer = runner.tokenizer();
        let vocab = tokenizer.vocab();

        let (mut logits, cached_tokens) = self.prefill(prompt)?;
        let prefill_ms = ms_since(start);
        for &t in prompt {
            sampler.accept(t);
        }

        let mut decoder = tokenizer.stream_decoder(false, false);
        let mut stops = StopStrings::new(options.stop.clone());
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut logprobs = Vec::new();
        // How many of `logprobs` went out with a piece.
        let mut delivered = 0;
        let mut first_token_ms = None;
        let decode_start = Instant::now();
        let mut emit = |piece: &str,
                        text: &mut String,
                        logprobs: &[TokenLogprob],
                        delivered: &mut usize|
         -> bool {
            text.push_str(piece);
            if piece.is_empty() {
                return true;
            }
            let fresh = &logprobs[*delivered..];
            *delivered = logprobs.len();
            on_piece(Piece {
                text: piece,
                logprobs: fresh,
            })
        };
        let stop_reason = loop {
            if tokens.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            let timed = crate::profile::scope(|| "sampling".into());
            let token = sampler.sample(&logits)?;
            sampler.accept(token);
            drop(timed);
            first_token_ms.get_or_insert_with(|| ms_since(start));
            if !options.ignore_eos && vocab.is_eog(token) {
                break StopReason::EndOfGeneration;
            }
            if let Some(n) = options.top_logprobs {
                logprobs.push(token_logprob(&logits, token, n));
            }
            tokens.push(token);
            let out = stops.push(&decoder.push(token));
            if !emit(&out.emit, &mut text, &logprobs, &mut delivered) {
                break StopReason::Cancelled;
            }
            if out.stopped {
                break StopReason::StopString;
            }
            if tokens.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.tokens().len() >= ctx_size {
                if !options.context_shift {
                    return Err(GenerateError::ContextFull { ctx_size });
                }
                self.shift_context(1)?;
            }
            logits = self.step(token)?.to_vec();
        };
        if matches!(
            stop_reason,
            StopReason::MaxTokens | StopReason::EndOfGeneration
        ) {
            let rest = stops.push(&decoder.finish());
            let mut tail = rest.emit;
            if !rest.stopped {
                tail.push_str(&stops.finish());
            }
            emit(&tail, &mut text, &logprobs, &mut delivered);
        }
        if delivered < logprobs.len() && stop_reason != StopReason::Cancelled {
            // Tokens whose text was held back (or cut by a stop string).
            on_piece(Piece {
                text: "",
                logprobs: &logprobs[delivered..],
            });
        }
        let total_ms = ms_since(start);
        Ok(Generation {
            text,
            generated_tokens: tokens.len(),
            tokens,
            logprobs,
            prompt_tokens: prompt.len(),
            cached_tokens,
            stop_reason,
            prefill_ms,
            decode_ms: ms_since(decode_start),
            time_to_first_token_ms: first_token_ms.unwrap_or(total_ms),
            total_ms,
        })
    }
}
