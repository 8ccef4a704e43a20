//! The Unicode facts the tokenizers need, as llama.cpp sees them
//! (`unicode.h`, `unicode.cpp`, `unicode-data.cpp`):
//!
//! - one category flag per code point (`\p{L}`, `\p{N}`, `\p{P}`, `\p{M}`, …),
//!   from the Unicode general category, grouped the way llama.cpp's
//!   `gen-unicode-data.py` groups them;
//! - llama.cpp's own whitespace set (`unicode_set_whitespace`: Unicode's
//!   `White_Space` property), which is what `\s` means in every pre-tokenizer;
//! - its NFD and lower-casing, which keep one code point per code point
//!   (WordPiece's normalization);
//! - GPT-2's byte ↔ unicode table (`unicode_byte_to_utf8_map`), which lets a
//!   byte-level vocabulary spell every byte as a printable character.
//!
//! llama.cpp runs most pre-tokenizer regexes over a "collapsed" text in which
//! every non-ASCII code point becomes one byte standing for its category (and
//! non-ASCII whitespace becomes `\v`); the ASCII class tables it substitutes
//! for `\p{L}`, `\p{N}`, `\p{P}` agree with the Unicode categories of the ASCII
//! characters, so the flags here serve both the collapsed regexes and the
//! hand-written splitters. (Only its `\p{S}` differs, leaving out `~`; no
//! pre-tokenizer implemented here uses `\p{S}`.)

use unicode_general_category::{GeneralCategory, get_general_category};

/// Category and whitespace flags of one code point (llama.cpp's `unicode_cpt_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CpFlags(u16);

impl CpFlags {
    /// Unassigned code point (`Cn`).
    pub const UNDEFINED: Self = Self(1 << 0);
    /// `\p{N}`
    pub const NUMBER: Self = Self(1 << 1);
    /// `\p{L}`
    pub const LETTER: Self = Self(1 << 2);
    /// `\p{Z}`
    pub const SEPARATOR: Self = Self(1 << 3);
    /// `\p{M}`
    pub const MARK: Self = Self(1 << 4);
    /// `\p{P}`
    pub const PUNCTUATION: Self = Self(1 << 5);
    /// `\p{S}`
    pub const SYMBOL: Self = Self(1 << 6);
    /// `\p{C}` other than `Cn`
    pub const CONTROL: Self = Self(1 << 7);
    /// `\s`: llama.cpp's whitespace set.
    pub const WHITESPACE: Self = Self(1 << 8);

    pub fn of(c: char) -> Self {
        let cp = c as u32;
        if cp < 128 {
            return ASCII_FLAGS[cp as usize];
        }
        let category = if assigned_after_llama_cpp_table(cp) {
            CpFlags::UNDEFINED
        } else {
            category_flag(get_general_category(c))
        };
        if is_whitespace(cp) {
            Self(category.0 | Self::WHITESPACE.0)
        } else {
            category
        }
    }

    pub fn has(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_whitespace(self) -> bool {
        self.has(Self::WHITESPACE)
    }

    pub fn is_letter(self) -> bool {
        self.has(Self::LETTER)
    }

    pub fn is_number(self) -> bool {
        self.has(Self::NUMBER)
    }

    pub fn is_mark(self) -> bool {
        self.has(Self::MARK)
    }

    pub fn is_punctuation(self) -> bool {
        self.has(Self::PUNCTUATION)
    }

    pub fn is_symbol(self) -> bool {
        self.has(Self::SYMBOL)
    }

    pub fn is_control(self) -> bool {
        self.has(Self::CONTROL)
    }
}

/// llama.cpp's NFD (`unicode_cpts_normalize_nfd`) maps each code point to the
/// first code point of its canonical decomposition: `é` → `e`, accents dropped.
pub(super) fn nfd_first(c: char) -> char {
    let mut first = None;
    unicode_normalization::char::decompose_canonical(c, |d| {
        first.get_or_insert(d);
    });
    first.unwrap_or(c)
}

/// llama.cpp's `unicode_tolower`: the first code point of the lower-case mapping.
pub(super) fn to_lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// llama.cpp's `unicode_set_whitespace`: `White_Space` from Unicode's PropList.txt.
fn is_whitespace(cp: u32) -> bool {
    matches!(
        cp,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// Code points that Unicode 16.0 assigned (as `unicode-general-category`
/// knows) but that llama.cpp's table, generated from Unicode 15.1, calls
/// unassigned. Outside these the two agree on every category llama.cpp uses.
#[rustfmt::skip]
const ASSIGNED_SINCE_15_1: &[(u32, u32)] = &[
    (0x0897, 0x0897), (0x1B4E, 0x1B4F), (0x1B7F, 0x1B7F), (0x1C89, 0x1C8A),
    (0x2427, 0x2429), (0x31E4, 0x31E5), (0xA7CB, 0xA7CD), (0xA7DA, 0xA7DC),
    (0x105C0, 0x105F3), (0x10D40, 0x10D65), (0x10D69, 0x10D85), (0x10D8E, 0x10D8F),
    (0x10EC2, 0x10EC4), (0x10EFC, 0x10EFC), (0x11380, 0x11389), (0x1138B, 0x1138B),
    (0x1138E, 0x1138E), (0x11390, 0x113B5), (0x113B7, 0x113C0), (0x113C2, 0x113C2),
    (0x113C5, 0x113C5), (0x113C7, 0x113CA), (0x113CC, 0x113D5), (0x113D7, 0x113D8),
    (0x113E1, 0x113E2), (0x116D0, 0x116E3), (0x11BC0, 0x11BE1), (0x11BF0, 0x11BF9),
    (0x11F5A, 0x11F5A), (0x13460, 0x143FA), (0x16100, 0x16139), (0x16D40, 0x16D79),
    (0x18CFF, 0x18CFF), (0x1CC00, 0x1CCF9), (0x1CD00, 0x1CEB3), (0x1E5D0, 0x1E5FA),
    (0x1E5FF, 0x1E5FF), (0x1F8B2, 0x1F8BB), (0x1F8C0, 0x1F8C1), (0x1FA89, 0x1FA89),
    (0x1FA8F, 0x1FA8F), (0x1FABE, 0x1FABE), (0x1FAC6, 0x1FAC6), (0x1FADC, 0x1FADC),
    (0x1FADF, 0x1FADF), (0x1FAE9, 0x1FAE9), (0x1FBCB, 0x1FBEF),
];

fn assigned_after_llama_cpp_table(cp: u32) -> bool {
    ASSIGNED_SINCE_15_1
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// How `gen-unicode-data.py` folds general categories into flags.
fn category_flag(category: GeneralCategory) -> CpFlags {
    use GeneralCategory as G;
    match category {
        G::Unassigned => CpFlags::UNDEFINED,
        G::Control | G::Format | G::PrivateUse | G::Surrogate => CpFlags::CONTROL,
        G::LowercaseLetter
        | G::ModifierLetter
        | G::OtherLetter
        | G::TitlecaseLetter
        | G::UppercaseLetter => CpFlags::LETTER,
        G::SpacingMark | G::EnclosingMark | G::NonspacingMark => CpFlags::MARK,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => CpFlags::NUMBER,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::ClosePunctuation
        | G::FinalPunctuation
        | G::InitialPunctuation
        | G::OtherPunctuation
        | G::OpenPunctuation => CpFlags::PUNCTUATION,
        G::CurrencySymbol | G::ModifierSymbol | G::MathSymbol | G::OtherSymbol => CpFlags::SYMBOL,
        G::LineSeparator | G::ParagraphSeparator | G::SpaceSeparator => CpFlags::SEPARATOR,
        // The enum is non-exhaustive; a future category is unknown here.
        _ => CpFlags::UNDEFINED,
    }
}

/// The flags of the 128 ASCII code points, computed at compile time.
static ASCII_FLAGS: [CpFlags; 128] = {
    let mut table = [CpFlags(0); 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        let flags = match b {
            b'0'..=b'9' => CpFlags::NUMBER.0,
            b'A'..=b'Z' | b'a'..=b'z' => CpFlags::LETTER.0,
            b' ' => CpFlags::SEPARATOR.0 | CpFlags::WHITESPACE.0,
            0x09..=0x0D => CpFlags::CONTROL.0 | CpFlags::WHITESPACE.0,
            0x00..=0x1F | 0x7F => CpFlags::CONTROL.0,
            b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~' => CpFlags::SYMBOL.0,
            _ => CpFlags::PUNCTUATION.0,
        };
        table[i] = CpFlags(flags);
        i += 1;
    }
    table
};

/// GPT-2's `bytes_to_unicode`: the printable bytes `!`..`~`, `¡`..`¬` and
/// `®`..`ÿ` stand for themselves; the other 68 bytes, in order, take the code
/// points from U+0100 up (llama.cpp's `unicode_byte_to_utf8_map`).
pub(super) const fn byte_to_char(b: u8) -> char {
    if is_printable_byte(b) {
        return b as char;
    }
    // Count the non-printable bytes before `b`.
    let mut n = 0u32;
    let mut i = 0u8;
    while i < b {
        if !is_printable_byte(i) {
            n += 1;
        }
        i += 1;
    }
    match char::from_u32(0x100 + n) {
        Some(c) => c,
        None => '\u{FFFD}',
    }
}

const fn is_printable_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The table `byte_to_char`, precomputed.
pub(super) static BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = byte_to_char(i as u8);
        i += 1;
    }
    table
};

/// The 68 bytes GPT-2 remaps, in order: byte `REMAPPED[n]` is U+0100 + n.
static REMAPPED: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if !is_printable_byte(b as u8) {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
};

/// The inverse of `byte_to_char` (llama.cpp's `unicode_utf8_to_byte`), or
/// `None` for a character that stands for no byte.
pub(super) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 && is_printable_byte(cp as u8) {
        return Some(cp as u8);
    }
    let n = cp.checked_sub(0x100)?;
    REMAPPED.get(n as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_map_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert!(seen.insert(c), "byte {b} maps to a taken char {c:?}");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'\t' as usize], 'ĉ');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        assert_eq!(char_to_byte('▁'), None);
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn whitespace_is_llama_cpp_set() {
        for c in [
            '\t', '\n', '\u{0B}', '\u{0C}', '\r', ' ', '\u{85}', '\u{A0}', '\u{3000}', '\u{2009}',
        ] {
            assert!(CpFlags::of(c).is_whitespace(), "{c:?}");
        }
        // Not whitespace for llama.cpp, though some regex engines say so.
        for c in ['\u{1C}', '\u{1F}', '\u{200B}', '\u{180E}', '\u{FEFF}'] {
            assert!(!CpFlags::of(c).is_whitespace(), "{c:?}");
        }
    }

    #[test]
    fn exception_table_matches_the_crate_version() {
        // ASSIGNED_SINCE_15_1 lists what Unicode 16.0 added; a newer crate
        // needs the later additions too.
        assert_eq!(unicode_general_category::UNICODE_VERSION, (16, 0, 0));
    }

    #[test]
    fn categories() {
        assert!(CpFlags::of('é').is_letter());
        assert!(CpFlags::of('我').is_letter());
        assert!(CpFlags::of('٣').is_number());
        assert!(CpFlags::of('½').is_number());
        assert!(CpFlags::of('\u{301}').is_mark());
        assert!(CpFlags::of('、').is_punctuation());
        assert!(CpFlags::of('~').has(CpFlags::SYMBOL));
        assert!(CpFlags::of('🦙').has(CpFlags::SYMBOL));
        assert!(CpFlags::of('\u{200D}').has(CpFlags::CONTROL));
        assert!(CpFlags::of('\u{E000}').has(CpFlags::CONTROL));
        assert!(CpFlags::of('\u{378}').has(CpFlags::UNDEFINED));
        assert!(!CpFlags::of('\u{A0}').is_letter());
        // Unicode 16 letters are unassigned in llama.cpp's Unicode 15.1 table.
        assert_eq!(CpFlags::of('\u{1C89}'), CpFlags::UNDEFINED);
        assert_eq!(CpFlags::of('\u{13460}'), CpFlags::UNDEFINED);
    }
}
