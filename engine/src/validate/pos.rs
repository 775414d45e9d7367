//! Where each value of a JSON document starts: a small position-tracking scanner that maps
//! a JSON pointer (RFC 6901) to the byte span of the value and of its key, and byte offsets
//! to 1-based line and column (columns count characters, not bytes).
//!
//! serde_json reports positions only for syntax errors, so the validator parses twice: once
//! with serde_json for the values, once here for where they are. The scanner accepts what
//! serde_json accepts and never panics on anything else (it stops where it gets lost).

use std::collections::HashMap;

/// A byte range `[start, end)` of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: Option<Span>,
    value: Span,
}

/// Positions of every value in one document.
#[derive(Debug, Default)]
pub struct PosMap {
    entries: HashMap<String, Entry>,
    line_starts: Vec<usize>,
    /// Keys that occur twice in one object: (pointer of the later key, its span).
    pub duplicates: Vec<(String, Span)>,
}

/// Nesting deeper than this is not mapped (serde_json itself stops at 128).
const MAX_DEPTH: usize = 256;

/// `/a/b` with `~` and `/` escaped as RFC 6901 asks.
pub fn push_token(ptr: &str, token: &str) -> String {
    let mut s = String::with_capacity(ptr.len() + token.len() + 1);
    s.push_str(ptr);
    s.push('/');
    for c in token.chars() {
        match c {
            '~' => s.push_str("~0"),
            '/' => s.push_str("~1"),
            c => s.push(c),
        }
    }
    s
}

impl PosMap {
    pub fn build(src: &str) -> PosMap {
        let mut line_starts = vec![0];
        for (i, b) in src.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        let mut sc = Scanner {
            src: src.as_bytes(),
            i: 0,
            map: PosMap {
                line_starts,
                ..Default::default()
            },
        };
        sc.ws();
        sc.value(String::new(), None, 0);
        sc.map
    }

    /// The span of the value at `ptr`.
    pub fn value(&self, ptr: &str) -> Option<Span> {
        self.entries.get(ptr).map(|e| e.value)
    }

    /// The span of the key naming the value at `ptr` (objects' members only).
    pub fn key(&self, ptr: &str) -> Option<Span> {
        self.entries.get(ptr).and_then(|e| e.key)
    }

    /// The value at `ptr`, or the nearest enclosing value that has a position.
    pub fn value_or_parent(&self, ptr: &str) -> Span {
        let mut p = ptr;
        loop {
            if let Some(s) = self.value(p) {
                return s;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Span::default(),
            }
        }
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub fn line_col(&self, src: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(src.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0).min(offset);
        let col = src
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }

    /// The text of 1-based line `line`, without its line break.
    pub fn line_text<'s>(&self, src: &'s str, line: usize) -> &'s str {
        let Some(&start) = self.line_starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map(|e| e.saturating_sub(1))
            .unwrap_or(src.len());
        src.get(start..end.max(start)).unwrap_or("").trim_end_matches('\r')
    }
}

struct Scanner<'a> {
    src: &'a [u8],
    i: usize,
    map: PosMap,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Scan one value starting at the current (non-space) position; returns false when
    /// the input is not what it should be.
    fn value(&mut self, ptr: String, key: Option<Span>, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        let start = self.i;
        let ok = match self.peek() {
            Some(b'{') => self.object(&ptr, depth),
            Some(b'[') => self.array(&ptr, depth),
            Some(b'"') => self.string().is_some(),
            Some(_) => self.scalar(),
            None => false,
        };
        self.map.entries.insert(
            ptr,
            Entry {
                key,
                value: Span { start, end: self.i },
            },
        );
        ok
    }

    fn scalar(&mut self) -> bool {
        let start = self.i;
        while let Some(b) = self.peek() {
            if matches!(
                b,
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' | b':' | b'"' | b'{' | b'['
            ) {
                break;
            }
            self.i += 1;
        }
        self.i > start
    }

    /// A string token; returns its span including the quotes.
    fn string(&mut self) -> Option<Span> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(Span { start, end: self.i });
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    fn key_text(&self, span: Span) -> String {
        let raw = self.src.get(span.start..span.end).unwrap_or(b"\"\"");
        if !raw.contains(&b'\\') {
            let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or(b"");
            return String::from_utf8_lossy(inner).into_owned();
        }
        serde_json::from_slice::<String>(raw).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
    }

    fn object(&mut self, ptr: &str, depth: usize) -> bool {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return true;
        }
        let mut seen: HashMap<String, ()> = HashMap::new();
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return false;
            }
            let Some(kspan) = self.string() else {
                return false;
            };
            let k = self.key_text(kspan);
            let child = push_token(ptr, &k);
            if seen.insert(k, ()).is_some() {
                self.map.duplicates.push((child.clone(), kspan));
            }
            self.ws();
            if self.peek() != Some(b':') {
                return false;
            }
            self.i += 1;
            self.ws();
            if !self.value(child, Some(kspan), depth + 1) {
                return false;
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn array(&mut self, ptr: &str, depth: usize) -> bool {
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return true;
        }
        let mut n = 0usize;
        loop {
            self.ws();
            if !self.value(push_token(ptr, &n.to_string()), None, depth + 1) {
                return false;
            }
            n += 1;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_pointers_to_lines_and_columns() {
        let src = "{\n  \"name\": \"n\",\n  \"plugins\": [\n    {\"type\": \"bridge\", \"a/b~\": [1, true]}\n  ]\n}\n";
        let m = PosMap::build(src);
        let at = |p: &str| m.line_col(src, m.value(p).unwrap().start);
        assert_eq!(at(""), (1, 1));
        assert_eq!(at("/name"), (2, 11));
        assert_eq!(at("/plugins/0"), (4, 5));
        assert_eq!(at("/plugins/0/type"), (4, 14));
        assert_eq!(at("/plugins/0/a~1b~0/1"), (4, 36));
        assert_eq!(m.line_col(src, m.key("/plugins/0/type").unwrap().start), (4, 6));
        assert_eq!(
            m.value("/plugins/0/a~1b~0/1").map(|s| &src[s.start..s.end]),
            Some("true")
        );
        assert_eq!(m.line_text(src, 4), "    {\"type\": \"bridge\", \"a/b~\": [1, true]}");
        assert!(m.value("/nope").is_none());
        assert_eq!(m.value_or_parent("/plugins/0/nope/x"), m.value("/plugins/0").unwrap());
    }

    #[test]
    fn columns_count_characters_and_escaped_keys_decode() {
        let src = "{\"é\": 1, \"\\u0041\": \"ü\", \"x\": 2, \"x\": 3}";
        let m = PosMap::build(src);
        assert_eq!(m.line_col(src, m.value("/A").unwrap().start), (1, 20));
        assert_eq!(m.line_col(src, m.value("/é").unwrap().start), (1, 7));
        // duplicate keys: the later one is what serde_json keeps
        assert_eq!(m.duplicates.len(), 1);
        assert_eq!(m.value("/x").map(|s| &src[s.start..s.end]), Some("3"));
    }

    #[test]
    fn never_panics_on_garbage() {
        for src in [
            "",
            "{",
            "[",
            "{\"a\"",
            "{\"a\":",
            "\"",
            "[1,",
            "}",
            "{\"a\":1,}",
            "\u{1F600}\n\"",
            "{\"\\",
        ] {
            let m = PosMap::build(src);
            let _ = m.line_col(src, 1000);
            let _ = m.line_text(src, 0);
            let _ = m.line_text(src, 99);
        }
        let deep = "[".repeat(100_000);
        let _ = PosMap::build(&deep);
    }
}
