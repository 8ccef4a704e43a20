//! SentencePiece-style tokenization (`tokenizer.ggml.model = llama`), as
//! llama.cpp's `llm_tokenizer_spm_session` does it:
//!
//! 1. split the (already `▁`-escaped) text into UTF-8 characters;
//! 2. repeatedly merge the adjacent pair whose concatenation is the vocabulary
//!    token with the highest score (ties: the leftmost pair);
//! 3. emit each final piece as its token, or, when a single character is not in
//!    the vocabulary, as byte tokens `<0xXX>` (byte fallback).
//!
//! llama.cpp runs step 2 over the whole text with one priority queue, which for
//! a long prompt is a heap of a million candidates and mostly cache misses. A
//! merge can only join two characters that stand next to each other inside some
//! vocabulary token, so wherever two neighbouring characters never do, no merge
//! can cross: the text is cut there and each chunk merged on its own. Within a
//! chunk the merge order (best score, then leftmost) is the global order
//! restricted to it, so the result is the same, token for token.

use super::vocab::{TokenId, Vocab};
use rustc_hash::FxHashSet;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Which neighbouring character pairs occur inside some token.
#[derive(Debug, Clone, Default)]
pub(super) struct SpmModel {
    joinable: FxHashSet<(char, char)>,
}

impl SpmModel {
    pub(super) fn new(vocab: &Vocab) -> Self {
        let mut joinable = FxHashSet::default();
        for token in &vocab.tokens {
            let mut chars = token.chars();
            if let Some(mut prev) = chars.next() {
                for c in chars {
                    joinable.insert((prev, c));
                    prev = c;
                }
            }
        }
        Self { joinable }
    }

    /// Encodes `text` (spaces already escaped as `▁`) chunk by chunk.
    pub(super) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<TokenId>) {
        let mut start = 0;
        let mut prev: Option<char> = None;
        for (at, c) in text.char_indices() {
            if let Some(p) = prev
                && !self.joinable.contains(&(p, c))
            {
                encode_chunk(vocab, &text[start..at], out);
                start = at;
            }
            prev = Some(c);
        }
        encode_chunk(vocab, &text[start..], out);
    }
}

/// A piece of the chunk: `text[start..start + len]`, linked to its neighbours.
/// A piece merged into its left neighbour has `len == 0`.
#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent pieces (16 bytes: the heap stays small).
struct Candidate {
    score: f32,
    left: u32,
    right: u32,
    /// Byte length of the merged text, to detect stale candidates.
    len: u32,
}

impl Ord for Candidate {
    /// Highest score first; on equal scores the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

fn encode_chunk(vocab: &Vocab, text: &str, out: &mut Vec<TokenId>) {
    let mut pieces: Vec<Piece> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        pieces.push(Piece {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    if let Some(last) = pieces.last_mut() {
        last.next = None;
    }

    let mut queue = BinaryHeap::new();
    let try_pair = |pieces: &[Piece],
                    queue: &mut BinaryHeap<Candidate>,
                    left: Option<usize>,
                    right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (pieces[left], pieces[right]);
        let merged = &text[l.start..r.start + r.len];
        if let Some(id) = vocab.id(merged) {
            queue.push(Candidate {
                score: vocab.scores[id as usize],
                left: left as u32,
                right: right as u32,
                len: merged.len() as u32,
            });
        }
    };
    for i in 1..pieces.len() {
        try_pair(&pieces, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(c) = queue.pop() {
        let (left, right) = (c.left as usize, c.right as usize);
        let (l, r) = (pieces[left], pieces[right]);
        // Skip candidates made stale by an earlier merge of either side.
        if l.len == 0 || r.len == 0 || l.len + r.len != c.len as usize {
            continue;
        }
        pieces[left].len += r.len;
        pieces[left].next = r.next;
        pieces[right].len = 0;
        if let Some(next) = r.next {
            pieces[next].prev = Some(left);
        }
        try_pair(&pieces, &mut queue, pieces[left].prev, Some(left));
        try_pair(&pieces, &mut queue, Some(left), pieces[left].next);
    }

    let mut at = if pieces.is_empty() { None } else { Some(0) };
    while let Some(i) = at {
        let p = pieces[i];
        let piece = &text[p.start..p.start + p.len];
        // Every merge produced a vocabulary token, so only single characters
        // can be missing: they fall back to byte tokens.
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => piece.bytes().for_each(|b| out.extend(byte_token(vocab, b))),
        }
        at = p.next;
    }
}

/// The token for one raw byte: `<0xXX>`, else the byte as a one-character token,
/// else UNK (llama.cpp's `byte_to_token`, which throws where we fall back to UNK).
pub(super) fn byte_token(vocab: &Vocab, byte: u8) -> Option<TokenId> {
    vocab
        .id(&format!("<0x{byte:02X}>"))
        .or_else(|| std::str::from_utf8(&[byte]).ok().and_then(|s| vocab.id(s)))
        .or(vocab.special.unk)
}
