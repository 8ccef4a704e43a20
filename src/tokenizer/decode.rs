//! Ids back to bytes and text (llama.cpp's `token_to_piece` and `detokenize`).

use super::vocab::{TokenAttr, TokenId, VocabKind};
use super::{Tokenizer, bpe};

/// Appends the bytes of one token. Control and unknown tokens are hidden unless
/// `special`; user-defined tokens are their text; normal tokens are unescaped
/// (`▁` → space for SentencePiece and WordPiece, the byte map for BPE); byte
/// tokens `<0xXX>` are that byte.
pub(super) fn push_piece(tok: &Tokenizer, id: TokenId, special: bool, out: &mut Vec<u8>) {
    let vocab = &tok.vocab;
    let Some(text) = vocab.text(id) else {
        return;
    };
    let attr = vocab.attr(id);
    if attr.contains(TokenAttr::CONTROL.with(TokenAttr::UNKNOWN)) {
        if special {
            out.extend_from_slice(text.as_bytes());
        }
    } else if attr.contains(TokenAttr::USER_DEFINED) {
        out.extend_from_slice(text.as_bytes());
    } else if attr.contains(TokenAttr::BYTE) {
        out.extend(parse_byte_token(text));
    } else if attr.contains(TokenAttr::NORMAL) {
        match vocab.kind {
            VocabKind::Spm | VocabKind::WordPiece => {
                out.extend_from_slice(text.replace('▁', " ").as_bytes())
            }
            VocabKind::Bpe | VocabKind::Gemma4 => bpe::push_token_bytes(vocab, text, out),
        }
    }
    // Unused and undefined tokens decode to nothing, as in llama.cpp.
}

/// `<0x41>` → 0x41.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// Whether decoding from the start of a sequence drops the first space, which
/// the tokenizer itself added (SentencePiece's space prefix, WordPiece's `▁`).
fn strips_first_space(tok: &Tokenizer) -> bool {
    match tok.vocab.kind {
        VocabKind::Spm => tok.vocab.add_space_prefix,
        VocabKind::WordPiece => true,
        VocabKind::Bpe | VocabKind::Gemma4 => false,
    }
}

pub(super) fn decode(tok: &Tokenizer, ids: &[TokenId], special: bool) -> String {
    let mut bytes = Vec::with_capacity(ids.len() * 4);
    let mut strip = strips_first_space(tok);
    for &id in ids {
        let before = bytes.len();
        push_piece(tok, id, special, &mut bytes);
        if strip && bytes.len() > before {
            if bytes[before] == b' ' {
                bytes.remove(before);
            }
            strip = false;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Decodes generated ids one at a time. Text is released only in whole UTF-8
/// characters (a character split over several byte tokens waits for its last
/// byte); invalid bytes become U+FFFD exactly as a full decode would make them.
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    special: bool,
    strip_first_space: bool,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    /// `from_start`: the ids begin a sequence, so the tokenizer's own leading
    /// space is dropped as `decode` drops it. Pass false when continuing text.
    pub(super) fn new(tokenizer: &'t Tokenizer, special: bool, from_start: bool) -> Self {
        Self {
            tokenizer,
            special,
            strip_first_space: from_start && strips_first_space(tokenizer),
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: TokenId) -> String {
        let before = self.pending.len();
        push_piece(self.tokenizer, id, self.special, &mut self.pending);
        if self.strip_first_space && self.pending.len() > before {
            if self.pending[before] == b' ' {
                self.pending.remove(before);
            }
            self.strip_first_space = false;
        }
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    text.push_str(s);
                    self.pending.clear();
                    return text;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix up to valid_up_to is valid UTF-8.
                    text.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or(""));
                    match e.error_len() {
                        // An invalid sequence: one replacement character, as from_utf8_lossy.
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return text;
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left at the end of generation: an incomplete character
    /// becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}
