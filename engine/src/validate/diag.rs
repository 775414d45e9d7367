//! Diagnostics: the codes, and the two ways they are printed (compiler-style text for
//! people, JSON for machines).

use serde_json::{json, Value};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($( $variant:ident = $id:literal, $sev:ident, $summary:literal; )*) => {
        /// Every diagnostic the validator emits. The id's letter is its severity.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $( $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            pub fn id(self) -> &'static str {
                match self { $( Code::$variant => $id, )* }
            }
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }
            pub fn summary(self) -> &'static str {
                match self { $( Code::$variant => $summary, )* }
            }
        }
    };
}

codes! {
    // files and JSON
    Io = "E0100", Error, "the file cannot be read";
    Syntax = "E0101", Error, "invalid JSON";
    WrongType = "E0102", Error, "a value has the wrong JSON type";
    Missing = "E0103", Error, "a required key is missing";
    BadValue = "E0104", Error, "a value is invalid or contradicts another";
    UnknownKey = "W0105", Warning, "a key that the stage does not read (Go ignores it silently)";
    DuplicateKey = "W0106", Warning, "a key occurs twice in one object (the last one wins)";
    EngineRejects = "E0107", Error, "the engine refuses to load the list";
    ForeignIpam = "W0108", Warning, "an external plugin's ipam section that host-local would refuse as written (the plugin may rewrite it)";
    SharedDir = "W0109", Warning, "a directory the plugin writes into that users other than root can write to";
    // versions
    BadVersion = "E0201", Error, "a version string is malformed";
    UnsupportedVersion = "E0202", Error, "the selected spec version is not supported";
    NoVersion = "W0203", Warning, "no cniVersion (libcni reads it as 0.1.0)";
    VersionIgnored = "W0204", Warning, "a version written is not a CNI spec version (and is not selected)";
    PluginVersionIgnored = "W0205", Warning, "a plugin's own cniVersion is replaced by the list's";
    PluginVersionUnsupported = "E0206", Error, "the plugin does not support the selected version";
    VersionQueryFailed = "W0207", Warning, "the plugin's VERSION command failed";
    // plugin types
    BadPluginType = "E0301", Error, "type or ipam.type is not a plain file name";
    TypeNotFound = "E0302", Error, "type is neither an in-process stage nor found in CNI_PATH";
    IpamNotFound = "E0303", Error, "ipam.type is neither an in-process stage nor found in CNI_PATH";
    TypeNotChecked = "W0304", Warning, "type or ipam.type is not in-process and no CNI_PATH was given to look for it";
    // chain semantics
    MetaBeforeInterface = "E0401", Error, "a plugin that works on the pod interface runs before any plugin creates it";
    InterfaceTwice = "E0402", Error, "two plugins create the pod interface";
    NoHostVeth = "E0403", Error, "bandwidth has no host-side veth before it";
    NoAddress = "E0404", Error, "sbr has no address before it (it fails without one)";
    CapabilityUnused = "W0405", Warning, "a declared capability is consumed by no plugin";
    CapabilityNotEnabled = "W0406", Warning, "a plugin needs a capability that the list never enables";
    IpamRequired = "E0407", Error, "the plugin needs an ipam section";
    NoAddressNoop = "W0408", Warning, "portmap or firewall has no address before it (it passes the result on and does nothing)";
    // across a directory
    DuplicateNetwork = "E0501", Error, "a network name is defined twice; the later file is shadowed";
    SubnetOverlap = "W0502", Warning, "IPAM subnets of two networks overlap";
}

/// One finding, positioned at a JSON value of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    /// The file as named on the command line (or found in a directory).
    pub file: String,
    /// 1-based; 0 when the finding concerns the whole file.
    pub line: usize,
    pub col: usize,
    /// JSON pointer of the offending value ("" for the document).
    pub pointer: String,
    pub message: String,
    pub hint: Option<String>,
    /// The source line and how many characters to underline from `col`.
    pub source_line: String,
    pub width: usize,
}

impl Diagnostic {
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col: error[E0102]: message`
    pub fn headline(&self) -> String {
        let at = if self.line > 0 {
            format!("{}:{}:{}", self.file, self.line, self.col)
        } else {
            self.file.clone()
        };
        format!(
            "{at}: {}[{}]: {}",
            self.severity().as_str(),
            self.code.id(),
            self.message
        )
    }

    /// The compiler-style block: headline, the source line with a marker, the hint.
    pub fn render(&self) -> String {
        let mut out = self.headline();
        out.push('\n');
        if self.line > 0 {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let (shown, col, width) = window(&self.source_line, self.col, self.width.max(1));
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {shown}");
            // keep tabs so the marker lines up under the value
            let lead: String = shown
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(width));
            if let Some(h) = &self.hint {
                let _ = writeln!(out, "{pad} = hint: {h}");
            }
        } else if let Some(h) = &self.hint {
            let _ = writeln!(out, "  = hint: {h}");
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "file": self.file,
            "line": self.line,
            "column": self.col,
            "pointer": self.pointer,
            "severity": self.severity().as_str(),
            "code": self.code.id(),
            "message": self.message,
        });
        if let (Some(h), Value::Object(m)) = (&self.hint, &mut v) {
            m.insert("hint".into(), Value::String(h.clone()));
        }
        v
    }
}

/// Lines longer than this are shown as a window around the marker.
const MAX_SHOWN: usize = 140;

/// The part of a long line around `col` (1-based), with the column and marker width in
/// it: minified conflists are one long line.
fn window(line: &str, col: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_SHOWN {
        return (line.to_string(), col, width);
    }
    let at = col.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(40);
    let end = (start + MAX_SHOWN).min(chars.len());
    let mut shown = String::new();
    if start > 0 {
        shown.push_str("...");
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push_str("...");
    }
    let col = at - start + 1 + if start > 0 { 3 } else { 0 };
    let width = width.min(end.saturating_sub(at)).max(1);
    (shown, col, width)
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub errors: usize,
    pub warnings: usize,
}

impl Summary {
    pub fn of(files: usize, diags: &[Diagnostic]) -> Summary {
        Summary {
            files,
            errors: diags.iter().filter(|d| d.severity() == Severity::Error).count(),
            warnings: diags.iter().filter(|d| d.severity() == Severity::Warning).count(),
        }
    }

    pub fn line(&self) -> String {
        let plural = |n: usize, w: &str| {
            if n == 1 {
                format!("{n} {w}")
            } else {
                format!("{n} {w}s")
            }
        };
        format!(
            "{} checked: {}, {}",
            plural(self.files, "file"),
            plural(self.errors, "error"),
            plural(self.warnings, "warning")
        )
    }
}

/// Every diagnostic as text, separated by blank lines.
pub fn render_human(diags: &[Diagnostic]) -> String {
    let blocks: Vec<String> = diags.iter().map(Diagnostic::render).collect();
    blocks.join("\n")
}

/// `{"diagnostics": [...], "summary": {...}}`
pub fn render_json(diags: &[Diagnostic], summary: Summary) -> Value {
    json!({
        "diagnostics": diags.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
        "summary": {"files": summary.files, "errors": summary.errors, "warnings": summary.warnings},
    })
}

/// The code table, for `--list-codes` and the docs.
pub fn code_table() -> String {
    let mut s = String::new();
    for c in Code::ALL {
        let _ = writeln!(s, "{}  {:<7}  {}", c.id(), c.severity().as_str(), c.summary());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_match_severity() {
        let mut ids: Vec<_> = Code::ALL.iter().map(|c| c.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Code::ALL.len());
        for c in Code::ALL {
            let letter = &c.id()[..1];
            assert_eq!(letter == "E", c.severity() == Severity::Error, "{}", c.id());
        }
    }

    #[test]
    fn renders_like_a_compiler() {
        let d = Diagnostic {
            code: Code::WrongType,
            file: "a.conflist".into(),
            line: 3,
            col: 15,
            pointer: "/plugins/0/isGateway".into(),
            message: "plugins[0].isGateway: expected a boolean, got a string".into(),
            hint: Some("write true or false, without quotes".into()),
            source_line: "\t\"isGateway\": \"yes\",".into(),
            width: 5,
        };
        // the marker keeps the tab so it sits under the value
        assert_eq!(
            d.render(),
            format!(
                "a.conflist:3:15: error[E0102]: plugins[0].isGateway: expected a boolean, got a string\n  |\n3 | \t\"isGateway\": \"yes\",\n  | \t{}^^^^^\n  = hint: write true or false, without quotes\n",
                " ".repeat(13)
            )
        );
        assert_eq!(d.to_json()["column"], 15);
        assert_eq!(
            Summary::of(2, &[d.clone()]).line(),
            "2 files checked: 1 error, 0 warnings"
        );
        // a long line is shown around the marker
        let long = Diagnostic {
            source_line: format!("{}\"isGateway\": \"yes\"{}", "x".repeat(300), "y".repeat(300)),
            col: 314,
            ..d
        };
        let r = long.render();
        let lines: Vec<&str> = r.lines().collect();
        assert!(
            lines[2].starts_with("3 | ...xxx") && lines[2].ends_with("yyy..."),
            "{r}"
        );
        let marker = lines[3].find('^').unwrap();
        assert_eq!(&lines[2][marker..marker + 5], "\"yes\"", "{r}");
    }
}
