//! [`Session`]: one sequence's KV cache and the tokens in it. A new prompt
//! that starts with the cached tokens (the next turn of a chat) is prefilled
//! only from where it differs.

use super::generate::{GenerateError, GenerationOptions};
use super::runner::Runner;
use crate::model::{ActivationHook, ForwardScratch, KvCache, KvType, Logits};
use crate::tokenizer::TokenId;

/// Sizes of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Positions the KV cache holds.
    pub ctx_size: usize,
    /// Prompt tokens per forward pass (matrix × matrix batches).
    pub ubatch: usize,
    pub kv_type: KvType,
}

impl SessionOptions {
    /// The runner's default context, 512-token batches, F16 cache.
    pub fn new(runner: &Runner) -> Self {
        Self {
            ctx_size: runner.default_ctx_size(),
            ubatch: 512,
            kv_type: KvType::F16,
        }
    }

    /// A context just big enough for one generation (at least the default).
    pub fn for_generation(
        runner: &Runner,
        prompt_tokens: usize,
        options: &GenerationOptions,
    ) -> Self {
        let needed = prompt_tokens + options.max_tokens;
        let trained = runner.model().config().context_length;
        Self {
            ctx_size: runner.default_ctx_size().max(needed.min(trained)),
            ..Self::new(runner)
        }
    }
}

/// How many of `cached` tokens a new `prompt` can keep: their common
/// prefix, less one if that is the whole prompt (at least one token must
/// run to produce logits).
pub(super) fn reusable_prefix(cached: &[TokenId], prompt: &[TokenId]) -> usize {
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    common.min(prompt.len().saturating_sub(1))
}

/// A sequence being generated: its KV cache and the tokens it holds.
pub struct Session<'r> {
    pub(super) runner: &'r Runner,
    cache: KvCache,
    /// Tokens whose keys and values are in `cache`, in order.
    tokens: Vec<TokenId>,
    scratch: ForwardScratch,
    options: SessionOptions,
}

impl<'r> Session<'r> {
    pub fn new(runner: &'r Runner, options: SessionOptions) -> Self {
        let options = SessionOptions {
            ctx_size: options.ctx_size.max(1),
            ubatch: options.ubatch.max(1),
            ..options
        };
        Self {
            runner,
            cache: runner.model().new_cache(options.kv_type, options.ctx_size),
            tokens: Vec::new(),
            scratch: ForwardScratch::default(),
            options,
        }
    }

    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// Tokens currently in the KV cache.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Forgets everything (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.tokens.clear();
    }

    /// Makes the cache hold exactly `prompt` and returns the logits after its
    /// last token. Only the part after the longest prefix already cached is
    /// computed, in batches of `ubatch`. Returns how many tokens were reused.
    pub fn prefill(&mut self, prompt: &[TokenId]) -> Result<(Vec<f32>, usize), GenerateError> {
        self.prefill_with_hook(prompt, None)
    }

    /// [`Session::prefill`] with a hook receiving intermediate activations.
    pub fn prefill_with_hook(
        &mut self,
        prompt: &[TokenId],
        mut hook: Option<ActivationHook<'_>>,
    ) -> Result<(Vec<f32>, usize), GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.len() > self.options.ctx_size {
            return Err(GenerateError::PromptTooLong {
                prompt: prompt.len(),
                ctx_size: self.options.ctx_size,
            });
        }
        let reused = reusable_prefix(&self.tokens, prompt);
        self.tokens.truncate(reused);
        let model = self.runner.model();
        let mut logits = Vec::new();
        let chunks: Vec<&[TokenId]> = prompt[reused..].chunks(self.options.ubatch).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let pool = if chunk.len() > 1 {
                self.runner.batch_pool()
            } else {
                self.runner.pool()
            };
            let out = model.forward(
                pool,
                &mut self.cache,
                &mut self.scratch,
                chunk,
                self.tokens.len(),
                if last { Logits::Last } else { Logits::None },
                hook.as_deref_mut().map(|h| h as ActivationHook<'_>),
            )?;
            if last {
                logits = out.to_vec();
            }
            self.tokens.extend_from_slice(chunk);
        }
        Ok((logits, reused))
    }

    /// Appends one token and returns the logits that follow it.
    pub fn step(&mut self, token: TokenId) -> Result<&[f32], GenerateError> {
        if self.tokens.len() >= self.options.ctx_size {
            return Err(GenerateError::ContextFull {
                ctx_size: self.options.ctx_size,
            });
        }
        let logits = self.runner.model().forward(
            self.runner.pool(),
            &mut self.cache,
            &mut self.scratch,
            &[token],
            self.tokens.len(),
            Logits::Last,
            None,
        )?;
        self.tokens.push(token);
        Ok(logits)
    }

    /// Frees room in a full context by keeping the first `keep` tokens and
    /// the most recent half of the rest, then recomputing their cache (RoPE
    /// positions change, so cached keys cannot simply be moved). Returns the
    /// logits after the new last token.
    pub fn shift_context(&mut self, keep: usize) -> Result<Vec<f32>, GenerateError> {
        let keep = keep.min(self.tokens.len());
        let rest = &self.tokens[keep..];
        let mut kept: Vec<TokenId> = self.tokens[..keep].to_vec();
        kept.extend_from_slice(&rest[rest.len() / 2..]);
        self.tokens.clear();
        Ok(self.prefill(&kept)?.0)
    }
}
