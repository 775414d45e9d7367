//! `cnichain validate`: static checks of conflists, for CI and for runtimes that want to
//! check a directory before loading it.
//!
//! Per file: JSON syntax, the list's keys and versions, each plugin's keys against what
//! its stage reads ([`schema`]), that every `type` / `ipam.type` resolves (an in-process
//! stage or a binary in CNI_PATH) and supports the selected version (the plugin's VERSION
//! command), and the chain's dataflow ([`graph`]). Across the files of a directory:
//! duplicate network names and overlapping subnets ([`dir`]).
//!
//! Every finding is a [`Diagnostic`] positioned at the offending JSON value (file, line,
//! column, JSON pointer); positions come from a small scanner ([`pos`]) since serde_json
//! keeps none. Validation never fails: unreadable or broken input is a diagnostic too.

mod cx;
pub mod diag;
pub mod dir;
pub mod graph;
mod plugin;
pub mod pos;
pub mod rules;
pub mod schema;
pub mod typecheck;
mod versions;

pub use cx::{display_path, Cx, Source};
pub use diag::{Code, Diagnostic, Severity, Summary};

use crate::load;
use crate::spec::conflist::NetConfList;
use crate::spec::ids;
use crate::spec::json_kind::{json_kind, Spelling};
use crate::stage::Registry;
use pos::push_token;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Index of a [`Source`] in a run.
pub type SrcId = usize;

/// How a run resolves and queries plugins.
pub struct Options<'a> {
    /// In-process stages and CNI_PATH.
    pub registry: &'a Registry,
    /// Look every type up (in-process stage or CNI_PATH); off only for fuzzing, where
    /// no type resolves and every other finding would hide behind that.
    pub resolve: bool,
    /// Run each external plugin's VERSION command (`--no-exec` turns it off).
    pub exec_versions: bool,
    pub version_timeout: Option<Duration>,
}

/// How a file is read: as a list, or as a single-plugin `.conf`/`.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    List,
    Single,
    /// By content: a list when it has "plugins".
    Guess,
}

impl Kind {
    pub fn of(path: &Path) -> Kind {
        match path.extension().and_then(|e| e.to_str()) {
            Some("conflist") => Kind::List,
            Some("conf") | Some("json") => Kind::Single,
            _ => Kind::Guess,
        }
    }
}

/// One plugin object to check.
#[derive(Debug, Clone)]
pub struct PluginRef {
    pub src: SrcId,
    pub ptr: String,
    /// `"plugins[1]"`, or the file an aggregated plugin came from.
    pub label: String,
    pub obj: Map<String, Value>,
    pub ptype: Option<String>,
    pub ipam_type: Option<String>,
    pub in_process: bool,
    /// The keys its in-process stage declares (whatever runs it: --exec too).
    pub schema: Option<&'static [schema::F]>,
}

/// What one file defined, for the checks across files.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub src: Option<SrcId>,
    pub kind: Kind,
    pub name: Option<String>,
    pub subnets: Vec<rules::Subnet>,
    pub graph: Option<graph::ChainGraph>,
}

/// The result of a run.
pub struct Outcome {
    pub diagnostics: Vec<Diagnostic>,
    pub files: usize,
    /// (file, DOT text) of every chain.
    pub graphs: Vec<(String, String)>,
}

impl Outcome {
    pub fn summary(&self) -> Summary {
        Summary::of(self.files, &self.diagnostics)
    }
}

/// The extensions libcni loads from a directory.
pub const CONF_EXTS: &[&str] = &[".conf", ".conflist", ".json"];

pub struct Validator<'a> {
    opts: Options<'a>,
    pub cx: Cx,
    versions: HashMap<PathBuf, Result<Vec<String>, String>>,
}

/// Validate files and directories. A path that does not exist is a usage error.
pub fn run(paths: &[PathBuf], opts: Options) -> Result<Outcome, String> {
    let mut v = Validator::new(opts);
    let mut groups: Vec<Vec<FileReport>> = Vec::new();
    // the files named on the command line are checked against each other, like the
    // files of a directory
    let mut explicit: Vec<FileReport> = Vec::new();
    let mut files = 0;
    for p in paths {
        let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if md.is_dir() {
            let list = load::conf_files(p, CONF_EXTS).map_err(|e| e.msg)?;
            let mut group = Vec::new();
            for f in list {
                files += 1;
                group.push(v.check_file(&f, &f.display().to_string()));
            }
            groups.push(group);
        } else {
            files += 1;
            explicit.push(v.check_file(p, &p.display().to_string()));
        }
    }
    groups.push(explicit);
    for g in &groups {
        dir::check_directory(&mut v.cx, g);
    }
    let all: Vec<&FileReport> = groups.iter().flatten().collect();
    dir::check_overlaps(&mut v.cx, &all);
    let graphs = all
        .iter()
        .filter_map(|r| r.graph.as_ref().map(|g| (r.path.display().to_string(), g.to_dot())))
        .collect();
    Ok(Outcome {
        diagnostics: v.finish(),
        files,
        graphs,
    })
}

impl<'a> Validator<'a> {
    pub fn new(opts: Options<'a>) -> Validator<'a> {
        Validator {
            opts,
            cx: Cx::default(),
            versions: HashMap::new(),
        }
    }

    /// The diagnostics, in file order and then by position.
    pub fn finish(self) -> Vec<Diagnostic> {
        let mut order: HashMap<String, usize> = HashMap::new();
        for s in &self.cx.sources {
            let n = order.len();
            order.entry(s.name.clone()).or_insert(n);
        }
        let mut d = self.cx.diags;
        d.sort_by_key(|x| (order.get(&x.file).copied().unwrap_or(usize::MAX), x.line, x.col));
        d.dedup();
        d
    }

    pub fn check_file(&mut self, path: &Path, display: &str) -> FileReport {
        let kind = Kind::of(path);
        match load::read_limited(path) {
            Ok(bytes) => self.check_bytes(display, &bytes, kind, Some(path)),
            Err(e) => {
                let src = self.cx.add_source(display.to_string(), String::new(), Value::Null);
                self.cx.whole(src, Code::Io, e.msg);
                FileReport {
                    path: path.to_path_buf(),
                    src: Some(src),
                    kind,
                    name: None,
                    subnets: Vec::new(),
                    graph: None,
                }
            }
        }
    }

    /// Parse JSON into a source; a syntax error becomes a diagnostic.
    fn parse(&mut self, display: &str, bytes: &[u8]) -> (SrcId, bool) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        if bytes.starts_with(b"\xef\xbb\xbf") {
            // Go's encoding/json (libcni, every plugin) refuses it: "invalid character 'ï'"
            let src = self.cx.add_source(display.to_string(), text, Value::Null);
            let s = &self.cx.sources[src];
            let line = s.pos.line_text(&s.text, 1).trim_start_matches('\u{feff}').to_string();
            self.cx.diags.push(Diagnostic {
                code: Code::Syntax,
                file: display.to_string(),
                line: 1,
                col: 1,
                pointer: String::new(),
                hint: Some("the file starts with a UTF-8 byte order mark, which JSON does not allow: save it as UTF-8 without BOM".to_string()),
                message: "invalid JSON: byte order mark (U+FEFF) before the value".to_string(),
                source_line: line,
                width: 1,
            });
            return (src, false);
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => (self.cx.add_source(display.to_string(), text, v), true),
            Err(e) => {
                let src = self.cx.add_source(display.to_string(), text, Value::Null);
                let msg = e.to_string();
                let msg = match msg.rfind(" at line ") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
                let s = &self.cx.sources[src];
                // serde_json counts bytes in a line; we show characters
                let line = e.line().max(1);
                let text_line = s.pos.line_text(&s.text, line).to_string();
                let col = text_line
                    .as_bytes()
                    .get(..e.column().saturating_sub(1).min(text_line.len()))
                    .map(|b| String::from_utf8_lossy(b).chars().count() + 1)
                    .unwrap_or(1);
                self.cx.diags.push(Diagnostic {
                    code: Code::Syntax,
                    file: display.to_string(),
                    line,
                    col,
                    pointer: String::new(),
                    hint: syntax_hint(&msg),
                    message: format!("invalid JSON: {msg}"),
                    source_line: text_line,
                    width: 1,
                });
                (src, false)
            }
        }
    }

    /// Check one file's bytes. `path` (when the file is on disk) is used to aggregate
    /// `<dir>/<name>/*.conf` plugins and to load the list with the engine.
    pub fn check_bytes(&mut self, display: &str, bytes: &[u8], kind: Kind, path: Option<&Path>) -> FileReport {
        let first_diag = self.cx.diags.len();
        let mut report = FileReport {
            path: path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(display)),
            src: None,
            kind,
            name: None,
            subnets: Vec::new(),
            graph: None,
        };
        let (src, ok) = self.parse(display, bytes);
        report.src = Some(src);
        if !ok {
            return report;
        }
        for (ptr, span) in self.cx.sources[src].pos.duplicates.clone() {
            let path = self.cx.path(src, &ptr);
            self.cx.push_span(
                src,
                Code::DuplicateKey,
                &ptr,
                Some(span),
                format!("{path}: duplicate key; the last one wins"),
            );
        }
        let root = match &self.cx.sources[src].root {
            Value::Object(m) => m.clone(),
            other => {
                let msg = format!(
                    "(root): expected a JSON object, got {}",
                    json_kind(other, Spelling::Article)
                );
                self.cx.at(src, Code::WrongType, "", msg);
                return report;
            }
        };
        let kind = match kind {
            Kind::Guess if root.contains_key("plugins") => Kind::List,
            Kind::Guess => Kind::Single,
            k => k,
        };
        report.kind = kind;
        let (name, selected, mut plugins) = match kind {
            Kind::List => self.check_list(src, &root),
            _ => self.check_single(src, &root),
        };
        report.name = name.clone();
        // libcni aggregates <dir>/<name>/*.conf unless loadOnlyInlinedPlugins
        if kind == Kind::List && !only_inlined(&root) {
            if let (Some(p), Some(n)) = (path, name.as_deref()) {
                if ids::validate_network_name(n).is_ok() {
                    let dir = p.parent().unwrap_or(Path::new(".")).join(n);
                    let shown = Path::new(display).parent().unwrap_or(Path::new("")).join(n);
                    if let Ok(files) = load::conf_files(&dir, &[".conf"]) {
                        for f in files {
                            let fname = f
                                .file_name()
                                .map(|x| x.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            let shown = shown.join(&fname).display().to_string();
                            match load::read_limited(&f) {
                                Ok(b) => {
                                    let (s, ok) = self.parse(&shown, &b);
                                    if !ok {
                                        continue;
                                    }
                                    match self.cx.sources[s].root.clone() {
                                        Value::Object(m) => plugins.push(self.plugin_ref(s, "", shown.clone(), m)),
                                        other => {
                                            let msg = format!(
                                                "(root): expected a plugin object, got {}",
                                                json_kind(&other, Spelling::Article)
                                            );
                                            self.cx.at(s, Code::WrongType, "", msg);
                                        }
                                    }
                                }
                                Err(e) => {
                                    let s = self.cx.add_source(shown, String::new(), Value::Null);
                                    self.cx.whole(s, Code::Io, e.msg);
                                }
                            }
                        }
                    }
                }
            }
        }
        if kind == Kind::List && plugins.is_empty() && !root.contains_key("plugins") && !only_inlined(&root) {
            let msg = "no \"plugins\", and no plugin files to aggregate".to_string();
            self.cx.at(src, Code::Missing, "", msg);
            self.cx.hint(
                "add \"plugins\": [{\"type\": ...}], or put plugin .conf files in a directory named after the network",
            );
        }
        let subnets_before = self.cx.subnets.len();
        for p in &plugins {
            if let Some(t) = &p.ptype {
                typecheck::check_plugin(&mut self.cx, self.opts.registry, p.src, &p.ptr, &p.obj, t);
                self.check_plugin_versions(p, selected.as_deref());
            }
        }
        report.subnets = self.cx.subnets.split_off(subnets_before);
        if plugins.iter().all(|p| p.ptype.is_some()) && !plugins.is_empty() {
            report.graph = Some(graph::check_chain(
                &mut self.cx,
                &plugins,
                name.as_deref().unwrap_or(""),
            ));
        }
        // Whatever the engine refuses must have been explained above.
        if !self.cx.errors_since(first_diag) {
            let loaded = match (path, kind) {
                (Some(p), _) if Kind::of(p) != Kind::Guess => load::load_file(p).map(|_| ()),
                (_, Kind::List) => NetConfList::from_bytes(bytes).map(|_| ()),
                _ => NetConfList::from_single_conf(bytes).map(|_| ()),
            };
            if let Err(e) = loaded {
                self.cx.at(
                    src,
                    Code::EngineRejects,
                    "",
                    format!("the engine refuses this file: {}", e.msg),
                );
            }
        }
        report
    }

    /// The list's own keys, versions and plugin array.
    fn check_list(
        &mut self,
        src: SrcId,
        root: &Map<String, Value>,
    ) -> (Option<String>, Option<String>, Vec<PluginRef>) {
        const KNOWN: &[&str] = &[
            "cniVersion",
            "cniVersions",
            "name",
            "plugins",
            "disableCheck",
            "disableGC",
            "loadOnlyInlinedPlugins",
            // runtime data, read by the runtime that wrote it (podman: args.podman_labels)
            "args",
        ];
        for k in root.keys() {
            if !KNOWN.contains(&k.as_str()) {
                let p = push_token("", k);
                let path = self.cx.path(src, &p);
                self.cx.at_key(
                    src,
                    Code::UnknownKey,
                    &p,
                    format!("{path}: unknown key: libcni does not read it in a list"),
                );
                if k == "type" {
                    self.cx
                        .hint("\"type\" belongs in each element of \"plugins\"; a single-plugin file is a .conf");
                } else if let Some(known) = KNOWN.iter().find(|x| x.eq_ignore_ascii_case(k)) {
                    self.cx
                        .hint(format!("did you mean `{known}`? list keys are case-sensitive"));
                }
            }
        }
        let name = self.check_name(src, root);
        let selected = self.check_versions(src, root, "list");
        for k in ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"] {
            if let Some(v) = root.get(k) {
                typecheck::check(&mut self.cx, src, &push_token("", k), v, &schema::Ty::BoolStr, "libcni");
            }
        }
        if let Some(v) = root.get("args") {
            typecheck::check(&mut self.cx, src, "/args", v, &schema::Ty::Open(&[]), "the runtime");
        }
        let mut plugins = Vec::new();
        match root.get("plugins") {
            None => {
                if only_inlined(root) {
                    self.cx.at_key(
                        src,
                        Code::Missing,
                        "/loadOnlyInlinedPlugins",
                        "no \"plugins\", but loadOnlyInlinedPlugins is true".to_string(),
                    );
                }
            }
            Some(Value::Array(a)) if a.is_empty() => {
                self.cx
                    .at(src, Code::BadValue, "/plugins", "plugins: empty list".to_string());
            }
            Some(Value::Array(a)) => {
                for (i, p) in a.iter().enumerate() {
                    let ptr = format!("/plugins/{i}");
                    match p {
                        Value::Object(m) => {
                            let r = self.plugin_ref(src, &ptr, format!("plugins[{i}]"), m.clone());
                            plugins.push(r);
                        }
                        other => {
                            let msg = format!(
                                "plugins[{i}]: expected an object, got {}",
                                json_kind(other, Spelling::Article)
                            );
                            self.cx.at(src, Code::WrongType, &ptr, msg);
                        }
                    }
                }
            }
            Some(other) => {
                let msg = format!(
                    "plugins: expected an array, got {}",
                    json_kind(other, Spelling::Article)
                );
                self.cx.at(src, Code::WrongType, "/plugins", msg);
            }
        }
        (name, selected, plugins)
    }

    /// A single-plugin `.conf`: the plugin object carries the network's name and version.
    fn check_single(
        &mut self,
        src: SrcId,
        root: &Map<String, Value>,
    ) -> (Option<String>, Option<String>, Vec<PluginRef>) {
        let name = self.check_name(src, root);
        let selected = self.check_versions(src, root, "config");
        if root.contains_key("plugins") {
            self.cx.at_key(
                src,
                Code::UnknownKey,
                "/plugins",
                "plugins: a single-plugin file does not read \"plugins\"".to_string(),
            );
            self.cx.hint("name the file .conflist to make it a list");
        }
        let label = self.cx.sources[src].name.clone();
        let p = self.plugin_ref(src, "", label, root.clone());
        (name, selected, vec![p])
    }

    fn check_name(&mut self, src: SrcId, root: &Map<String, Value>) -> Option<String> {
        match root.get("name") {
            None => {
                self.cx.at(src, Code::Missing, "", "no network \"name\"".to_string());
                self.cx
                    .hint("add \"name\": the network name runtimes and the result cache use");
                None
            }
            Some(Value::String(s)) => {
                if let Err(e) = ids::validate_network_name(s) {
                    self.cx.at(src, Code::BadValue, "/name", format!("name: {}", e.msg));
                }
                Some(s.clone())
            }
            Some(other) => {
                let msg = format!("name: expected a string, got {}", json_kind(other, Spelling::Article));
                self.cx.at(src, Code::WrongType, "/name", msg);
                None
            }
        }
    }
}

/// What to do about the usual JSON mistakes in hand-written conflists.
fn syntax_hint(msg: &str) -> Option<String> {
    let h = if msg.starts_with("trailing comma") {
        "JSON allows no comma before a closing ] or }"
    } else if msg.starts_with("key must be a string") {
        "keys need double quotes"
    } else if msg.starts_with("EOF while parsing") {
        "the file ends early: a bracket, brace or string is not closed"
    } else if msg.starts_with("expected `,` or") {
        "a comma is missing between two members or elements"
    } else if msg.starts_with("trailing characters") {
        "there is text after the top-level object"
    } else {
        return None;
    };
    Some(h.to_string())
}

fn only_inlined(root: &Map<String, Value>) -> bool {
    match root.get("loadOnlyInlinedPlugins") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Validate one in-memory file without a disk behind it (fuzzing, tests).
pub fn validate_bytes(display: &str, bytes: &[u8], kind: Kind, opts: Options) -> Vec<Diagnostic> {
    let mut v = Validator::new(opts);
    let _ = v.check_bytes(display, bytes, kind, None);
    v.finish()
}

#[cfg(test)]
mod tests;
