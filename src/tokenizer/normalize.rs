//! Character properties for WordPiece normalization, as llama.cpp's tables
//! define them (`unicode.cpp`): its whitespace set, its NFD (the first code
//! point of the canonical decomposition) and its lower-casing (the first code
//! point of the lower-case mapping).

use unicode_general_category::{GeneralCategory, get_general_category};

/// The general-category groups llama.cpp's flags distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Category {
    Letter,
    Number,
    Mark,
    Punctuation,
    Symbol,
    Separator,
    Control,
}

pub(super) fn category(c: char) -> Category {
    use GeneralCategory::*;
    match get_general_category(c) {
        UppercaseLetter | LowercaseLetter | TitlecaseLetter | ModifierLetter | OtherLetter => {
            Category::Letter
        }
        DecimalNumber | LetterNumber | OtherNumber => Category::Number,
        NonspacingMark | SpacingMark | EnclosingMark => Category::Mark,
        ConnectorPunctuation | DashPunctuation | OpenPunctuation | ClosePunctuation
        | InitialPunctuation | FinalPunctuation | OtherPunctuation => Category::Punctuation,
        MathSymbol | CurrencySymbol | ModifierSymbol | OtherSymbol => Category::Symbol,
        SpaceSeparator | LineSeparator | ParagraphSeparator => Category::Separator,
        // Control, Format, Surrogate, PrivateUse, Unassigned (the enum is non-exhaustive).
        _ => Category::Control,
    }
}

/// llama.cpp's whitespace set (`unicode_set_whitespace`).
pub(super) fn is_whitespace(c: char) -> bool {
    matches!(u32::from(c),
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F
        | 0x205F | 0x3000)
}

/// The first code point of `c`'s canonical decomposition: `é` → `e`.
pub(super) fn nfd_first(c: char) -> char {
    let mut first = None;
    unicode_normalization::char::decompose_canonical(c, |d| {
        first.get_or_insert(d);
    });
    first.unwrap_or(c)
}

/// The first code point of `c`'s lower-case mapping.
pub(super) fn to_lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}
