//! PLACEHOLDER owned by the BPE helper: byte-level BPE (gpt2) and Gemma 4 BPE.

use super::TokenizerError;
use super::vocab::{TokenId, Vocab};
use crate::gguf::Metadata;

#[derive(Debug, Clone)]
pub(super) struct BpeModel {}

impl BpeModel {
    pub(super) fn new(_vocab: &Vocab, _meta: &Metadata) -> Result<Self, TokenizerError> {
        Err(TokenizerError::UnsupportedModel("gpt2".into()))
    }

    pub(super) fn encode(&self, _vocab: &Vocab, _text: &str, _out: &mut Vec<TokenId>) {}
}

/// Appends the bytes a BPE token's text stands for (GPT-2 unicode→byte map).
pub(super) fn push_token_bytes(_vocab: &Vocab, text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(text.as_bytes());
}
