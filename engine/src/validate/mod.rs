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

pub mod diag;
pub mod dir;
pub mod graph;
pub mod pos;
pub mod rules;
pub mod schema;
pub mod typecheck;

pub use diag::{Code, Diagnostic, Severity, Summary};

use crate::load;
use crate::spec::conflist::NetConfList;
use crate::spec::ids;
use crate::spec::json_kind::{json_kind, Spelling};
use crate::spec::version;
use crate::stage::{find_in_path, Registry};
use pos::{push_token, PosMap, Span};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Index of a [`Source`] in a run.
pub type SrcId = usize;

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
    pub subnets: Vec<rules::Subnet>,
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

    fn push_span(&mut self, src: SrcId, code: Code, ptr: &str, span: Option<Span>, message: String) {
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

    fn errors_since(&self, n: usize) -> bool {
        self.diags[n.min(self.diags.len())..]
            .iter()
            .any(|d| d.severity() == Severity::Error)
    }
}

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
    /// "plugins[1]", or the file an aggregated plugin came from.
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

    fn plugin_ref(&mut self, src: SrcId, ptr: &str, label: String, obj: Map<String, Value>) -> PluginRef {
        let ptype = self.check_type(src, ptr, &obj);
        let ipam_type = self.check_ipam_type(src, ptr, &obj);
        let in_process = ptype.as_deref().is_some_and(|t| self.opts.registry.is_in_process(t));
        let schema = ptype
            .as_deref()
            .and_then(|t| typecheck::fields_of(self.opts.registry, t, schema::Role::Plugin));
        if in_process {
            self.check_data_dirs(src, ptr, &obj, ptype.as_deref(), ipam_type.as_deref());
        }
        PluginRef {
            src,
            ptr: ptr.to_string(),
            label,
            obj,
            ptype,
            schema,
            ipam_type,
            in_process,
        }
    }

    /// `type`: present, a string, a file name.
    fn check_type(&mut self, src: SrcId, ptr: &str, obj: &Map<String, Value>) -> Option<String> {
        let tp = push_token(ptr, "type");
        // named by their path, like every other finding: "(root)" and "type" in a .conf
        let me = self.cx.path(src, ptr);
        let tpath = self.cx.path(src, &tp);
        match obj.get("type") {
            None => {
                self.cx.at(src, Code::Missing, ptr, format!("{me}: no \"type\""));
                self.cx
                    .hint("every plugin needs \"type\": the name of its binary, like \"bridge\"");
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                self.cx.at(src, Code::Missing, &tp, format!("{tpath}: empty"));
                None
            }
            Some(Value::String(s)) => match ids::validate_plugin_type(s, "type") {
                Ok(()) => Some(s.clone()),
                Err(e) => {
                    self.cx.at(src, Code::BadPluginType, &tp, format!("{tpath}: {}", e.msg));
                    self.cx
                        .hint("a type names a binary in CNI_PATH; put the binary there instead of giving a path");
                    None
                }
            },
            Some(other) => {
                let msg = format!(
                    "{tpath}: expected a string, got {}",
                    json_kind(other, Spelling::Article)
                );
                self.cx.at(src, Code::WrongType, &tp, msg);
                None
            }
        }
    }

    /// The node's files a stage keeps there: host-local's store (`dataDir`, by default
    /// /var/lib/cni/networks) and tuning's records (`dataDir` when set). A directory there
    /// that users other than root can write to lets them plant reservations or records.
    fn check_data_dirs(
        &mut self,
        src: SrcId,
        ptr: &str,
        obj: &Map<String, Value>,
        ptype: Option<&str>,
        ipam_type: Option<&str>,
    ) {
        let str_at = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(String::from);
        let mut dirs: Vec<(String, String)> = Vec::new();
        if ptype == Some("tuning") {
            if let Some(d) = str_at(obj, "dataDir") {
                dirs.push((push_token(ptr, "dataDir"), d));
            }
        }
        if ipam_type == Some("host-local") && self.opts.registry.is_in_process("host-local") {
            let ip = push_token(ptr, "ipam");
            let given = obj
                .get("ipam")
                .and_then(Value::as_object)
                .and_then(|m| str_at(m, "dataDir"));
            match given {
                Some(d) => dirs.push((push_token(&ip, "dataDir"), d)),
                None => dirs.push((ip, "/var/lib/cni/networks".to_string())),
            }
        }
        for (at, dir) in dirs {
            if let Some(why) = crate::nodefs::shared_writable(Path::new(&dir)) {
                let label = self.cx.path(src, &at);
                self.cx
                    .at(src, Code::SharedDir, &at, format!("{label}: {dir} on this node: {why}"));
                self.cx
                    .hint("keep the directories a plugin writes into writable by root only (chmod go-w)");
            }
        }
    }

    fn check_ipam_type(&mut self, src: SrcId, ptr: &str, obj: &Map<String, Value>) -> Option<String> {
        let ipam = match obj.get("ipam") {
            Some(Value::Object(ipam)) => ipam,
            None | Some(Value::Null) => return None,
            // The engine (like libcni) refuses the list for any plugin, external too.
            Some(other) => {
                // (an in-process stage's schema check reports it for its own type)
                let t = obj.get("type").and_then(Value::as_str);
                if !t.is_some_and(|t| self.opts.registry.is_in_process(t)) {
                    let ip = push_token(ptr, "ipam");
                    let path = self.cx.path(src, &ip);
                    let msg = format!(
                        "{path}: expected an object, got {}",
                        json_kind(other, Spelling::Article)
                    );
                    self.cx.at(src, Code::WrongType, &ip, msg);
                }
                return None;
            }
        };
        let tp = push_token(&push_token(ptr, "ipam"), "type");
        match ipam.get("type") {
            // "" is no IPAM, for the engine as for the reference plugins
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => match ids::validate_plugin_type(s, "ipam.type") {
                Ok(()) => Some(s.clone()),
                Err(e) => {
                    let path = self.cx.path(src, &tp);
                    self.cx.at(src, Code::BadPluginType, &tp, format!("{path}: {}", e.msg));
                    None
                }
            },
            _ => None,
        }
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

    /// `cniVersion` and `cniVersions`; returns the selected version when it is usable.
    fn check_versions(&mut self, src: SrcId, root: &Map<String, Value>, what: &str) -> Option<String> {
        let mut ok = true;
        let declared = match root.get("cniVersion") {
            None => {
                self.cx.at(
                    src,
                    Code::NoVersion,
                    "",
                    format!("no \"cniVersion\": libcni reads the {what} as version 0.1.0"),
                );
                self.cx.hint(format!("add \"cniVersion\": \"{}\"", version::CURRENT));
                String::new()
            }
            Some(Value::String(s)) => {
                if let Err(e) = version::parse(s) {
                    self.cx
                        .at(src, Code::BadVersion, "/cniVersion", format!("cniVersion: {}", e.msg));
                    ok = false;
                }
                s.clone()
            }
            Some(other) => {
                let msg = format!(
                    "cniVersion: expected a string, got {}",
                    json_kind(other, Spelling::Article)
                );
                self.cx.at(src, Code::WrongType, "/cniVersion", msg);
                ok = false;
                String::new()
            }
        };
        let mut entries: Vec<(String, String)> = Vec::new(); // (pointer, version)
        match root.get("cniVersions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let p = format!("/cniVersions/{i}");
                    match v {
                        Value::String(s) => match version::parse(s) {
                            Ok(_) => entries.push((p, s.clone())),
                            Err(e) => {
                                self.cx
                                    .at(src, Code::BadVersion, &p, format!("cniVersions[{i}]: {}", e.msg));
                                ok = false;
                            }
                        },
                        other => {
                            let msg = format!(
                                "cniVersions[{i}]: expected a string, got {}",
                                json_kind(other, Spelling::Article)
                            );
                            self.cx.at(src, Code::WrongType, &p, msg);
                            ok = false;
                        }
                    }
                }
            }
            Some(other) => {
                let msg = format!(
                    "cniVersions: expected an array, got {}",
                    json_kind(other, Spelling::Article)
                );
                self.cx.at(src, Code::WrongType, "/cniVersions", msg);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let list: Vec<String> = entries.iter().map(|(_, v)| v.clone()).collect();
        let selected = version::select(&declared, &list).ok()?;
        let selected_ptr = entries
            .iter()
            .find(|(_, v)| *v == selected)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| "/cniVersion".to_string());
        // every version written that is not a released spec version
        let mut written: Vec<(String, String)> = entries.clone();
        if root.contains_key("cniVersion") {
            written.insert(0, ("/cniVersion".to_string(), declared.clone()));
        }
        for (p, v) in &written {
            let newer = version::compare(v, version::CURRENT).is_ok_and(|o| o.is_gt());
            if version::is_supported(v) || newer || *p == selected_ptr {
                continue;
            }
            let path = self.cx.path(src, p);
            self.cx.at(
                src,
                Code::VersionIgnored,
                p,
                format!("{path}: {v:?} is not a CNI spec version and is never selected"),
            );
            self.cx
                .hint(format!("spec versions are: {}", version::SUPPORTED.join(", ")));
        }
        if !version::is_supported(&selected) {
            let path = self.cx.path(src, &selected_ptr);
            let why = if selected.is_empty() {
                "\"\" (0.1.0)".to_string()
            } else {
                format!("{selected:?}")
            };
            if root.contains_key("cniVersion") || !entries.is_empty() {
                self.cx.at(
                    src,
                    Code::UnsupportedVersion,
                    &selected_ptr,
                    format!("{path}: the selected version {why} is not a supported CNI spec version"),
                );
                self.cx
                    .hint(format!("supported versions: {}", version::SUPPORTED.join(", ")));
                return None;
            }
            return Some("0.1.0".to_string());
        }
        Some(selected)
    }

    /// Resolution of `type` and `ipam.type`, and whether each supports the selected version.
    fn check_plugin_versions(&mut self, p: &PluginRef, selected: Option<&str>) {
        let Some(t) = p.ptype.as_deref() else { return };
        let tp = push_token(&p.ptr, "type");
        if let (Some(sel), Some(Value::String(own))) = (selected, p.obj.get("cniVersion")) {
            if !own.is_empty() && own != sel {
                let path = self.cx.path(p.src, &push_token(&p.ptr, "cniVersion"));
                self.cx.at(
                    p.src,
                    Code::PluginVersionIgnored,
                    &push_token(&p.ptr, "cniVersion"),
                    format!("{path}: {own:?} is replaced by the list's version {sel:?} in every request"),
                );
                self.cx
                    .hint("remove the plugin's cniVersion; the list's version is what the plugin gets");
            }
        }
        self.resolve(p.src, &tp, t, Code::TypeNotFound, selected);
        if let Some(it) = p.ipam_type.as_deref() {
            let itp = push_token(&push_token(&p.ptr, "ipam"), "type");
            self.resolve(p.src, &itp, it, Code::IpamNotFound, selected);
        }
    }

    fn resolve(&mut self, src: SrcId, ptr: &str, t: &str, missing: Code, selected: Option<&str>) {
        if !self.opts.resolve {
            return;
        }
        let label = self.cx.path(src, ptr);
        let reg = self.opts.registry;
        if reg.is_in_process(t) {
            if let (Some(sel), Ok(stage)) = (selected, reg.resolve(t)) {
                let vs = stage.supported_versions();
                if !vs.iter().any(|v| v == sel) {
                    let msg = format!(
                        "{label}: the in-process {t} stage does not support version {sel:?} (it supports {})",
                        vs.join(", ")
                    );
                    self.cx.at(src, Code::PluginVersionUnsupported, ptr, msg);
                }
            }
            return;
        }
        // With no CNI_PATH there is nowhere to look: validating a config away from the
        // node (an operator's CI, a Calico or Cilium file without their binaries) is not
        // an error, only unchecked.
        if reg.cni_path.is_empty() {
            let msg = format!("{label}: {t:?} is not an in-process stage and no CNI_PATH was given to find it");
            self.cx.at(src, Code::TypeNotChecked, ptr, msg);
            self.cx
                .hint("set CNI_PATH (or --cni-path) to the directories that hold the plugin binaries to check it");
            return;
        }
        let found = match find_in_path(t, &reg.cni_path) {
            Ok(p) => p,
            Err(e) => {
                self.cx.at(src, missing, ptr, format!("{label}: {}", e.msg));
                self.cx.hint(format!(
                    "install the {t:?} plugin in one of the CNI_PATH directories, or fix the type"
                ));
                return;
            }
        };
        let (Some(sel), true) = (selected, self.opts.exec_versions) else {
            return;
        };
        let timeout = self.opts.version_timeout;
        let answer = self
            .versions
            .entry(found.clone())
            .or_insert_with(|| crate::exec::version_info(&found, timeout).map_err(|e| e.msg))
            .clone();
        match answer {
            Ok(vs) if vs.iter().any(|v| v == sel) => {}
            Ok(vs) => {
                let msg = format!(
                    "{label}: {} does not support version {sel:?}; it supports {}",
                    found.display(),
                    if vs.is_empty() {
                        "none".to_string()
                    } else {
                        vs.join(", ")
                    }
                );
                self.cx.at(src, Code::PluginVersionUnsupported, ptr, msg);
                let best = vs
                    .iter()
                    .filter(|v| version::is_supported(v))
                    .max_by(|a, b| version::compare(a, b).unwrap_or(std::cmp::Ordering::Equal));
                if let Some(b) = best {
                    self.cx.hint(format!(
                        "use cniVersion {b:?} (the newest it supports), or upgrade the plugin"
                    ));
                }
            }
            Err(why) => {
                let msg = format!("{label}: asking {} for its versions failed: {why}", found.display());
                self.cx.at(src, Code::VersionQueryFailed, ptr, msg);
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
