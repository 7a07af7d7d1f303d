//! Diagnostics about `pipeline.yaml`: a message, the place it points at, and at most one hint.
//!
//! Validation collects every problem before reporting (nothing runs on an invalid pipeline), and
//! each one is rendered like a compiler error: `file:line:column`, the source line, a caret
//! underline, and a `help:` line. Rendering is plain text so it reads the same in a terminal, a CI
//! log and a snapshot test; `--json` serializes the same fields.

use std::fmt::Write as _;

use crate::spec::yaml::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    /// Where in the pipeline file; `None` for problems with no single location.
    pub span: Option<Span>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Diagnostic {
            message: message.into(),
            span: Some(span),
            hint: None,
        }
    }

    pub fn global(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span: None,
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders as `error: ...` with a source snippet; `file` is the name shown to the user.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = format!("error: {}\n", self.message);
        if let Some(span) = self.span {
            let line_text = source
                .lines()
                .nth(span.line.saturating_sub(1))
                .unwrap_or("");
            let gutter = span.line.to_string().len();
            let pad = " ".repeat(gutter);
            let _ = writeln!(out, "{pad}--> {file}:{}:{}", span.line, span.col);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{} | {}", span.line, line_text);
            // Underline from the column to the end of the span, within this line.
            let start_col = span.col.saturating_sub(1);
            let line_chars = line_text.chars().count();
            let span_chars = source
                .get(span.start..span.end)
                .map(|s| s.chars().take_while(|&c| c != '\n').count())
                .unwrap_or(1);
            let width = span_chars.clamp(1, line_chars.saturating_sub(start_col).max(1));
            let _ = writeln!(
                out,
                "{pad} | {}{}",
                " ".repeat(start_col),
                "^".repeat(width)
            );
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "  = help: {h}");
        }
        out
    }
}

/// The closest candidate by edit distance, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions (`tarin` → `train`) each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_snippet_with_caret_and_hint() {
        let src = "stages:\n  a:\n    cmd: echo\n    inputs:\n      x: gen.out\n";
        let d = Diagnostic::new(
            "unknown stage `gen`",
            Span {
                start: 48,
                end: 55,
                line: 5,
                col: 10,
            },
        )
        .hint("did you mean `a`?");
        assert_eq!(
            d.render("pipeline.yaml", src),
            "error: unknown stage `gen`\n --> pipeline.yaml:5:10\n  |\n5 |       x: gen.out\n  |          ^^^^^^^\n  = help: did you mean `a`?\n"
        );
    }

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(did_you_mean("tarin", ["train", "extract"]), Some("train"));
        assert_eq!(did_you_mean("zzz", ["train", "extract"]), None);
    }
}
