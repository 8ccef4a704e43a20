//! Tokenizers built from GGUF metadata alone, matching llama.cpp token for token.
//!
//! `Tokenizer::encode` follows llama.cpp's `llama_vocab::impl::tokenize`: the
//! text is first partitioned around special-token texts (`partition.rs`), then
//! each plain-text fragment goes through the vocabulary's model:
//!
//! - `spm.rs`: SentencePiece-style merges by score with byte fallback (`llama`);
//! - `bpe.rs`: byte-level BPE with merge ranks after a regex-style
//!   pre-tokenizer (`gpt2`), and Gemma 4's BPE over raw UTF-8 (`gemma4`);
//! - `wordpiece.rs`: greedy longest-match WordPiece (`bert`).
//!
//! `decode.rs` turns ids back into bytes and text, including a streaming
//! decoder that never splits a UTF-8 character.

mod bpe;
mod decode;
mod partition;
mod pretokenizer;
mod spm;
mod unicode;
mod vocab;
mod wordpiece;

pub use decode::StreamDecoder;
pub use vocab::{SpecialTokens, TokenAttr, TokenId, Vocab, VocabKind};

use crate::gguf::{GgufFile, Metadata, MetadataError};
use partition::{Fragment, SpecialMatcher};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum TokenizerError {
    #[error("the file has no vocabulary (tokenizer.ggml.model / tokenizer.ggml.tokens missing)")]
    NoVocabulary,
    #[error(
        "tokenizer model {0:?} (tokenizer.ggml.model) is not supported; supported: llama, gpt2, gemma4, bert"
    )]
    UnsupportedModel(String),
    #[error(
        "pre-tokenizer {0:?} (tokenizer.ggml.pre) is not supported; re-convert the model or report it"
    )]
    UnsupportedPreTokenizer(String),
    #[error("metadata key {key:?} {problem}")]
    BadMetadata { key: String, problem: String },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl TokenizerError {
    pub(crate) fn bad(key: &str, problem: &str) -> Self {
        Self::BadMetadata {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The algorithm behind a vocabulary.
#[derive(Debug, Clone)]
enum Model {
    Spm(spm::SpmModel),
    Bpe(Box<bpe::BpeModel>),
    WordPiece(wordpiece::WordPieceModel),
}

/// A tokenizer for one model: encode text to ids and decode ids to text.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    specials: SpecialMatcher,
}

impl Tokenizer {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        Self::from_metadata(file.metadata())
    }

    pub fn from_metadata(meta: &Metadata) -> Result<Self, TokenizerError> {
        let vocab = Vocab::from_metadata(meta)?;
        let model = match vocab.kind {
            VocabKind::Spm => Model::Spm(spm::SpmModel::new(&vocab)),
            VocabKind::Bpe | VocabKind::Gemma4 => {
                Model::Bpe(Box::new(bpe::BpeModel::new(&vocab, meta)?))
            }
            VocabKind::WordPiece => Model::WordPiece(wordpiece::WordPieceModel::new(&vocab)),
        };
        let specials = SpecialMatcher::new(&vocab);
        Ok(Self {
            vocab,
            model,
            specials,
        })
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Whether `add_special` would add a BOS token (the model's metadata asks for it).
    pub fn adds_bos(&self) -> bool {
        self.vocab.special.add_bos && self.vocab.special.bos.is_some()
    }

    /// Encodes `text`. `add_special` adds BOS/EOS/SEP as the metadata asks;
    /// `parse_special` turns control-token text (`<start_of_turn>`) into the
    /// control token. User-defined tokens are always matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<TokenId> {
        let fragments = self.specials.partition(&self.vocab, text, parse_special);
        let special = &self.vocab.special;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && special.add_bos {
            out.extend(special.bos);
        }
        match &self.model {
            Model::Spm(m) => {
                // SentencePiece sees a leading space at the start and after each
                // special token, and spaces as `▁`.
                let mut after_special = true;
                for fragment in &fragments {
                    match *fragment {
                        Fragment::Text(ref range) => {
                            let piece = &text[range.clone()];
                            let mut escaped = String::with_capacity(piece.len() + 3);
                            if self.vocab.add_space_prefix && after_special {
                                escaped.push('▁');
                            }
                            for c in piece.chars() {
                                escaped.push(if c == ' ' { '▁' } else { c });
                            }
                            m.encode(&self.vocab, &escaped, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Model::Bpe(m) => self.each_fragment(text, &fragments, &mut out, |t, o| {
                m.encode(&self.vocab, t, o)
            }),
            Model::WordPiece(m) => self.each_fragment(text, &fragments, &mut out, |t, o| {
                m.encode(&self.vocab, t, o)
            }),
        }
        if add_special {
            if special.add_eos {
                out.extend(special.eos);
            }
            if special.add_sep {
                out.extend(special.sep);
            }
        }
        out
    }

    fn each_fragment(
        &self,
        text: &str,
        fragments: &[Fragment],
        out: &mut Vec<TokenId>,
        mut encode: impl FnMut(&str, &mut Vec<TokenId>),
    ) {
        for fragment in fragments {
            match *fragment {
                Fragment::Text(ref range) => encode(&text[range.clone()], out),
                Fragment::Token(id) => out.push(id),
            }
        }
    }

    /// The bytes a token stands for. Control tokens give their text only when
    /// `special` is set (as llama.cpp's `token_to_piece`).
    pub fn token_bytes(&self, id: TokenId, special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        decode::push_piece(self, id, special, &mut out);
        out
    }

    /// Decodes ids to text. The leading space SentencePiece adds is removed;
    /// bytes that do not form valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[TokenId], special: bool) -> String {
        decode::decode(self, ids, special)
    }

    /// A decoder that turns ids into text one at a time, for generation.
    /// `from_start`: the ids begin a sequence (see [`Tokenizer::decode`]).
    pub fn stream_decoder(&self, special: bool, from_start: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, special, from_start)
    }
}
