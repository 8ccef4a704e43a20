//! [`Runner`]: a loaded model with its tokenizer, chat template and worker
//! threads — the entry point of the library API.

use super::generate::{GenerateError, Generation, GenerationOptions};
use super::session::{Session, SessionOptions};
use crate::chat::{ChatTemplate, Message};
use crate::gguf::GgufFile;
use crate::kernels::{ThreadPool, kernels_checked};
use crate::model::{Model, ModelError};
use crate::tokenizer::{TokenId, Tokenizer};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads for decoding (one token at a time); default: physical cores.
    pub threads: usize,
    /// Threads for prompt processing (batches); default: `threads`.
    pub threads_batch: usize,
    /// Memory-map the file (default) rather than reading it into memory.
    pub mmap: bool,
    /// Lock the weights in RAM so the OS cannot page them out.
    pub mlock: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let threads = ThreadPool::default_threads();
        Self {
            threads,
            threads_batch: threads,
            mmap: true,
            mlock: false,
        }
    }
}

/// Why loading or running failed.
#[derive(Debug, Error)]
pub enum RunnerError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: crate::gguf::GgufError,
    },
    #[error("{path}: {source}")]
    Model { path: PathBuf, source: ModelError },
    #[error("{path}: tokenizer: {source}")]
    Tokenizer {
        path: PathBuf,
        source: crate::tokenizer::TokenizerError,
    },
    #[error("{path}: chat template: {source}")]
    Chat {
        path: PathBuf,
        source: crate::chat::ChatError,
    },
    #[error(transparent)]
    Simd(#[from] crate::kernels::SimdError),
    #[error("{path}: --mlock failed: {source} (raise `ulimit -l` or drop --mlock)")]
    Mlock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

/// A model ready to generate: weights, tokenizer, chat template, threads.
pub struct Runner {
    model: Model,
    tokenizer: Tokenizer,
    chat: ChatTemplate,
    pool: ThreadPool,
    batch_pool: Option<ThreadPool>,
    load_time: Duration,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("model", &self.model)
            .field("chat", &self.chat.name())
            .field("threads", &self.pool.threads())
            .finish()
    }
}

impl Runner {
    /// Loads the model at `path` with default options.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, RunnerError> {
        Self::load(path, &LoadOptions::default())
    }

    /// Loads the model at `path`: opens (maps or reads) the file, parses the
    /// config, checks every tensor, builds the tokenizer and chat template.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, RunnerError> {
        let start = Instant::now();
        let path = path.as_ref();
        let at = || path.to_path_buf();
        let file = if options.mmap {
            GgufFile::open(path)
        } else {
            GgufFile::read(path)
        }
        .map_err(|source| RunnerError::Open { path: at(), source })?;
        if options.mlock {
            file.lock_in_memory()
                .map_err(|source| RunnerError::Mlock { path: at(), source })?;
        }
        let tokenizer = Tokenizer::from_gguf(&file)
            .map_err(|source| RunnerError::Tokenizer { path: at(), source })?;
        let chat = ChatTemplate::from_gguf(&file, &tokenizer)
            .map_err(|source| RunnerError::Chat { path: at(), source })?;
        let model = Model::load(file, kernels_checked()?)
            .map_err(|source| RunnerError::Model { path: at(), source })?;
        let threads = options.threads.max(1);
        let batch_threads = options.threads_batch.max(1);
        Ok(Self {
            model,
            tokenizer,
            chat,
            pool: ThreadPool::new(threads),
            batch_pool: (batch_threads != threads).then(|| ThreadPool::new(batch_threads)),
            load_time: start.elapsed(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Time `load` took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The pool for single-token decoding.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// The pool for prompt batches.
    pub fn batch_pool(&self) -> &ThreadPool {
        self.batch_pool.as_ref().unwrap_or(&self.pool)
    }

    /// The default context size: the model's training context, capped at 4096.
    pub fn default_ctx_size(&self) -> usize {
        self.model.config().context_length.min(4096)
    }

    /// A new conversation with its own KV cache.
    pub fn session(&self, options: SessionOptions) -> Session<'_> {
        Session::new(self, options)
    }

    /// Tokens of a raw completion prompt (BOS added as the model asks).
    pub fn tokenize_prompt(&self, text: &str) -> Vec<TokenId> {
        self.tokenizer.encode(text, true, false)
    }

    /// Tokens of a chat rendered by the model's template, ending with the
    /// assistant's turn opened.
    pub fn tokenize_chat(&self, messages: &[Message]) -> Result<Vec<TokenId>, GenerateError> {
        self.tokenize_chat_with_tools(messages, None)
    }

    /// [`Runner::tokenize_chat`] with OpenAI's `tools` list given to the
    /// template (see [`ChatTemplate::render_with_tools`]).
    pub fn tokenize_chat_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<TokenId>, GenerateError> {
        let text = self.chat.render_with_tools(messages, true, tools)?;
        // The template leaves BOS to the tokenizer (see `crate::chat`).
        Ok(self.tokenizer.encode(&text, true, true))
    }

    /// Whether the model file ships its own chat template (instruction-tuned
    /// models); base models without one get plain completion by default.
    pub fn has_model_template(&self) -> bool {
        self.chat.name() == "jinja"
    }

    /// Completes `prompt` as plain text (no chat template).
    ///
    /// ```no_run
    /// use rusty_llm::engine::{GenerationOptions, Runner};
    /// let runner = Runner::from_path("models/gemma-3-270m-q4_k_m.gguf")?;
    /// let out = runner.generate("Once upon a time", &GenerationOptions::greedy(16))?;
    /// println!("{}", out.text);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn generate(
        &self,
        prompt: &str,
        options: &GenerationOptions,
    ) -> Result<Generation, GenerateError> {
        self.generate_streaming(prompt, options, |_| true)
    }

    /// [`Runner::generate`], calling `on_text` with each piece of text as it
    /// is produced; returning `false` stops generation.
    pub fn generate_streaming(
        &self,
        prompt: &str,
        options: &GenerationOptions,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, GenerateError> {
        let tokens = self.tokenize_prompt(prompt);
        let mut session = self.session(SessionOptions::for_generation(self, tokens.len(), options));
        session.generate(&tokens, options, on_text)
    }

    /// Answers a conversation through the model's chat template.
    pub fn generate_chat(
        &self,
        messages: &[Message],
        options: &GenerationOptions,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, GenerateError> {
        let tokens = self.tokenize_chat(messages)?;
        let mut session = self.session(SessionOptions::for_generation(self, tokens.len(), options));
        session.generate(&tokens, options, on_text)
    }
}
