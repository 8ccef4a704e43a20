//! BPE with merge ranks, as llama.cpp's `llm_tokenizer_bpe_session::tokenize`
//! runs it, for two kinds of vocabularies:
//!
//! - `gpt2`: byte-level BPE. Each word from the pre-tokenizer is spelled
//!   with GPT-2's byte → character table (`unicode.rs`), so merging starts
//!   from one symbol per byte;
//! - `gemma4`: BPE over raw UTF-8. Spaces become `▁` first
//!   (`llama_escape_whitespace`), words are lines, and merging starts from one
//!   symbol per character.
//!
//! Merging repeatedly joins the adjacent pair with the lowest merge rank,
//! leftmost first on ties. A finished symbol that is not a token falls back
//! to byte tokens: GPT-2's one-character tokens for printable ASCII bytes, or
//! Gemma's `<0xXX>` tokens.
//!
//! Texts are interned as "pieces": a token id for a token's text, or an id
//! past the vocabulary for a merge operand that is no token. Merge ranks are
//! then looked up by a pair of piece ids, never by string.

use super::TokenizerError;
use super::pretokenizer::{PreTokenizer, PreType};
use super::unicode::{BYTE_TO_CHAR, char_to_byte};
use super::vocab::{TokenId, Vocab, VocabKind};
use crate::gguf::{Array, Metadata};
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

/// A text that merges can produce or consume (see the module comment).
type PieceId = u32;

/// A text with no piece id: it is not a token and no merge mentions it.
const NO_PIECE: PieceId = PieceId::MAX;

/// "No neighbour" in the symbol list.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Merge {
    rank: u32,
    /// The piece the two operands make together.
    merged: PieceId,
}

#[derive(Debug, Clone)]
pub(super) struct BpeModel {
    pre: PreTokenizer,
    /// Words that are tokens skip merging (llama.cpp's `ignore_merges`).
    ignore_merges: bool,
    /// GPT-2 byte encoding (`byte_encode`); off for Gemma 4, which also escapes spaces.
    byte_level: bool,
    n_vocab: u32,
    /// (left piece, right piece) → rank and result.
    merges: HashMap<u64, Merge, FastState>,
    /// Gemma 4: the piece of each character that is a piece on its own.
    char_pieces: HashMap<char, PieceId, FastState>,
    /// Byte-level: the piece of each byte's GPT-2 character.
    byte_pieces: [PieceId; 256],
    /// The token a byte falls back to when a finished symbol is no token.
    byte_tokens: [Option<TokenId>; 256],
}

impl BpeModel {
    pub(super) fn new(vocab: &Vocab, meta: &Metadata) -> Result<Self, TokenizerError> {
        const MERGES: &str = "tokenizer.ggml.merges";
        // Gemma 4's pre-tokenizer comes with its model, whatever the key says.
        let pre = match vocab.kind {
            VocabKind::Gemma4 => PreType::Gemma4,
            _ => PreType::from_name(meta.str("tokenizer.ggml.pre")?)?,
        };
        let merge_texts = match meta.array(MERGES)? {
            Some(Array::String(m)) => m.as_slice(),
            Some(_) => return Err(TokenizerError::bad(MERGES, "must be an array of strings")),
            None => return Err(TokenizerError::bad(MERGES, "is missing; BPE needs merges")),
        };
        if vocab.len() + merge_texts.len() >= NO_PIECE as usize {
            return Err(TokenizerError::bad(MERGES, "too many merges"));
        }
        let n_vocab = vocab.len() as u32;

        // Piece ids by text: tokens first (the last of duplicate texts wins, as
        // in `Vocab::token_to_id`), then merge operands that are no token. The
        // keys point into one buffer holding every token text: lookups then
        // touch compact memory, not a quarter million separate allocations.
        let arena = vocab.tokens.concat();
        let mut pieces: HashMap<&str, PieceId, FastState> =
            HashMap::with_capacity_and_hasher(vocab.len() + 1024, FastState::default());
        let mut at = 0;
        for (id, text) in vocab.tokens.iter().enumerate() {
            pieces.insert(&arena[at..at + text.len()], id as PieceId);
            at += text.len();
        }
        let mut next_extra = n_vocab;
        let mut merges: HashMap<u64, Merge, FastState> =
            HashMap::with_capacity_and_hasher(merge_texts.len(), FastState::default());
        // Merges whose result is no token yet; a later merge may name it.
        let mut unresolved = Vec::new();
        let mut joined = String::new();
        for (rank, text) in merge_texts.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; a merge
            // with no such space pairs two empty texts, which never occur.
            let Some((left, right)) = split_merge(text) else {
                continue;
            };
            let mut intern = |s| {
                *pieces.entry(s).or_insert_with(|| {
                    next_extra += 1;
                    next_extra - 1
                })
            };
            let key = pair_key(intern(left), intern(right));
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = pieces.get(joined.as_str()).copied();
            // The first rank of a repeated pair wins.
            if let Entry::Vacant(slot) = merges.entry(key) {
                slot.insert(Merge {
                    rank: rank as u32,
                    merged: merged.unwrap_or(NO_PIECE),
                });
                if merged.is_none() {
                    unresolved.push((key, rank));
                }
            }
        }
        if next_extra > n_vocab {
            for (key, rank) in unresolved {
                if let Some((left, right)) = split_merge(&merge_texts[rank])
                    && let Some(&merged) = pieces.get([left, right].concat().as_str())
                    && let Some(merge) = merges.get_mut(&key)
                {
                    merge.merged = merged;
                }
            }
        }

        let byte_level = pre != PreType::Gemma4;
        let mut byte_pieces = [NO_PIECE; 256];
        let mut byte_tokens = [None; 256];
        let mut char_pieces = HashMap::default();
        let mut buf = [0u8; 4];
        if byte_level {
            for b in 0..=255u8 {
                let text = BYTE_TO_CHAR[b as usize].encode_utf8(&mut buf);
                byte_pieces[b as usize] = pieces.get(&*text).copied().unwrap_or(NO_PIECE);
                // Only a printable ASCII byte spells a one-byte text; the single
                // bytes of a two-byte character name no token.
                if (0x21..=0x7E).contains(&b) {
                    byte_tokens[b as usize] = vocab.id(&*text);
                }
            }
        } else {
            for (&text, &piece) in &pieces {
                let mut chars = text.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    char_pieces.insert(c, piece);
                }
            }
            for b in 0..=255u8 {
                byte_tokens[b as usize] = vocab.id(&format!("<0x{b:02X}>"));
            }
        }

        Ok(Self {
            pre: PreTokenizer::new(pre),
            ignore_merges: pre.ignore_merges(),
            byte_level,
            n_vocab,
            merges,
            char_pieces,
            byte_pieces,
            byte_tokens,
        })
    }

    /// Encodes one plain-text fragment (special tokens are already split out).
    pub(super) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<TokenId>) {
        let escaped;
        let text = if self.byte_level {
            text
        } else {
            escaped = text.replace(' ', "▁");
            escaped.as_str()
        };
        let mut scratch = Scratch::default();
        let mut words = std::mem::take(&mut scratch.words);
        self.pre.split(text, &mut words);
        for word in &words {
            self.encode_word(vocab, &text[word.clone()], &mut scratch, out);
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &str, s: &mut Scratch, out: &mut Vec<TokenId>) {
        if self.ignore_merges {
            s.spelled.clear();
            s.spelled
                .extend(word.bytes().map(|b| BYTE_TO_CHAR[b as usize]));
            if let Some(id) = vocab.id(&s.spelled) {
                out.push(id);
                return;
            }
        }
        // Gemma 4 keeps a run of newlines whole when it is a token (llama.cpp PR 21343).
        if !self.byte_level
            && word.bytes().all(|b| b == b'\n')
            && let Some(id) = vocab.id(word)
        {
            out.push(id);
            return;
        }

        // One symbol per byte (byte-level) or per character.
        let symbols = &mut s.symbols;
        symbols.clear();
        if self.byte_level {
            symbols.extend(word.bytes().enumerate().map(|(i, b)| Symbol {
                start: i as u32,
                len: 1,
                piece: self.byte_pieces[b as usize],
                prev: NONE,
                next: NONE,
            }));
        } else {
            symbols.extend(word.char_indices().map(|(i, c)| Symbol {
                start: i as u32,
                len: c.len_utf8() as u32,
                piece: self.char_pieces.get(&c).copied().unwrap_or(NO_PIECE),
                prev: NONE,
                next: NONE,
            }));
        }
        let n = symbols.len() as u32;
        for (i, symbol) in symbols.iter_mut().enumerate() {
            let i = i as u32;
            symbol.prev = if i == 0 { NONE } else { i - 1 };
            symbol.next = if i + 1 == n { NONE } else { i + 1 };
        }

        let queue = &mut s.queue;
        queue.clear();
        for right in 1..n {
            self.push_pair(symbols, queue, right - 1, right);
        }
        while let Some(Reverse(pair)) = queue.pop() {
            let (left, right) = (pair.left as usize, pair.right as usize);
            let (l, r) = (symbols[left], symbols[right]);
            // Skip pairs one of whose symbols has changed since it was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
                continue;
            }
            symbols[left].len += r.len;
            symbols[left].piece = pair.merged;
            symbols[left].next = r.next;
            symbols[right].len = 0;
            if r.next != NONE {
                symbols[r.next as usize].prev = pair.left;
            }
            self.push_pair(symbols, queue, l.prev, pair.left);
            self.push_pair(symbols, queue, pair.left, r.next);
        }

        // Symbols only ever absorb their right neighbour, so the live ones are
        // in text order.
        for symbol in symbols.iter().filter(|s| s.len > 0) {
            if symbol.piece < self.n_vocab {
                out.push(symbol.piece);
            } else {
                let bytes =
                    &word.as_bytes()[symbol.start as usize..(symbol.start + symbol.len) as usize];
                out.extend(bytes.iter().filter_map(|&b| self.byte_tokens[b as usize]));
            }
        }
    }

    /// Queues the merge of symbols `left` and `right` if there is one
    /// (llama.cpp's `add_new_bigram`).
    fn push_pair(
        &self,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Reverse<Pair>>,
        left: u32,
        right: u32,
    ) {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (&symbols[left as usize], &symbols[right as usize]);
        if l.piece == NO_PIECE || r.piece == NO_PIECE {
            return;
        }
        if let Some(merge) = self.merges.get(&pair_key(l.piece, r.piece)) {
            queue.push(Reverse(Pair {
                rank: merge.rank,
                left,
                right,
                len: l.len + r.len,
                merged: merge.merged,
            }));
        }
    }
}

/// Appends the bytes a normal token's text stands for: GPT-2's character →
/// byte map (llama.cpp's `llama_decode_text`, including its `[UNK_BYTE_0x…]`
/// marker for characters outside the map), or for Gemma 4 the text itself with
/// `▁` read as a space.
pub(super) fn push_token_bytes(vocab: &Vocab, text: &str, out: &mut Vec<u8>) {
    if vocab.kind == VocabKind::Gemma4 {
        let mut pieces = text.split('▁');
        if let Some(first) = pieces.next() {
            out.extend_from_slice(first.as_bytes());
        }
        for piece in pieces {
            out.push(b' ');
            out.extend_from_slice(piece.as_bytes());
        }
        return;
    }
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// A symbol of the word being merged: a byte range of the word.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: u32,
    /// Bytes; 0 once merged into its left neighbour.
    len: u32,
    piece: PieceId,
    prev: u32,
    next: u32,
}

/// A queued merge. Ordered by rank, then by left position (llama.cpp's
/// `llm_bigram_bpe::comparator`); the queue pops the smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    rank: u32,
    left: u32,
    right: u32,
    /// Bytes of both symbols when queued; a mismatch later means stale.
    len: u32,
    merged: PieceId,
}

/// Buffers reused across the words of one fragment.
#[derive(Default)]
struct Scratch {
    words: Vec<Range<usize>>,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Pair>>,
    spelled: String,
}

/// The two texts of a `tokenizer.ggml.merges` entry, split at the first space
/// after the first byte (llama.cpp: `word.find(' ', 1)`).
fn split_merge(text: &str) -> Option<(&str, &str)> {
    let split = text.bytes().skip(1).position(|b| b == b' ')? + 1;
    Some((&text[..split], &text[split + 1..]))
}

fn pair_key(left: PieceId, right: PieceId) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// A fast multiplicative hasher (FxHash-style) for piece-id pairs and token
/// texts; the standard SipHash costs more than the merging it serves.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher(u64);

type FastState = BuildHasherDefault<FastHasher>;

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the best bits at the top; hash tables index by
        // the low ones.
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;

    /// A metadata set for a tiny byte-level vocabulary.
    fn meta(model: &str, pre: Option<&str>, tokens: &[&str], merges: &[&str]) -> Metadata {
        let mut m = Metadata::new();
        m.insert("tokenizer.ggml.model", Value::String(model.into()));
        if let Some(pre) = pre {
            m.insert("tokenizer.ggml.pre", Value::String(pre.into()));
        }
        let strings =
            |v: &[&str]| Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()));
        m.insert("tokenizer.ggml.tokens", strings(tokens));
        m.insert("tokenizer.ggml.merges", strings(merges));
        m
    }

    fn encode(meta: &Metadata, text: &str) -> Vec<TokenId> {
        let vocab = Vocab::from_metadata(meta).unwrap();
        let model = BpeModel::new(&vocab, meta).unwrap();
        let mut out = Vec::new();
        model.encode(&vocab, text, &mut out);
        out
    }

    #[test]
    fn merges_lowest_rank_first_then_leftmost() {
        // "aaa": (a,a) matches at 0 and 1; the leftmost wins, leaving "aa" "a".
        let m = meta(
            "gpt2",
            Some("gpt-2"),
            &["a", "aa", "b", "ab", "Ġ", "Ġa"],
            &["a a", "a b", "Ġ a"],
        );
        assert_eq!(encode(&m, "aaa"), [1, 0]);
        // (a,b) has a worse rank than (a,a): "aab" → "aa" "b".
        assert_eq!(encode(&m, "aab"), [1, 2]);
        assert_eq!(encode(&m, " a"), [5]);
    }

    #[test]
    fn unknown_symbols_fall_back_to_ascii_tokens() {
        // "é" spells as two GPT-2 characters with no tokens: dropped, as llama.cpp does.
        let m = meta("gpt2", Some("gpt-2"), &["x", "y"], &[]);
        assert_eq!(encode(&m, "xéy"), [0, 1]);
    }

    #[test]
    fn unknown_pre_tokenizer_is_named() {
        let m = meta("gpt2", Some("klingon"), &["a"], &[]);
        let vocab = Vocab::from_metadata(&m).unwrap();
        assert_eq!(
            BpeModel::new(&vocab, &m).unwrap_err(),
            TokenizerError::UnsupportedPreTokenizer("klingon".into())
        );
    }

    #[test]
    fn merges_between_non_tokens_still_rank() {
        // "c" is no token, but "b c" names it: it gets a piece id of its own,
        // the byte table finds it, and the merge makes the token "bc".
        let m = meta("gpt2", Some("gpt-2"), &["b", "bc", "d"], &["b c"]);
        assert_eq!(encode(&m, "bcd"), [1, 2]);
        // "xy" is no token, yet a later merge uses it: "xyz" still forms.
        let m = meta(
            "gpt2",
            Some("gpt-2"),
            &["x", "y", "z", "xyz"],
            &["x y", "xy z"],
        );
        assert_eq!(encode(&m, "xyz"), [3]);
    }

    #[test]
    fn gemma4_spaces_newlines_and_byte_fallback() {
        let mut tokens = vec!["<pad>", "a", "▁", "▁a", "\n", "\n\n"];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(String::as_str));
        let m = meta("gemma4", None, &tokens, &["▁ a"]);
        let byte = |b: u8| 6 + u32::from(b);
        assert_eq!(encode(&m, "a a\n\n"), [1, 3, 5]);
        // "\n\n\n" is no token: per character, "\n" each.
        assert_eq!(encode(&m, "\n\n\n"), [4, 4, 4]);
        // "é" is no token: its UTF-8 bytes.
        assert_eq!(encode(&m, "é"), [byte(0xC3), byte(0xA9)]);
    }

    #[test]
    fn token_bytes() {
        let m = meta("gpt2", Some("gpt-2"), &["a"], &[]);
        let vocab = Vocab::from_metadata(&m).unwrap();
        let mut out = Vec::new();
        push_token_bytes(&vocab, "ĠhelloĊ", &mut out);
        assert_eq!(out, b" hello\n");
        out.clear();
        push_token_bytes(&vocab, "a▁", &mut out);
        assert_eq!(out, b"a[UNK_BYTE_0xe29681a\xe2\x96\x81]");

        let m = meta("gemma4", None, &["a"], &[]);
        let vocab = Vocab::from_metadata(&m).unwrap();
        out.clear();
        push_token_bytes(&vocab, "▁hello▁▁", &mut out);
        assert_eq!(out, b" hello  ");
    }
}
