//! Pre-tokenizers: how BPE vocabularies cut text into words before merging,
//! exactly as llama.cpp's `unicode_regex_split` does for each
//! `LLAMA_VOCAB_PRE_TYPE_*`.
//!
//! llama.cpp describes each pre-tokenizer as a list of regexes applied one
//! after the other (`llm_tokenizer_bpe`'s constructor); each regex splits every
//! piece left by the previous ones into its matches and the gaps between them.
//! A few regexes have hand-written splitters (`unicode_regex_split_custom_gpt2`,
//! `…_llama3`); the rest run through `std::regex` over a "collapsed" text. Here
//! every regex is a [`Pass`], a small matcher over code points that reproduces
//! what llama.cpp's regex engine returns, quirks included:
//!
//! - `\s` is llama.cpp's whitespace set (`unicode.rs`): non-ASCII whitespace
//!   becomes `\v` before `std::regex` sees it, so it also drops out of any
//!   explicit character range (U+3000 is not in deepseek's `[ࠀ-一]`);
//! - regex alternation takes the first alternative that matches, not the longest;
//! - text between matches becomes pieces of its own.

use super::TokenizerError;
use super::unicode::CpFlags;
use std::ops::Range;
use std::sync::OnceLock;

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`, for the kinds implemented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PreType {
    /// No `tokenizer.ggml.pre` key (gpt-neox, aquila) or `default`.
    Default,
    /// Llama 3: the llama3 regex, and whole words that are tokens skip merging.
    Llama3,
    /// dbrx, smaug: the llama3 regex, merging always.
    Llama3Merging,
    Qwen2,
    Qwen35,
    DeepseekLlm,
    DeepseekCoder,
    Falcon,
    Gpt2,
    /// starcoder, refact, command-r and friends: every digit alone, then GPT-2.
    Starcoder,
    /// Gemma 4: spaces are `▁`, words are lines (no GPT-2 byte encoding).
    Gemma4,
}

impl PreType {
    /// Maps a `tokenizer.ggml.pre` value the way `llama_vocab::impl::load` does.
    /// `None` (the key is absent) means llama.cpp's `default`.
    pub(super) fn from_name(name: Option<&str>) -> Result<Self, TokenizerError> {
        let Some(name) = name else {
            return Ok(Self::Default);
        };
        Ok(match name {
            "default" => Self::Default,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => Self::Llama3,
            "dbrx" | "smaug-bpe" => Self::Llama3Merging,
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2"
            | "hunyuan" | "solar-open" | "grok-2" => Self::Qwen2,
            "qwen35" => Self::Qwen35,
            "deepseek-llm" => Self::DeepseekLlm,
            "deepseek-coder" => Self::DeepseekCoder,
            "falcon" => Self::Falcon,
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "trillion" | "granite-docling" | "exaone4" | "jina-v1-en" | "jina-v2-code"
            | "roberta-bpe" => Self::Gpt2,
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => Self::Starcoder,
            "gemma4" | "granite-embed-multi-311m" => Self::Gemma4,
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        })
    }

    /// llama.cpp's `ignore_merges`: a word that is itself a token is emitted
    /// whole, without running the merges.
    pub(super) fn ignore_merges(self) -> bool {
        self == Self::Llama3
    }

    /// The regex list of `llm_tokenizer_bpe`'s constructor, as passes.
    pub(super) fn passes(self) -> &'static [Pass] {
        use Pass::*;
        const LLAMA3: Pass = Llama3 {
            max_digits: 3,
            marks: false,
        };
        match self {
            Self::Default => &[
                Runs(Set::DefaultPunctuation),
                Gpt2,
                Runs(Set::Number),
                ThreeAsciiDigits,
            ],
            Self::Llama3 | Self::Llama3Merging => &[LLAMA3],
            Self::Qwen2 => &[Llama3 {
                max_digits: 1,
                marks: false,
            }],
            Self::Qwen35 => &[Llama3 {
                max_digits: 1,
                marks: true,
            }],
            Self::DeepseekLlm => &[
                Each(Set::LineBreak),
                SpaceThenRuns(Set::DeepseekLetter),
                SpaceThenRuns(Set::DeepseekPunctuation),
                TrailingWhitespace,
                Runs(Set::Cjk),
                Runs(Set::Number),
            ],
            Self::DeepseekCoder => &[
                Each(Set::LineBreak),
                SpaceThenRuns(Set::Letter),
                SpaceThenRuns(Set::Punctuation),
                Runs(Set::Cjk),
                Each(Set::Number),
            ],
            Self::Falcon => &[Runs(Set::FalconPunctuation), Gpt2, ThreeAsciiDigits],
            Self::Gpt2 => &[Gpt2],
            Self::Starcoder => &[Each(Set::Number), Gpt2],
            Self::Gemma4 => &[Runs(Set::Newline)],
        }
    }
}

/// One regex of a pre-tokenizer's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// llama.cpp's hand-written GPT-2 splitter (`unicode_regex_split_custom_gpt2`):
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// The llama3 family (`unicode_regex_split_custom_llama3`, and qwen2's regex
    /// through `std::regex`):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|`
    /// ` ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    /// With `marks` (qwen35), `\p{L}+` is `[\p{L}\p{M}]+` and marks leave the
    /// punctuation class.
    Llama3 { max_digits: usize, marks: bool },
    /// `[set]+`: runs of the set, apart from what lies between them.
    Runs(Set),
    /// `[set]`: each member on its own.
    Each(Set),
    /// `\s?[set]+`: runs of the set, with one whitespace before them.
    SpaceThenRuns(Set),
    /// `\s+$`: the whitespace that ends a piece.
    TrailingWhitespace,
    /// `[0-9][0-9][0-9]`: ASCII digits three at a time, left to right.
    ThreeAsciiDigits,
}

/// A character class of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Set {
    /// `\n`
    Newline,
    /// `[\r\n]`
    LineBreak,
    /// `\p{N}`
    Number,
    /// `\p{L}`
    Letter,
    /// `\p{P}`
    Punctuation,
    /// `[\p{P}\$\+<=>\^~\|]`
    DefaultPunctuation,
    /// `[\p{P}\$\+<=>\^~\|`]`
    FalconPunctuation,
    /// deepseek-llm's explicit letter ranges
    DeepseekLetter,
    /// `[!-/:-~！-／：-～‘-‟　-。]`
    DeepseekPunctuation,
    /// `[一-龥ࠀ-一가-퟿]`
    Cjk,
}

/// Deepseek-llm's letters, `[A-Za-zµÀ-ÖØ-ö…𞤀-𞥃]`, as inclusive code point ranges.
/// Written as numbers: several of these characters (U+1F7D, U+1FBE, U+2126,
/// U+212A, …) have canonical equivalents that editors silently substitute.
#[rustfmt::skip]
const DEEPSEEK_LETTERS: &[(u32, u32)] = &[
    (0x0041, 0x005A), (0x0061, 0x007A), (0x00B5, 0x00B5), (0x00C0, 0x00D6),
    (0x00D8, 0x00F6), (0x00F8, 0x01BA), (0x01BC, 0x01BF), (0x01C4, 0x0293),
    (0x0295, 0x02AF), (0x0370, 0x0373), (0x0376, 0x0377), (0x037B, 0x037D),
    (0x037F, 0x037F), (0x0386, 0x0386), (0x0388, 0x038A), (0x038C, 0x038C),
    (0x038E, 0x03A1), (0x03A3, 0x03F5), (0x03F7, 0x0481), (0x048A, 0x052F),
    (0x0531, 0x0556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC),
    (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115),
    (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128),
    (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F),
    (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B),
    (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3), (0xA640, 0xA66D),
    (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E),
    (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
];

/// `[!-/:-~！-／：-～‘-‟　-。]`
const DEEPSEEK_PUNCTUATION: &[(u32, u32)] = &[
    (0x21, 0x2F),
    (0x3A, 0x7E),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF5E),
    (0x2018, 0x201F),
    (0x3000, 0x3002),
];

/// `[一-龥ࠀ-一가-퟿]` (sic: the second range starts at U+0800).
const CJK: &[(u32, u32)] = &[(0x4E00, 0x9FA5), (0x0800, 0x4E00), (0xAC00, 0xD7FF)];

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= cp && cp <= hi)
}

/// Deepseek's letter table is long; a 64 K-entry bitmap of the BMP answers
/// the common case in one lookup.
fn deepseek_letter(cp: u32) -> bool {
    static BMP: OnceLock<Vec<u64>> = OnceLock::new();
    if cp >= 0x10000 {
        return in_ranges(DEEPSEEK_LETTERS, cp);
    }
    let bits = BMP.get_or_init(|| {
        let mut bits = vec![0u64; 0x10000 / 64];
        for &(lo, hi) in DEEPSEEK_LETTERS.iter().filter(|r| r.0 < 0x10000) {
            for cp in lo..=hi {
                bits[cp as usize / 64] |= 1 << (cp % 64);
            }
        }
        bits
    });
    bits[cp as usize / 64] & (1 << (cp % 64)) != 0
}

/// The text as code points with their flags; passes work on index ranges of it.
struct CodePoints {
    chars: Vec<char>,
    flags: Vec<CpFlags>,
}

impl CodePoints {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let flags = chars.iter().map(|&c| CpFlags::of(c)).collect();
        Self { chars, flags }
    }
}

/// A view of one piece `[start, end)` of the text, which is all a regex sees
/// (llama.cpp runs each regex over each piece separately).
struct Piece<'a> {
    chars: &'a [char],
    flags: &'a [CpFlags],
    end: usize,
}

impl Piece<'_> {
    /// The flags at `i`, or none past the end of the piece.
    fn flags(&self, i: usize) -> CpFlags {
        if i < self.end {
            self.flags[i]
        } else {
            CpFlags::default()
        }
    }

    /// The character at `i`, if inside the piece.
    fn char(&self, i: usize) -> Option<char> {
        (i < self.end).then(|| self.chars[i])
    }

    fn is_space(&self, i: usize) -> bool {
        self.flags(i).is_whitespace()
    }

    fn is_line_break(&self, i: usize) -> bool {
        matches!(self.char(i), Some('\r' | '\n'))
    }

    fn contains(&self, set: Set, i: usize) -> bool {
        let Some(c) = self.char(i) else {
            return false;
        };
        let flags = self.flags[i];
        match set {
            Set::Newline => c == '\n',
            Set::LineBreak => c == '\r' || c == '\n',
            Set::Number => flags.is_number(),
            Set::Letter => flags.is_letter(),
            Set::Punctuation => flags.is_punctuation(),
            Set::DefaultPunctuation => {
                flags.is_punctuation() || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
            }
            Set::FalconPunctuation => {
                flags.is_punctuation()
                    || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|' | '`')
            }
            // Explicit ranges are matched by `std::wregex` against the text in
            // which llama.cpp replaced non-ASCII whitespace by `\v`.
            Set::DeepseekLetter => !flags.is_whitespace() && deepseek_letter(c as u32),
            Set::DeepseekPunctuation => {
                !flags.is_whitespace() && in_ranges(DEEPSEEK_PUNCTUATION, c as u32)
            }
            Set::Cjk => !flags.is_whitespace() && in_ranges(CJK, c as u32),
        }
    }

    /// The end of the run of `set` members starting at `i`.
    fn run_end(&self, set: Set, mut i: usize) -> usize {
        while self.contains(set, i) {
            i += 1;
        }
        i
    }
}

/// Cuts text into words with a list of passes.
#[derive(Debug, Clone)]
pub(super) struct PreTokenizer {
    passes: &'static [Pass],
}

impl PreTokenizer {
    pub(super) fn new(pre: PreType) -> Self {
        Self {
            passes: pre.passes(),
        }
    }

    /// Appends the byte ranges of `text`'s words to `words`, in order; together
    /// they cover `text`.
    pub(super) fn split(&self, text: &str, words: &mut Vec<Range<usize>>) {
        if text.is_empty() {
            return;
        }
        let cps = CodePoints::new(text);
        // Pieces are kept as their end indices (in code points).
        let mut ends = vec![cps.chars.len()];
        let mut next = Vec::with_capacity(ends.len());
        for &pass in self.passes {
            next.clear();
            let mut start = 0;
            for &end in &ends {
                let piece = Piece {
                    chars: &cps.chars,
                    flags: &cps.flags,
                    end,
                };
                run_pass(pass, &piece, start, &mut next);
                start = end;
            }
            std::mem::swap(&mut ends, &mut next);
        }
        // Code point indices to byte offsets.
        let mut byte = 0;
        let mut index = 0;
        let mut start_byte = 0;
        for end in ends {
            while index < end {
                byte += cps.chars[index].len_utf8();
                index += 1;
            }
            words.push(start_byte..byte);
            start_byte = byte;
        }
    }
}

/// Runs one pass over the piece `[start, piece.end)`, pushing the ends of the
/// pieces it makes.
fn run_pass(pass: Pass, piece: &Piece, start: usize, ends: &mut Vec<usize>) {
    match pass {
        Pass::Gpt2 => split_whole(piece, start, ends, |p| gpt2_word(piece, p)),
        Pass::Llama3 { max_digits, marks } => split_whole(piece, start, ends, |p| {
            llama3_word(piece, p, max_digits, marks)
        }),
        Pass::Runs(set) => split_matches(piece, start, ends, |p| {
            piece.contains(set, p).then(|| piece.run_end(set, p))
        }),
        Pass::Each(set) => split_matches(piece, start, ends, |p| {
            piece.contains(set, p).then_some(p + 1)
        }),
        Pass::SpaceThenRuns(set) => split_matches(piece, start, ends, |p| {
            // `\s?` is greedy: take the whitespace when a member follows it.
            if piece.is_space(p) && piece.contains(set, p + 1) {
                Some(piece.run_end(set, p + 1))
            } else if piece.contains(set, p) {
                Some(piece.run_end(set, p))
            } else {
                None
            }
        }),
        Pass::TrailingWhitespace => {
            let mut tail = piece.end;
            while tail > start && piece.is_space(tail - 1) {
                tail -= 1;
            }
            if tail > start {
                ends.push(tail);
            }
            if tail < piece.end {
                ends.push(piece.end);
            }
        }
        Pass::ThreeAsciiDigits => split_matches(piece, start, ends, |p| {
            let digit = |i| piece.char(i).is_some_and(|c: char| c.is_ascii_digit());
            (digit(p) && digit(p + 1) && digit(p + 2)).then_some(p + 3)
        }),
    }
}

/// For splitters that match at every position: `word(p)` is the end of the
/// word that starts at `p`.
fn split_whole(
    piece: &Piece,
    start: usize,
    ends: &mut Vec<usize>,
    mut word: impl FnMut(usize) -> usize,
) {
    let mut p = start;
    while p < piece.end {
        let end = word(p);
        debug_assert!(end > p && end <= piece.end);
        p = end.clamp(p + 1, piece.end);
        ends.push(p);
    }
}

/// For regexes searched left to right (`std::regex_iterator`): `find(p)` is the
/// end of the match starting at `p`, if one does. The text between matches
/// becomes pieces too.
fn split_matches(
    piece: &Piece,
    start: usize,
    ends: &mut Vec<usize>,
    mut find: impl FnMut(usize) -> Option<usize>,
) {
    let mut gap_start = start;
    let mut p = start;
    while p < piece.end {
        match find(p) {
            Some(end) if end > p => {
                if p > gap_start {
                    ends.push(p);
                }
                ends.push(end);
                p = end;
                gap_start = end;
            }
            _ => p += 1,
        }
    }
    if gap_start < piece.end {
        ends.push(piece.end);
    }
}

/// `unicode_regex_split_custom_gpt2`: the end of the word starting at `p`.
fn gpt2_word(piece: &Piece, p: usize) -> usize {
    let c = piece.chars[p];
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive here)
    if c == '\'' {
        match (piece.char(p + 1), piece.char(p + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return p + 2,
            (Some('r' | 'v'), Some('e')) | (Some('l'), Some('l')) => return p + 3,
            _ => {}
        }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the class is chosen by the
    // character after an optional space.
    let first = if c == ' ' { p + 1 } else { p };
    let class = piece.flags(first);
    let run = |is: &dyn Fn(CpFlags) -> bool| {
        let mut i = first;
        while is(piece.flags(i)) {
            i += 1;
        }
        i
    };
    if class.is_letter() {
        return run(&|f| f.is_letter());
    }
    if class.is_number() {
        return run(&|f| f.is_number());
    }
    let is_other = |f: CpFlags| {
        f != CpFlags::default() && !(f.is_whitespace() || f.is_letter() || f.is_number())
    };
    if is_other(class) {
        return run(&is_other);
    }
    whitespace_word(piece, p, false)
}

/// The whitespace alternatives shared by the splitters: `\s*[\r\n]+` (when
/// `line_breaks`), `\s+(?!\S)`, `\s+`; a lone non-matching character otherwise.
fn whitespace_word(piece: &Piece, p: usize, line_breaks: bool) -> usize {
    let mut end = p;
    let mut after_last_break = None;
    while piece.is_space(end) {
        if piece.is_line_break(end) {
            after_last_break = Some(end + 1);
        }
        end += 1;
    }
    if line_breaks && let Some(after) = after_last_break {
        // `\s*` backs off to the last line break, which `[\r\n]+` takes.
        return after;
    }
    let n = end - p;
    if n > 1 && end < piece.end {
        // `\s+(?!\S)`: leave the last space to the word that follows.
        return end - 1;
    }
    if n > 0 {
        return end;
    }
    p + 1
}

/// The llama3 family (see [`Pass::Llama3`]): the end of the word starting at `p`.
fn llama3_word(piece: &Piece, p: usize, max_digits: usize, marks: bool) -> usize {
    let c = piece.chars[p];
    let flags = piece.flags[p];
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\'' {
        let lower = |i| piece.char(i).map(|c: char| c.to_ascii_lowercase());
        match (lower(p + 1), lower(p + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return p + 2,
            (Some('r' | 'v'), Some('e')) | (Some('l'), Some('l')) => return p + 3,
            _ => {}
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+ (qwen35: [\p{L}\p{M}]+)
    let is_word = |f: CpFlags| f.is_letter() || (marks && f.is_mark());
    let word_run = |mut i: usize| {
        while is_word(piece.flags(i)) {
            i += 1;
        }
        i
    };
    let may_lead = !(c == '\r' || c == '\n' || flags.is_letter() || flags.is_number());
    if may_lead && is_word(piece.flags(p + 1)) {
        return word_run(p + 1);
    }
    if is_word(flags) {
        return word_run(p);
    }
    // \p{N}{1,max_digits}
    if flags.is_number() {
        let mut end = p + 1;
        while end - p < max_digits && piece.flags(end).is_number() {
            end += 1;
        }
        return end;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (qwen35 also leaves out \p{M})
    let is_other = |f: CpFlags| {
        f != CpFlags::default()
            && !(f.is_whitespace() || f.is_letter() || f.is_number() || (marks && f.is_mark()))
    };
    let first = if c == ' ' && is_other(piece.flags(p + 1)) {
        p + 1
    } else {
        p
    };
    if is_other(piece.flags(first)) {
        let mut end = first;
        while is_other(piece.flags(end)) {
            end += 1;
        }
        while piece.is_line_break(end) {
            end += 1;
        }
        return end;
    }
    whitespace_word(piece, p, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreType, text: &str) -> Vec<&str> {
        let mut ranges = Vec::new();
        PreTokenizer::new(pre).split(text, &mut ranges);
        let joined: String = ranges.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(joined, text, "words must cover the text");
        ranges.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        assert_eq!(
            PreType::from_name(Some("tekken-9000")),
            Err(TokenizerError::UnsupportedPreTokenizer(
                "tekken-9000".into()
            ))
        );
        assert_eq!(PreType::from_name(None), Ok(PreType::Default));
    }

    #[test]
    fn gpt2_contractions_letters_and_space_runs() {
        assert_eq!(
            words(PreType::Gpt2, "I'm   fine, they'LL go"),
            ["I", "'m", "  ", " fine", ",", " they", "'", "LL", " go"]
        );
        // Trailing whitespace stays together; a lone space before a word joins it.
        assert_eq!(
            words(PreType::Gpt2, "a \t\n b  "),
            ["a", " \t\n", " b", "  "]
        );
    }

    #[test]
    fn gpt2_digits_and_symbols() {
        assert_eq!(
            words(PreType::Gpt2, "x 12345 $$ 😀😀"),
            ["x", " 12345", " $$", " 😀😀"]
        );
    }

    #[test]
    fn llama3_digits_in_threes_and_newlines() {
        assert_eq!(words(PreType::Llama3, "1234567"), ["123", "456", "7"]);
        assert_eq!(words(PreType::Qwen2, "123"), ["1", "2", "3"]);
        assert_eq!(
            words(PreType::Llama3, "Hi!!\n\n  there  \n x"),
            ["Hi", "!!\n\n", " ", " there", "  \n", " x"]
        );
        assert_eq!(words(PreType::Llama3, "DON'T"), ["DON", "'T"]);
    }

    #[test]
    fn llama3_non_ascii_whitespace() {
        // U+3000 and U+00A0 are whitespace for llama.cpp and never lead a word.
        assert_eq!(
            words(PreType::Llama3, "a\u{3000}\u{3000}b"),
            ["a", "\u{3000}", "\u{3000}b"]
        );
        assert_eq!(words(PreType::Llama3, "1\u{A0}2"), ["1", "\u{A0}", "2"]);
    }

    #[test]
    fn emoji_with_zero_width_joiner() {
        // ZWJ is a format character (\p{C}): punctuation-like for every splitter.
        assert_eq!(
            words(PreType::Llama3, "👨\u{200D}👩 ok"),
            ["👨\u{200D}👩", " ok"]
        );
        assert_eq!(
            words(PreType::Gpt2, "👨\u{200D}👩 ok"),
            ["👨\u{200D}👩", " ok"]
        );
    }

    #[test]
    fn qwen35_marks_join_letters() {
        assert_eq!(
            words(PreType::Qwen35, "e\u{301}t\u{301} \u{301}"),
            ["e\u{301}t\u{301}", " \u{301}"]
        );
        assert_eq!(words(PreType::Qwen2, "e\u{301}t"), ["e", "\u{301}t"]);
    }

    #[test]
    fn starcoder_and_falcon_digits() {
        assert_eq!(
            words(PreType::Starcoder, "ab 123"),
            ["ab", " ", "1", "2", "3"]
        );
        assert_eq!(words(PreType::Falcon, " 1234567"), [" ", "123", "456", "7"]);
        assert_eq!(
            words(PreType::Default, "x=1234;"),
            ["x", "=", "123", "4", ";"]
        );
    }

    #[test]
    fn deepseek_llm_quirks() {
        // Trailing whitespace is cut off; U+3000 is whitespace, not punctuation.
        assert_eq!(
            words(PreType::DeepseekLlm, "Hi there \n"),
            ["Hi", " there", " ", "\n"]
        );
        assert_eq!(
            words(PreType::DeepseekLlm, "你好\u{3000}！"),
            ["你好", "\u{3000}！"]
        );
    }

    #[test]
    fn gemma4_lines() {
        assert_eq!(
            words(PreType::Gemma4, "a▁b\n\nc\n"),
            ["a▁b", "\n\n", "c", "\n"]
        );
    }
}
