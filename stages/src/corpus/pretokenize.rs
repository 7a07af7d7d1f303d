//! GPT-2-style pre-tokenization of raw bytes into "words" (the units BPE merges never cross),
//! without a regex engine. It reproduces GPT-2's pattern
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! tried in that order at each position:
//! 1. a contraction `'s 't 're 've 'm 'll 'd` (case-sensitive, as GPT-2);
//! 2. an optional single space (U+0020) then a run of letters (general category L*);
//! 3. an optional space then a run of numbers (N*);
//! 4. an optional space then a run of anything else that is not whitespace;
//! 5. a whitespace run (Unicode White_Space) that reaches the end of the text or is followed by
//!    more whitespace; when a run of two or more is followed by a non-space, its last character
//!    is left for the next word (so " word" keeps its leading space);
//! 6. a single whitespace character (a lone `\n` before a word, say).
//!
//! The input need not be UTF-8: each byte that does not start a valid UTF-8 character counts as
//! one "other" character (class 4), so any file splits, and the words concatenate back to the
//! input exactly.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The class of one character for the splitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class_of(c: char) -> Class {
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// One character of the input: its byte length and class (an invalid byte is a 1-byte Other).
fn char_at(text: &[u8], i: usize) -> (usize, Class, bool) {
    let b = text[i];
    if b < 0x80 {
        let c = b as char;
        return (1, class_of(c), b == b' ');
    }
    let want = match b {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (1, Class::Other, false),
    };
    let end = (i + want).min(text.len());
    match std::str::from_utf8(&text[i..end]) {
        Ok(s) if s.len() == want => {
            let c = s.chars().next().expect("one char");
            (want, class_of(c), false)
        }
        _ => (1, Class::Other, false),
    }
}

/// Splits `text` into words (byte ranges, in order, covering the whole text).
pub(crate) fn split(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut words = Vec::with_capacity(text.len() / 4 + 1);
    let mut i = 0;
    while i < text.len() {
        let end = word_end(text, i);
        debug_assert!(end > i);
        words.push(i..end);
        i = end;
    }
    words
}

/// The end of the word that starts at `i` (< `text.len()`).
fn word_end(text: &[u8], i: usize) -> usize {
    // 1. contractions
    if text[i] == b'\'' {
        let rest = &text[i + 1..];
        for c in [&b"re"[..], b"ve", b"ll", b"s", b"t", b"m", b"d"] {
            if rest.starts_with(c) {
                return i + 1 + c.len();
            }
        }
    }
    let (len, class, is_space) = char_at(text, i);
    // 2.–4. an optional leading space, then a run of one class
    let (run_start, run_class) = if is_space && i + len < text.len() {
        let (_, next, _) = char_at(text, i + len);
        if next != Class::Space {
            (i + len, next)
        } else {
            (i, class)
        }
    } else {
        (i, class)
    };
    if run_class != Class::Space {
        return run_end(text, run_start, run_class);
    }
    // 5.–6. whitespace
    let mut j = i;
    let mut last_start = i;
    while j < text.len() {
        let (l, c, _) = char_at(text, j);
        if c != Class::Space {
            break;
        }
        last_start = j;
        j += l;
    }
    if j == text.len() || last_start == i {
        j
    } else {
        last_start
    }
}

/// The end of the run of `class` characters that starts at `i`.
fn run_end(text: &[u8], mut i: usize, class: Class) -> usize {
    while i < text.len() {
        let (l, c, _) = char_at(text, i);
        if c != class {
            break;
        }
        i += l;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        split(text.as_bytes())
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn splits_like_gpt2() {
        assert_eq!(
            words("Hello world, it's 2024!  Yes\n\nno  "),
            [
                "Hello", " world", ",", " it", "'s", " 2024", "!", " ", " Yes", "\n", "\n", "no",
                "  "
            ]
        );
        assert_eq!(words("don't"), ["don", "'t"]);
        assert_eq!(words("we'll 'sun"), ["we", "'ll", " '", "sun"]);
        assert_eq!(words("a\n b"), ["a", "\n", " b"]);
        assert_eq!(words(" \n word"), [" \n", " word"]);
        assert_eq!(words("x\tb"), ["x", "\t", "b"]);
        assert_eq!(words("  "), ["  "]);
        assert_eq!(
            words("café naïve ๑๒ ไทย"),
            ["café", " naïve", " ๑๒", " ไทย"]
        );
        assert_eq!(words("a1b"), ["a", "1", "b"]);
        assert_eq!(words("...!? ---"), ["...!?", " ---"]);
    }

    #[test]
    fn any_bytes_split_and_concatenate_back() {
        let junk: Vec<u8> = vec![
            0xff, b'a', 0xe2, 0x82, b' ', 0xc3, 0xa9, 0x80, b'\n', 0, 0xf0,
        ];
        let ranges = split(&junk);
        let mut back = Vec::new();
        let mut at = 0;
        for r in ranges {
            assert_eq!(r.start, at);
            at = r.end;
            back.extend_from_slice(&junk[r]);
        }
        assert_eq!(back, junk);
        assert!(split(b"").is_empty());
    }
}
