//! The three script classifiers of science spec S12, applied to a decoded token's (lossy) text.
//!
//! 1. [`dominant_name`] — dominant Unicode name: every char that is not whitespace and not of
//!    general category C* gets the first word of its Unicode name (THAI, CJK, ARABIC, LATIN,
//!    REPLACEMENT, FULLWIDTH, LESS-THAN, …; names from `unicode_names2`, which derives CJK
//!    ideograph and Hangul syllable names like Python's `unicodedata.name`); a char without a
//!    name falls back to `Punctuation` / `Symbol` / `Other` by category (P* / S* / rest). The most
//!    frequent label wins; ties go to the tied label seen first in the text (what Python's
//!    `Counter(labels).most_common(1)` returns, which the original notebooks relied on); no
//!    labelled char → `Empty/Whitespace`.
//! 2. [`any_range`] — any-character ranges (V4.17: the default for new work), in the spec's
//!    order: `Thai` if any char is in U+0E00–U+0E7F; else `CJK` if any char is in U+4E00–U+9FFF
//!    or U+3400–U+4DBF; else `special` if the text starts with `<|` and ends with `|>`. Only
//!    then, as extra labels that split what S12 calls "other" and so cannot change the
//!    Thai/CJK/special counts: `Hangul`, `Kana`, `Arabic`, `Hebrew`, `Devanagari`, `Cyrillic`,
//!    `Greek`, `Latin` (first that has any char, in that order), `empty` for "", else `other`.
//!    [`collapse`] maps a label back to S12's four (Thai, CJK, special, other).
//! 3. [`thai_first`] — the first char that is neither whitespace nor punctuation (category P*)
//!    is in U+0E00–U+0E7F.
//!
//! Whitespace is Rust's `char::is_whitespace` (the Unicode White_Space property; Python's
//! `str.isspace` differs only on chars of category C*, which are skipped anyway).

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Label of variant 1 for text with no labelled char.
pub(crate) const EMPTY_LABEL: &str = "Empty/Whitespace";

fn is_other_category(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::Control | G::Format | G::Surrogate | G::PrivateUse | G::Unassigned
    )
}

fn is_punctuation(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
    )
}

fn is_symbol(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol
    )
}

/// Variant-1 label of one char, or `None` if the char is skipped.
pub(crate) fn char_label(c: char) -> Option<String> {
    if c.is_whitespace() || is_other_category(c) {
        return None;
    }
    if let Some(name) = unicode_names2::name(c) {
        let name = name.to_string();
        if let Some(first) = name.split(' ').next().filter(|w| !w.is_empty()) {
            return Some(first.to_string());
        }
    }
    Some(
        if is_punctuation(c) {
            "Punctuation"
        } else if is_symbol(c) {
            "Symbol"
        } else {
            "Other"
        }
        .to_string(),
    )
}

/// Variant 1: the dominant first word of the chars' Unicode names.
pub(crate) fn dominant_name(text: &str) -> String {
    // (label, count) in order of first appearance.
    let mut counts: Vec<(String, usize)> = Vec::new();
    for label in text.chars().filter_map(char_label) {
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    let mut best: Option<&(String, usize)> = None;
    for entry in &counts {
        if best.is_none_or(|b| entry.1 > b.1) {
            best = Some(entry);
        }
    }
    best.map_or_else(|| EMPTY_LABEL.to_string(), |(l, _)| l.clone())
}

fn is_thai(c: char) -> bool {
    ('\u{0E00}'..='\u{0E7F}').contains(&c)
}

fn is_cjk(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c) || ('\u{3400}'..='\u{4DBF}').contains(&c)
}

/// The extra labels of variant 2, tested in this order after Thai, CJK and special.
const EXTRA_RANGES: &[(&str, &[(char, char)])] = &[
    (
        "Hangul",
        &[
            ('\u{1100}', '\u{11FF}'),
            ('\u{3130}', '\u{318F}'),
            ('\u{AC00}', '\u{D7AF}'),
        ],
    ),
    (
        "Kana",
        &[('\u{3040}', '\u{30FF}'), ('\u{31F0}', '\u{31FF}')],
    ),
    (
        "Arabic",
        &[
            ('\u{0600}', '\u{06FF}'),
            ('\u{0750}', '\u{077F}'),
            ('\u{08A0}', '\u{08FF}'),
            ('\u{FB50}', '\u{FDFF}'),
            ('\u{FE70}', '\u{FEFF}'),
        ],
    ),
    (
        "Hebrew",
        &[('\u{0590}', '\u{05FF}'), ('\u{FB1D}', '\u{FB4F}')],
    ),
    ("Devanagari", &[('\u{0900}', '\u{097F}')]),
    ("Cyrillic", &[('\u{0400}', '\u{052F}')]),
    (
        "Greek",
        &[('\u{0370}', '\u{03FF}'), ('\u{1F00}', '\u{1FFF}')],
    ),
    (
        "Latin",
        &[
            ('A', 'Z'),
            ('a', 'z'),
            ('\u{00C0}', '\u{00D6}'),
            ('\u{00D8}', '\u{00F6}'),
            ('\u{00F8}', '\u{024F}'),
            ('\u{1E00}', '\u{1EFF}'),
        ],
    ),
];

/// Variant 2: any-character range test (see the module doc for the order).
pub(crate) fn any_range(text: &str) -> &'static str {
    if text.chars().any(is_thai) {
        return "Thai";
    }
    if text.chars().any(is_cjk) {
        return "CJK";
    }
    if text.starts_with("<|") && text.ends_with("|>") {
        return "special";
    }
    for (label, ranges) in EXTRA_RANGES {
        if text
            .chars()
            .any(|c| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)))
        {
            return label;
        }
    }
    if text.is_empty() {
        "empty"
    } else {
        "other"
    }
}

/// S12's four labels for a variant-2 label.
pub(crate) fn collapse(label: &str) -> &'static str {
    match label {
        "Thai" => "Thai",
        "CJK" => "CJK",
        "special" => "special",
        _ => "other",
    }
}

/// Variant 3: the first char that is not whitespace or punctuation is Thai.
pub(crate) fn thai_first(text: &str) -> bool {
    text.chars()
        .find(|&c| !c.is_whitespace() && !is_punctuation(c))
        .is_some_and(is_thai)
}

/// Whether a token looks like an unused/reserved placeholder (`[unused7]`,
/// `<|reserved_special_token_3|>`, …).
pub(crate) fn reserved_looking(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("unused") || lower.contains("reserved")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_1_labels() {
        assert_eq!(dominant_name("สวัสดี"), "THAI");
        assert_eq!(dominant_name("中文"), "CJK");
        assert_eq!(dominant_name("한"), "HANGUL");
        assert_eq!(dominant_name("مرحبا"), "ARABIC");
        assert_eq!(dominant_name(" hello"), "LATIN");
        assert_eq!(dominant_name("  \n"), EMPTY_LABEL);
        assert_eq!(dominant_name(""), EMPTY_LABEL);
        assert_eq!(dominant_name("\u{FFFD}"), "REPLACEMENT");
        assert_eq!(dominant_name("２０"), "FULLWIDTH");
        assert_eq!(dominant_name("<"), "LESS-THAN");
        // Tie: the label seen first wins.
        assert_eq!(dominant_name("aก"), "LATIN");
        assert_eq!(dominant_name("กa"), "THAI");
        // C* chars are skipped (format char U+200B, control \u{1}).
        assert_eq!(dominant_name("\u{200B}\u{1}ก"), "THAI");
    }

    #[test]
    fn variant_2_and_3() {
        assert_eq!(any_range("abc ก"), "Thai");
        assert_eq!(any_range("<|ก|>"), "Thai");
        assert_eq!(any_range("中ab"), "CJK");
        assert_eq!(any_range("<|x|>"), "special");
        assert_eq!(any_range("привет"), "Cyrillic");
        assert_eq!(any_range("!"), "other");
        assert_eq!(any_range(""), "empty");
        assert_eq!(collapse("Cyrillic"), "other");
        assert!(thai_first(" ,ก"));
        assert!(!thai_first("aก"));
        assert!(!thai_first(""));
        assert!(reserved_looking("[unused12]"));
    }
}
