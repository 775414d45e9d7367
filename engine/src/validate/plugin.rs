//! One plugin object: its `type` and `ipam.type`, and the data directories an in-process
//! stage would write.

use super::diag::Code;
use super::pos::push_token;
use super::{schema, typecheck, PluginRef, SrcId, Validator};
use crate::spec::ids;
use crate::spec::json_kind::{json_kind, Spelling};
use serde_json::{Map, Value};
use std::path::Path;

impl Validator<'_> {
    pub(super) fn plugin_ref(&mut self, src: SrcId, ptr: &str, label: String, obj: Map<String, Value>) -> PluginRef {
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
    pub(super) fn check_type(&mut self, src: SrcId, ptr: &str, obj: &Map<String, Value>) -> Option<String> {
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
    pub(super) fn check_data_dirs(
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

    pub(super) fn check_ipam_type(&mut self, src: SrcId, ptr: &str, obj: &Map<String, Value>) -> Option<String> {
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
}
