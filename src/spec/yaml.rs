//! A YAML document as a tree of nodes that remember where they stand in the source.
//!
//! Built from `saphyr-parser` events (the only module that touches the YAML crate), so that every
//! diagnostic about `pipeline.yaml` can point at a line and column. Scalars are resolved with the
//! YAML 1.2 core schema (null, bools, ints, floats, strings); quoted scalars are always strings.
//! Anchors and aliases are supported by copying the anchored node. Duplicate mapping keys are an
//! error, as are tags other than the core ones. Nothing here knows what a pipeline is.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};

/// A location in the source: byte offsets plus 1-based line and column of the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// A short word for the node's type, for messages ("expected a map, found a string").
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// Looks a key up in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// A YAML syntax problem; only one is reported because the parser cannot recover.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

/// Parses a YAML document into a [`Node`]; an empty document is `Null`.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let offsets = CharOffsets::new(source);
    let mut builder = Builder {
        offsets: &offsets,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
    };
    let mut parser = Parser::new_from_str(source);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| {
            let m = e.marker();
            SyntaxError {
                message: format!("invalid YAML: {}", e.info()),
                span: offsets.span_at(m.index(), m.index(), m.line(), m.col()),
            }
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        span: Span {
            line: 1,
            col: 1,
            ..Span::default()
        },
    }))
}

/// saphyr reports character indices; diagnostics need byte offsets to slice the source.
struct CharOffsets {
    /// Byte offset of every char index, only filled when the source is not pure ASCII.
    bytes: Option<Vec<usize>>,
    len: usize,
}

impl CharOffsets {
    fn new(source: &str) -> Self {
        let bytes = if source.is_ascii() {
            None
        } else {
            let mut v: Vec<usize> = source.char_indices().map(|(b, _)| b).collect();
            v.push(source.len());
            Some(v)
        };
        CharOffsets {
            bytes,
            len: source.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.bytes {
            None => char_index.min(self.len),
            Some(v) => v.get(char_index).copied().unwrap_or(self.len),
        }
    }

    fn span_at(&self, start: usize, end: usize, line: usize, col: usize) -> Span {
        Span {
            start: self.byte(start),
            end: self.byte(end.max(start)),
            line,
            col: col + 1,
        }
    }

    fn span(&self, s: &YSpan) -> Span {
        self.span_at(
            s.start.index(),
            s.end.index(),
            s.start.line(),
            s.start.col(),
        )
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        span: Span,
        anchor: usize,
    },
}

struct Builder<'a> {
    offsets: &'a CharOffsets,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, yspan: YSpan) -> Result<(), SyntaxError> {
        let span = self.offsets.span(&yspan);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(tag) = &tag {
                    if !tag.is_yaml_core_schema() {
                        return Err(SyntaxError {
                            message: format!("unsupported YAML tag `{}{}`", tag.handle, tag.suffix),
                            span,
                        });
                    }
                }
                let value = resolve_scalar(&text, style);
                self.push(Node { value, span }, anchor)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                span,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                pending_key: None,
                span,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        span: s,
                        anchor,
                    }) => (
                        Node {
                            value: Value::Seq(items),
                            span: s,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        entries,
                        span: s,
                        anchor,
                        ..
                    }) => (
                        Node {
                            value: Value::Map(entries),
                            span: s,
                        },
                        anchor,
                    ),
                    None => return Ok(()),
                };
                self.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    message: "alias refers to an unknown anchor".into(),
                    span,
                })?;
                self.push(
                    Node {
                        value: node.value,
                        span,
                    },
                    0,
                )?;
            }
            Event::DocumentStart(_) if self.root.is_some() => {
                return Err(SyntaxError {
                    message: "more than one YAML document; a pipeline file holds exactly one"
                        .into(),
                    span,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    if !matches!(
                        node.value,
                        Value::Str(_) | Value::Int(_) | Value::Bool(_) | Value::Float(_)
                    ) {
                        return Err(SyntaxError {
                            message: "mapping keys must be plain scalars".into(),
                            span: node.span,
                        });
                    }
                    let key = Node {
                        value: Value::Str(scalar_text(&node.value)),
                        span: node.span,
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.value == key.value) {
                        return Err(SyntaxError {
                            message: format!(
                                "duplicate key `{}` (first defined on line {})",
                                scalar_text(&key.value),
                                first.span.line
                            ),
                            span: key.span,
                        });
                    }
                    *pending_key = Some(key);
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

/// The text of a scalar used as a map key (keys are always compared as strings).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_scalar(t: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::Str(t.to_string());
    }
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = t.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = t.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = t.parse::<i64>() {
            return Value::Int(i);
        }
    }
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric {
        if let Ok(f) = t.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_follow_the_core_schema() {
        let n = parse("a: 1\nb: 1e-9\nc: '1'\nd: true\ne: ~\nf: hello\ng: -3\nh: 0.5\ni: 1.0e+3\n")
            .unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        assert_eq!(n.get("b").unwrap().value, Value::Float(1e-9));
        assert_eq!(n.get("c").unwrap().value, Value::Str("1".into()));
        assert_eq!(n.get("d").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Str("hello".into()));
        assert_eq!(n.get("g").unwrap().value, Value::Int(-3));
        assert_eq!(n.get("h").unwrap().value, Value::Float(0.5));
        assert_eq!(n.get("i").unwrap().value, Value::Float(1000.0));
    }

    #[test]
    fn spans_point_at_line_and_column() {
        let n = parse("stages:\n  gen:\n    cmd: echo\n").unwrap();
        let cmd = n
            .get("stages")
            .unwrap()
            .get("gen")
            .unwrap()
            .get("cmd")
            .unwrap();
        assert_eq!((cmd.span.line, cmd.span.col), (3, 10));
        assert_eq!(
            &"stages:\n  gen:\n    cmd: echo\n"[cmd.span.start..cmd.span.end],
            "echo"
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_lines() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.message, "duplicate key `a` (first defined on line 1)");
        assert_eq!(e.span.line, 3);
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let n = parse("x: &v [1, 2]\ny: *v\n").unwrap();
        assert_eq!(n.get("y").unwrap().as_seq().unwrap().len(), 2);
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
        assert!(e.span.line >= 1);
    }

    #[test]
    fn non_ascii_sources_slice_on_char_boundaries() {
        let src = "# σ grid\nσ: 1e-9\nname: \"Lil Gatsby\"\n";
        let n = parse(src).unwrap();
        let v = n.get("name").unwrap();
        assert_eq!(&src[v.span.start..v.span.end], "\"Lil Gatsby\"");
    }
}
