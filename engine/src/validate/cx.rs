//! The diagnostics being collected and the sources they point into: positions, display
//! paths (`plugins[0].ipam.subnet`) and the hint of the last finding.

use super::diag::{Code, Diagnostic, Severity};
use super::pos::{PosMap, Span};
use super::rules::Subnet;
use super::SrcId;
use serde_json::Value;

/// One JSON text being checked.
pub struct Source {
    /// The name diagnostics use for it.
    pub name: String,
    pub text: String,
    pub pos: PosMap,
    /// The parsed document (Null when it did not parse).
    pub root: Value,
}

/// What a run knows: its sources and the findings so far.
#[derive(Default)]
pub struct Cx {
    pub sources: Vec<Source>,
    pub diags: Vec<Diagnostic>,
    /// Subnets the IPAM sections of the file being checked hand out from.
    pub subnets: Vec<Subnet>,
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

/// `plugins[0].ipam.ranges[0][1].subnet` for `/plugins/0/ipam/ranges/0/1/subnet`.
pub fn display_path(root: &Value, ptr: &str) -> String {
    let mut out = String::new();
    let mut cur = Some(root);
    for tok in ptr.split('/').skip(1) {
        let tok = unescape_token(tok);
        match cur {
            Some(Value::Array(a)) => {
                out.push_str(&format!("[{tok}]"));
                cur = tok.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            other => {
                if is_ident(&tok) {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&tok);
                } else {
                    out.push_str(&format!("[{tok:?}]"));
                }
                cur = other.and_then(|v| v.get(&tok));
            }
        }
    }
    if out.is_empty() {
        "(root)".to_string()
    } else {
        out
    }
}

impl Cx {
    pub fn add_source(&mut self, name: String, text: String, root: Value) -> SrcId {
        let pos = PosMap::build(&text);
        self.sources.push(Source { name, text, pos, root });
        self.sources.len() - 1
    }

    /// The user-facing path of a pointer in a source.
    pub fn path(&self, src: SrcId, ptr: &str) -> String {
        match self.sources.get(src) {
            Some(s) => display_path(&s.root, ptr),
            None => ptr.to_string(),
        }
    }

    pub(super) fn push_span(&mut self, src: SrcId, code: Code, ptr: &str, span: Option<Span>, message: String) {
        let Some(s) = self.sources.get(src) else { return };
        let (line, col, source_line, width) = match span {
            Some(span) => {
                let (line, col) = s.pos.line_col(&s.text, span.start);
                let text = s.text.get(span.start..span.end.max(span.start)).unwrap_or("");
                let first = text.split('\n').next().unwrap_or("").trim_end_matches('\r');
                (
                    line,
                    col,
                    s.pos.line_text(&s.text, line).to_string(),
                    first.chars().count().max(1),
                )
            }
            None => (0, 0, String::new(), 0),
        };
        self.diags.push(Diagnostic {
            code,
            file: s.name.clone(),
            line,
            col,
            pointer: ptr.to_string(),
            message,
            hint: None,
            source_line,
            width,
        });
    }

    /// A finding at the value `ptr` points to (or the nearest enclosing one).
    pub fn at(&mut self, src: SrcId, code: Code, ptr: &str, message: String) {
        let span = self.sources.get(src).map(|s| s.pos.value_or_parent(ptr));
        self.push_span(src, code, ptr, span, message);
    }

    /// A finding at the key of the member `ptr` points to.
    pub fn at_key(&mut self, src: SrcId, code: Code, ptr: &str, message: String) {
        let span = self
            .sources
            .get(src)
            .map(|s| s.pos.key(ptr).unwrap_or_else(|| s.pos.value_or_parent(ptr)));
        self.push_span(src, code, ptr, span, message);
    }

    /// A finding about the whole file, without a position.
    pub fn whole(&mut self, src: SrcId, code: Code, message: String) {
        self.push_span(src, code, "", None, message);
    }

    /// Add a hint to the last finding.
    pub fn hint(&mut self, h: impl Into<String>) {
        if let Some(d) = self.diags.last_mut() {
            d.hint = Some(h.into());
        }
    }

    pub(super) fn errors_since(&self, n: usize) -> bool {
        self.diags[n.min(self.diags.len())..]
            .iter()
            .any(|d| d.severity() == Severity::Error)
    }
}
