//! Chat templates: a conversation (`Message`s) → the prompt text a chat model
//! was trained on.
//!
//! A [`ChatTemplate`] is chosen once per model:
//!
//! - the model's own Jinja template (`tokenizer.chat_template`), run by
//!   `jinja.rs` the way Hugging Face renders it (`trim_blocks`,
//!   `lstrip_blocks`, Python string methods, `raise_exception`, `tojson`,
//!   `strftime_now`), with llama.cpp's system-role polyfill for templates
//!   that ignore or reject system messages;
//! - else a builtin format (`builtin.rs`) picked from the architecture and
//!   the vocabulary's special tokens, with llama.cpp's builtin renderings.
//!
//! ## BOS: added exactly once, by the tokenizer
//! Templates usually write `{{ bos_token }}` themselves. As llama.cpp does
//! (`common_chat_templates_apply`), [`ChatTemplate::render`] strips one
//! leading BOS text when the model's tokenizer adds BOS itself
//! ([`Tokenizer::adds_bos`]), and one trailing EOS text when it adds EOS;
//! builtins never write a leading BOS. So the caller always tokenizes the
//! rendered prompt with `encode(&text, add_special = true, parse_special =
//! true)`: BOS comes from the tokenizer when the model wants it, and a BOS
//! the template wrote for a model that does not auto-add one stays in the
//! text and becomes the control token through special parsing.

mod builtin;
mod jinja;
#[cfg(test)]
mod tests;

use crate::gguf::{GgufFile, MetadataError};
use crate::tokenizer::{Tokenizer, VocabKind};
use builtin::Builtin;
use jinja::JinjaTemplate;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One turn of a conversation. Roles are `system`, `user` and `assistant`;
/// other roles (`tool`, …) reach Jinja templates unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A chat template that could not be loaded or rendered.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChatError {
    /// The model's template is not valid Jinja (found when loading).
    #[error("the chat template does not parse: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`.
    #[error("the chat template refused the conversation: {0}")]
    Raised(String),
    /// Any other failure while rendering (a type error, an unknown filter, …).
    #[error("the chat template failed to render: {0}")]
    Render(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// What choosing and rendering a template needs to know about the model's
/// vocabulary; [`ChatTemplate::from_model`] fills it from a [`Tokenizer`].
pub struct ChatTokens<'a> {
    /// The BOS token's text (`<s>`, `<bos>`), empty when the vocabulary has none.
    pub bos: &'a str,
    /// The EOS token's text, empty when the vocabulary has none.
    pub eos: &'a str,
    /// Whether tokenizing with `add_special` adds BOS (then a leading BOS text is stripped).
    pub adds_bos: bool,
    /// Whether tokenizing with `add_special` adds EOS (then a trailing EOS text is stripped).
    pub adds_eos: bool,
    /// A SentencePiece vocabulary: Mistral's SPM formats put a space after
    /// `[INST]`, its Tekken (BPE) formats do not.
    pub sentencepiece: bool,
    /// Whether the vocabulary has a token with exactly this text.
    pub has_token: &'a dyn Fn(&str) -> bool,
}

enum Kind {
    Jinja(Box<JinjaTemplate>),
    Builtin(Builtin),
}

/// The prompt format of one model. See the module docs for how BOS is handled.
pub struct ChatTemplate {
    kind: Kind,
    bos: String,
    eos: String,
    adds_bos: bool,
    adds_eos: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("adds_bos", &self.adds_bos)
            .field("adds_eos", &self.adds_eos)
            .finish()
    }
}

impl ChatTemplate {
    /// Chooses the template for a model: `template` (the file's
    /// `tokenizer.chat_template`, or a user override) when present and not
    /// empty, else a builtin picked from `arch` and the vocabulary. A
    /// template whose whole text is a builtin name (`chatml`, …) selects that
    /// builtin, as llama.cpp's `--chat-template` does. A Jinja template that
    /// does not parse is an error here, not at the first render.
    pub fn new(
        template: Option<&str>,
        arch: &str,
        tokens: &ChatTokens<'_>,
    ) -> Result<Self, ChatError> {
        let template = template.filter(|t| !t.trim().is_empty());
        let kind = match template {
            Some(src) => match Builtin::from_name(src.trim(), tokens) {
                Some(b) => Kind::Builtin(b),
                None => Kind::Jinja(Box::new(JinjaTemplate::compile(
                    src, tokens.bos, tokens.eos,
                )?)),
            },
            None => Kind::Builtin(Builtin::select(arch, tokens)),
        };
        Ok(Self {
            kind,
            bos: tokens.bos.to_owned(),
            eos: tokens.eos.to_owned(),
            adds_bos: tokens.adds_bos,
            adds_eos: tokens.adds_eos,
        })
    }

    /// [`ChatTemplate::new`] with the BOS/EOS texts and token lookups of `tokenizer`.
    pub fn from_model(
        template: Option<&str>,
        arch: &str,
        tokenizer: &Tokenizer,
    ) -> Result<Self, ChatError> {
        let vocab = tokenizer.vocab();
        let text = |id: Option<u32>| id.and_then(|id| vocab.text(id)).unwrap_or("");
        let has_token = |t: &str| vocab.id(t).is_some();
        let tokens = ChatTokens {
            bos: text(vocab.special.bos),
            eos: text(vocab.special.eos),
            adds_bos: tokenizer.adds_bos(),
            adds_eos: vocab.special.add_eos && vocab.special.eos.is_some(),
            sentencepiece: vocab.kind == VocabKind::Spm,
            has_token: &has_token,
        };
        Self::new(template, arch, &tokens)
    }

    /// The template of a model file: its `tokenizer.chat_template`, else a
    /// builtin for its `general.architecture`.
    pub fn from_gguf(file: &GgufFile, tokenizer: &Tokenizer) -> Result<Self, ChatError> {
        let meta = file.metadata();
        let template = meta.str("tokenizer.chat_template")?;
        let arch = meta.str("general.architecture")?.unwrap_or("");
        Self::from_model(template, arch, tokenizer)
    }

    /// `jinja` for the model's own template, else the builtin's name:
    /// `gemma-turns`, `chatml`, `llama2-inst`, `llama3-headers`,
    /// `mistral-inst`, `phi3` or `plain`.
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Jinja(_) => "jinja",
            Kind::Builtin(b) => b.name(),
        }
    }

    /// Renders `messages` as prompt text; with `add_generation_prompt` the
    /// text ends with the opening of an assistant turn. Tokenize the result
    /// with `add_special = true, parse_special = true` (module docs).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// Whether the template renders tool definitions itself (a Jinja
    /// template that reads `tools`); builtins do not.
    pub fn renders_tools(&self) -> bool {
        matches!(&self.kind, Kind::Jinja(t) if t.uses_tools)
    }

    /// [`ChatTemplate::render`] with OpenAI's `tools` list as the template's
    /// `tools` variable (ignored by templates that do not read it: see
    /// [`ChatTemplate::renders_tools`]).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, ChatError> {
        let mut text = match &self.kind {
            Kind::Jinja(t) => {
                t.render(messages, add_generation_prompt, tools, &self.bos, &self.eos)?
            }
            Kind::Builtin(b) => b.render(messages, add_generation_prompt, &self.bos, &self.eos),
        };
        if self.adds_bos && !self.bos.is_empty() && text.starts_with(&self.bos) {
            text.drain(..self.bos.len());
        }
        if self.adds_eos && !self.eos.is_empty() && text.ends_with(&self.eos) {
            text.truncate(text.len() - self.eos.len());
        }
        Ok(text)
    }
}
