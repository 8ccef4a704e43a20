//! Splitting text around special-token texts before the tokenizer model runs
//! (llama.cpp's `tokenizer_st_partition`).
//!
//! llama.cpp walks the special tokens longest first and splits every remaining
//! plain-text fragment at each non-overlapping occurrence, left to right. That
//! is quadratic in the number of special tokens (Gemma has thousands), so an
//! Aho-Corasick pass first finds which special texts occur at all; the exact
//! llama.cpp procedure then runs over just those.

use super::vocab::{TokenAttr, TokenId, Vocab};
use aho_corasick::AhoCorasick;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fragment {
    Text(Range<usize>),
    Token(TokenId),
}

#[derive(Debug, Clone)]
pub(super) struct SpecialMatcher {
    /// Matches any special-token text; pattern i is `ids[i]`.
    automaton: Option<AhoCorasick>,
    ids: Vec<TokenId>,
}

/// C's `isspace` in the C locale, which llama.cpp uses for lstrip/rstrip.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl SpecialMatcher {
    pub(super) fn new(vocab: &Vocab) -> Self {
        let ids: Vec<TokenId> = vocab
            .special_by_length
            .iter()
            .copied()
            .filter(|&id| !vocab.tokens[id as usize].is_empty())
            .collect();
        let automaton = if ids.is_empty() {
            None
        } else {
            // Building can only fail on absurd pattern sets; fall back to no matching
            // of special texts rather than failing the whole tokenizer.
            AhoCorasick::new(ids.iter().map(|&id| &vocab.tokens[id as usize])).ok()
        };
        Self { automaton, ids }
    }

    pub(super) fn partition(
        &self,
        vocab: &Vocab,
        text: &str,
        parse_special: bool,
    ) -> Vec<Fragment> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(0..text.len()));
        let Some(automaton) = &self.automaton else {
            return fragments;
        };
        // Which special tokens occur anywhere (overlaps included)?
        let mut present: Vec<usize> = automaton
            .find_overlapping_iter(text)
            .map(|m| m.pattern().as_usize())
            .collect();
        if present.is_empty() {
            return fragments;
        }
        // Pattern order is longest text first, as llama.cpp processes them.
        present.sort_unstable();
        present.dedup();
        let skipped = TokenAttr::CONTROL.with(TokenAttr::UNKNOWN);
        for index in present {
            let id = self.ids[index];
            let attr = vocab.attr(id);
            if !parse_special && attr.contains(skipped) {
                continue;
            }
            split_at_token(&mut fragments, text, &vocab.tokens[id as usize], id, attr);
        }
        fragments
    }
}

/// Replaces each text fragment that contains `needle` by the pieces around its
/// occurrences and the token itself, honouring the token's strip flags.
fn split_at_token(
    fragments: &mut Vec<Fragment>,
    text: &str,
    needle: &str,
    id: TokenId,
    attr: TokenAttr,
) {
    let bytes = text.as_bytes();
    let mut result = Vec::with_capacity(fragments.len() + 2);
    for fragment in fragments.drain(..) {
        let Fragment::Text(range) = fragment else {
            result.push(fragment);
            continue;
        };
        let mut start = range.start;
        let end = range.end;
        while let Some(pos) = text[start..end].find(needle) {
            let at = start + pos;
            let mut left_end = at;
            if attr.contains(TokenAttr::LSTRIP) {
                while left_end > start && is_c_space(bytes[left_end - 1]) {
                    left_end -= 1;
                }
            }
            if left_end > start {
                result.push(Fragment::Text(start..left_end));
            }
            result.push(Fragment::Token(id));
            start = at + needle.len();
            if attr.contains(TokenAttr::RSTRIP) {
                while start < end && is_c_space(bytes[start]) {
                    start += 1;
                }
            }
        }
        if start < end {
            result.push(Fragment::Text(start..end));
        }
    }
    *fragments = result;
}
