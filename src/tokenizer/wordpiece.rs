//! WordPiece tokenization for BERT-family models (`tokenizer.ggml.model = bert`),
//! as llama.cpp's `llm_tokenizer_wpm_session` does it: normalize (accents
//! stripped through the first code point of NFD, lower case, control characters
//! dropped), split at whitespace, punctuation and CJK characters, then cover each
//! word greedily with the longest vocabulary pieces. Vocabulary pieces that start
//! a word carry the phantom space `▁`; a word with no full cover becomes UNK.

use super::unicode::{CpFlags, nfd_first, to_lower};
use super::vocab::{TokenId, Vocab};

#[derive(Debug, Clone)]
pub(super) struct WordPieceModel {
    /// Longest token text in bytes: the longest match worth trying.
    max_token_len: usize,
}

impl WordPieceModel {
    pub(super) fn new(vocab: &Vocab) -> Self {
        let max_token_len = vocab.tokens.iter().map(String::len).max().unwrap_or(0);
        Self { max_token_len }
    }

    pub(super) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<TokenId>) {
        for word in split_words(text) {
            let word = format!("▁{word}");
            let bytes = word.as_bytes();
            let first_token = out.len();
            let mut i = 0;
            while i < bytes.len() {
                let longest = (i + 1..=bytes.len().min(i + self.max_token_len))
                    .rev()
                    .find_map(|j| {
                        let piece = std::str::from_utf8(&bytes[i..j]).ok()?;
                        vocab.id(piece).map(|id| (id, j))
                    });
                match longest {
                    Some((id, j)) => {
                        out.push(id);
                        i = j;
                    }
                    None => {
                        out.truncate(first_token);
                        break;
                    }
                }
            }
            if out.len() == first_token {
                out.extend(vocab.special.unk);
            }
        }
    }
}

/// BERT's basic tokenizer as llama.cpp implements it (`preprocess`).
fn split_words(text: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    for c in text.chars() {
        let c = nfd_first(c);
        let flags = CpFlags::of(c);
        if flags.is_whitespace() {
            if !words.last().is_some_and(String::is_empty) {
                words.push(String::new());
            }
            continue;
        }
        if c == '\0' || c == '\u{FFFD}' || flags.is_control() {
            continue;
        }
        let lower = to_lower(c);
        let stands_alone =
            flags.is_punctuation() || (u32::from(c) < 0x7f && flags.is_symbol()) || is_cjk(c);
        let current = words.last_mut().expect("never empty");
        if stands_alone {
            if !current.is_empty() {
                words.push(String::new());
            }
            words.last_mut().expect("never empty").push(lower);
            words.push(String::new());
        } else {
            current.push(lower);
        }
    }
    if words.last().is_some_and(String::is_empty) {
        words.pop();
    }
    words
}

/// CJK ideographs, which BERT treats as words of their own. The 0x2B920 bound
/// (not 0x2B820) follows Hugging Face's tokenizers, as llama.cpp does.
fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}
