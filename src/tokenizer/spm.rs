//! SentencePiece-style tokenization (`tokenizer.ggml.model = llama`), as
//! llama.cpp's `llm_tokenizer_spm_session` does it:
//!
//! 1. split the (already `▁`-escaped) text into UTF-8 characters;
//! 2. repeatedly merge the adjacent pair whose concatenation is the vocabulary
//!    token with the highest score (ties: the leftmost pair);
//! 3. emit each final piece as its token, or, when a single character is not in
//!    the vocabulary, as byte tokens `<0xXX>` (byte fallback).

use super::vocab::{TokenId, Vocab};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A piece of the text: `text[start..start + len]`, linked to its neighbours.
/// A piece merged into its left neighbour has `len == 0`.
#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent pieces.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text, to detect stale candidates.
    len: usize,
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

pub(super) fn encode(vocab: &Vocab, text: &str, out: &mut Vec<TokenId>) {
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
                left,
                right,
                len: merged.len(),
            });
        }
    };
    for i in 1..pieces.len() {
        try_pair(&pieces, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(c) = queue.pop() {
        let (l, r) = (pieces[c.left], pieces[c.right]);
        // Skip candidates made stale by an earlier merge of either side.
        if l.len == 0 || r.len == 0 || l.len + r.len != c.len {
            continue;
        }
        pieces[c.left].len += r.len;
        pieces[c.left].next = r.next;
        pieces[c.right].len = 0;
        if let Some(next) = r.next {
            pieces[next].prev = Some(c.left);
        }
        try_pair(&pieces, &mut queue, pieces[c.left].prev, Some(c.left));
        try_pair(&pieces, &mut queue, Some(c.left), pieces[c.left].next);
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
