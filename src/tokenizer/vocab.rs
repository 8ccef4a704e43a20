//! The vocabulary as GGUF metadata describes it (`tokenizer.ggml.*`): token
//! texts, scores, attributes and the special-token ids, with llama.cpp's
//! defaults where a key is absent (`llama-vocab.cpp`, `llama_vocab::impl::load`).

use super::TokenizerError;
use crate::gguf::{Array, Metadata};
use rustc_hash::FxHashMap;

pub type TokenId = u32;

/// Token attributes, from `tokenizer.ggml.token_type` (llama.cpp's
/// `llama_token_type` values 1–6) plus llama.cpp's strip flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenAttr(u16);

impl TokenAttr {
    pub const UNDEFINED: Self = Self(0);
    pub const UNKNOWN: Self = Self(1 << 0);
    pub const UNUSED: Self = Self(1 << 1);
    pub const NORMAL: Self = Self(1 << 2);
    pub const CONTROL: Self = Self(1 << 3);
    pub const USER_DEFINED: Self = Self(1 << 4);
    pub const BYTE: Self = Self(1 << 5);
    /// Whitespace to the left of this special token is consumed with it.
    pub const LSTRIP: Self = Self(1 << 7);
    /// Whitespace to the right of this special token is consumed with it.
    pub const RSTRIP: Self = Self(1 << 8);

    fn from_token_type(t: i64) -> Self {
        match t {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        }
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

/// Which algorithm turns text into ids (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// `llama`: SentencePiece scores with byte fallback.
    Spm,
    /// `gpt2`: byte-level BPE with merges and a regex pre-tokenizer.
    Bpe,
    /// `gemma4`: BPE over raw UTF-8 with `▁` for spaces (no byte remapping).
    Gemma4,
    /// `bert`: WordPiece.
    WordPiece,
}

impl VocabKind {
    pub fn from_name(name: &str) -> Result<Self, TokenizerError> {
        Ok(match name {
            "llama" => Self::Spm,
            "gpt2" => Self::Bpe,
            "gemma4" => Self::Gemma4,
            "bert" => Self::WordPiece,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        })
    }
}

/// Special-token ids and the flags that govern how they are added.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    pub eot: Option<TokenId>,
    pub eom: Option<TokenId>,
    pub unk: Option<TokenId>,
    pub sep: Option<TokenId>,
    pub pad: Option<TokenId>,
    pub mask: Option<TokenId>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
}

#[derive(Debug, Clone)]
pub struct Vocab {
    pub kind: VocabKind,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<TokenAttr>,
    /// FxHash: token lookups are the tokenizers' inner loop, and SipHash's
    /// DoS resistance buys nothing for a vocabulary we load ourselves.
    pub token_to_id: FxHashMap<String, TokenId>,
    pub special: SpecialTokens,
    /// End-of-generation tokens: EOS, EOT, EOM and the known end markers.
    pub eog: Vec<TokenId>,
    /// SPM: prepend a space to the first text fragment.
    pub add_space_prefix: bool,
    /// Ids of tokens matched verbatim in text before the model runs (control,
    /// user-defined, unknown), longest text first.
    pub special_by_length: Vec<TokenId>,
}

/// Texts llama.cpp treats as end-of-generation wherever they occur in a vocabulary.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
];

/// Candidates for the EOT id when metadata does not name one.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

impl Vocab {
    pub fn from_metadata(meta: &Metadata) -> Result<Self, TokenizerError> {
        let model = meta
            .str("tokenizer.ggml.model")?
            .ok_or(TokenizerError::NoVocabulary)?;
        let kind = VocabKind::from_name(model)?;
        let tokens = match meta.array("tokenizer.ggml.tokens")? {
            Some(Array::String(t)) if !t.is_empty() => t.clone(),
            Some(_) => {
                return Err(TokenizerError::bad(
                    "tokenizer.ggml.tokens",
                    "must be a non-empty array of strings",
                ));
            }
            None => return Err(TokenizerError::NoVocabulary),
        };
        let n = tokens.len();
        if n > u32::MAX as usize / 2 {
            return Err(TokenizerError::bad(
                "tokenizer.ggml.tokens",
                "too many tokens",
            ));
        }
        let scores = match meta.array("tokenizer.ggml.scores")? {
            Some(Array::F32(s)) if s.len() == n => s.clone(),
            Some(_) => {
                return Err(TokenizerError::bad(
                    "tokenizer.ggml.scores",
                    &format!("must be {n} f32 values, one per token"),
                ));
            }
            None => vec![0.0; n],
        };
        let attrs = match meta.array("tokenizer.ggml.token_type")? {
            Some(Array::I32(t)) if t.len() == n => t
                .iter()
                .map(|&t| TokenAttr::from_token_type(t.into()))
                .collect(),
            Some(Array::U32(t)) if t.len() == n => t
                .iter()
                .map(|&t| TokenAttr::from_token_type(t.into()))
                .collect(),
            Some(_) => {
                return Err(TokenizerError::bad(
                    "tokenizer.ggml.token_type",
                    &format!("must be {n} integers, one per token"),
                ));
            }
            None => vec![TokenAttr::NORMAL; n],
        };
        let mut token_to_id = FxHashMap::with_capacity_and_hasher(n, Default::default());
        for (id, text) in tokens.iter().enumerate() {
            // On duplicate texts the last id wins, as in llama.cpp.
            token_to_id.insert(text.clone(), id as TokenId);
        }

        let mut vocab = Vocab {
            kind,
            tokens,
            scores,
            attrs,
            token_to_id,
            special: SpecialTokens::default(),
            eog: Vec::new(),
            add_space_prefix: false,
            special_by_length: Vec::new(),
        };
        vocab.load_special_tokens(meta)?;
        Ok(vocab)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn id(&self, text: &str) -> Option<TokenId> {
        self.token_to_id.get(text).copied()
    }

    pub fn text(&self, id: TokenId) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn attr(&self, id: TokenId) -> TokenAttr {
        self.attrs.get(id as usize).copied().unwrap_or_default()
    }

    pub fn is_eog(&self, id: TokenId) -> bool {
        self.eog.contains(&id)
    }

    fn load_special_tokens(&mut self, meta: &Metadata) -> Result<(), TokenizerError> {
        let n = self.len() as u64;
        // Defaults per tokenizer family, as llama.cpp sets them before reading keys.
        let mut s = match self.kind {
            VocabKind::Spm => SpecialTokens {
                bos: Some(1),
                eos: Some(2),
                unk: Some(0),
                add_bos: true,
                ..Default::default()
            },
            VocabKind::Bpe => SpecialTokens {
                bos: Some(11),
                eos: Some(11),
                ..Default::default()
            },
            // llama.cpp leaves Gemma 4's ids to the file and always adds BOS.
            VocabKind::Gemma4 => SpecialTokens {
                add_bos: true,
                ..Default::default()
            },
            VocabKind::WordPiece => SpecialTokens {
                bos: Some(101),
                unk: Some(100),
                sep: Some(102),
                pad: Some(0),
                mask: Some(103),
                add_bos: true,
                add_sep: true,
                ..Default::default()
            },
        };
        self.add_space_prefix = self.kind == VocabKind::Spm;
        // Pre-tokenizer-specific defaults, set by llama.cpp before the keys are read.
        let pre = meta.str("tokenizer.ggml.pre")?.unwrap_or("");
        if self.kind == VocabKind::Bpe {
            const ADD_BOS: &[&str] = &[
                "llama3",
                "llama-v3",
                "llama-bpe",
                "falcon3",
                "falcon-h1",
                "pixtral",
                "midm-2.0",
                "lfm2",
                "jina-v5-nano",
            ];
            s.add_bos |= ADD_BOS.contains(&pre);
            s.add_sep |= ["jina-v1-en", "jina-v2-code", "roberta-bpe"].contains(&pre);
        }

        let id_key = |key: &str, slot: &mut Option<TokenId>| -> Result<(), TokenizerError> {
            let full = format!("tokenizer.ggml.{key}");
            // Some converters write -1 (as i32) or u32::MAX for "none".
            match meta.get(&full) {
                None => {}
                Some(v) => match v.as_u64() {
                    Some(id) if id < n => *slot = Some(id as TokenId),
                    _ => *slot = None,
                },
            }
            Ok(())
        };
        id_key("bos_token_id", &mut s.bos)?;
        id_key("eos_token_id", &mut s.eos)?;
        id_key("eot_token_id", &mut s.eot)?;
        id_key("eom_token_id", &mut s.eom)?;
        id_key("unknown_token_id", &mut s.unk)?;
        id_key("seperator_token_id", &mut s.sep)?;
        id_key("padding_token_id", &mut s.pad)?;
        id_key("mask_token_id", &mut s.mask)?;
        if let Some(b) = meta.bool("tokenizer.ggml.add_bos_token")? {
            s.add_bos = b;
        }
        if let Some(b) = meta.bool("tokenizer.ggml.add_eos_token")? {
            s.add_eos = b;
        }
        if let Some(b) = meta.bool("tokenizer.ggml.add_sep_token")? {
            s.add_sep = b;
        }
        if let Some(b) = meta.bool("tokenizer.ggml.add_space_prefix")? {
            self.add_space_prefix = b;
        }
        if self.kind == VocabKind::Gemma4 {
            s.add_bos = true; // whatever the file says, as llama.cpp does
        }
        // Ids past the vocabulary (bad defaults for small vocabularies) mean "none".
        for slot in [
            &mut s.bos,
            &mut s.eos,
            &mut s.unk,
            &mut s.sep,
            &mut s.pad,
            &mut s.mask,
        ] {
            if slot.is_some_and(|id| u64::from(id) >= n) {
                *slot = None;
            }
        }

        if s.eot.is_none() {
            s.eot = EOT_TEXTS.iter().find_map(|t| self.id(t));
        }
        let mut eog: Vec<TokenId> = Vec::new();
        for text in EOG_TEXTS {
            if let Some(id) = self.id(text) {
                // llama.cpp makes every end marker a control token, which also
                // keeps it out of raw text when special parsing is off.
                if !self.attrs[id as usize].contains(TokenAttr::CONTROL) {
                    self.attrs[id as usize] = TokenAttr::CONTROL;
                }
                eog.push(id);
            }
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        self.eog = eog;
        self.special = s;

        let mut special: Vec<TokenId> = (0..self.len() as TokenId)
            .filter(|&id| {
                self.attr(id).contains(
                    TokenAttr::CONTROL
                        .with(TokenAttr::USER_DEFINED)
                        .with(TokenAttr::UNKNOWN),
                )
            })
            .collect();
        special.sort_by_key(|&id| std::cmp::Reverse(self.tokens[id as usize].len()));
        self.special_by_length = special;
        Ok(())
    }
}
