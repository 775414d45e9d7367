//! The list's `cniVersion` / `cniVersions`, and whether each plugin type resolves (an
//! in-process stage or a binary in CNI_PATH) and supports the selected version.

use super::diag::Code;
use super::pos::push_token;
use super::{PluginRef, SrcId, Validator};
use crate::spec::json_kind::{json_kind, Spelling};
use crate::spec::version;
use crate::stage::find_in_path;
use serde_json::{Map, Value};

impl Validator<'_> {
    /// `cniVersion` and `cniVersions`; returns the selected version when it is usable.
    pub(super) fn check_versions(&mut self, src: SrcId, root: &Map<String, Value>, what: &str) -> Option<String> {
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
    pub(super) fn check_plugin_versions(&mut self, p: &PluginRef, selected: Option<&str>) {
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

    pub(super) fn resolve(&mut self, src: SrcId, ptr: &str, t: &str, missing: Code, selected: Option<&str>) {
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
