//! `cnichain reconcile`, the engine side: put back the kernel state of a live attachment
//! that something else wiped (a firewall reload, `nft flush ruleset`, `tc qdisc del`).
//!
//! What an attachment should have is what its libcni cache entry says (the conflist it
//! was added with, its CNI_ARGS, capability arguments and final result): each in-process
//! stage of that chain is asked, in ADD order, to re-create from those records what the
//! kernel no longer has ([`crate::stage::Stage::reconcile`]). It runs under the locks an
//! ADD takes (the shared GC lock, then the attachment's), so it never races the
//! attachment's own ADD or DEL, nor a GC.
//!
//! Which attachments: only those cnichain made. An attachment's lock file
//! (`locks/<net>/<cid>:<ifname>.lock`) is made by every cnichain ADD (CLI, drop-ins,
//! meta-plugin) and stays until its DEL; the reference plugins run by libcni leave none,
//! so their attachments (cache and host-local store only) are never touched.

use crate::cache::CacheEntry;
use crate::chain::Engine;
use crate::request;
use crate::spec::args::RuntimeConf;
use crate::spec::conflist::NetConfList;
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::stage::{Command, Invocation};
use serde_json::{Map, Value};

/// One thing a stage restored (or, with `--dry-run`, would restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub plugin_type: String,
    pub what: String,
}

const NSFS_MAGIC: i64 = 0x6e736673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Whether `path` is a live network namespace (an nsfs bind mount, or
/// /proc/<pid>/ns/net of a running process). A missing path, a plain file left by a
/// runtime that unmounted it, anything else: gone.
pub fn netns_alive(path: &str) -> bool {
    if path.is_empty() || path.contains('\0') {
        return false;
    }
    let Ok(cpath) = std::ffi::CString::new(path) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: cpath is a valid C string and st a properly sized out-parameter.
    if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } != 0 {
        return false;
    }
    let magic = (st.f_type as i64) & 0xffff_ffff;
    magic == NSFS_MAGIC || magic == PROC_SUPER_MAGIC
}

/// The conflist a cache entry was added with (libcni caches the list's bytes; a single
/// `.conf` is upconverted as libcni would).
pub fn entry_list(entry: &CacheEntry) -> Result<NetConfList, CniError> {
    NetConfList::from_bytes(&entry.config).or_else(|e| NetConfList::from_single_conf(&entry.config).map_err(|_| e))
}

/// The pod netns of a cache entry: its `netns`, else its result's interface sandbox
/// (libcni before 1.2 keeps no netns in the cache).
pub fn entry_netns(entry: &CacheEntry) -> Option<String> {
    if !entry.netns.is_empty() {
        return Some(entry.netns.clone());
    }
    entry
        .result
        .as_ref()
        .and_then(|r| r.get("interfaces"))
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|i| i.get("sandbox").and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .map(str::to_string)
}

/// The runtime arguments a cache entry was added with.
pub fn entry_runtime(entry: &CacheEntry) -> RuntimeConf {
    RuntimeConf {
        container_id: entry.container_id.clone(),
        netns: entry_netns(entry).unwrap_or_default(),
        ifname: entry.ifname.clone(),
        args: entry.cni_args.clone(),
        capability_args: entry.capability_args.clone(),
    }
}

impl Engine {
    /// Reconcile the cached attachment (network, container, ifname) under the locks an
    /// ADD takes. Read again under the locks: None when its cache entry, its lock file or
    /// its netns is gone by then (a DEL won the race; nothing is made for it). Err when
    /// its records cannot be read or a stage fails (the other stages still ran).
    pub fn reconcile_attachment(
        &self,
        net: &str,
        container_id: &str,
        ifname: &str,
        dry_run: bool,
    ) -> Result<Option<Vec<Restored>>, CniError> {
        crate::spec::ids::validate_network_name(net)?;
        crate::spec::ids::validate_container_id(container_id)?;
        crate::spec::ids::validate_ifname(ifname)?;
        let held = match &self.locks {
            Some(locks) => {
                if !locks.has_attachment(net, container_id, ifname) {
                    return Ok(None);
                }
                let gc = locks.gc(false)?;
                let att = locks.attachment(net, container_id, ifname)?;
                if att.created {
                    // Its DEL removed the lock file since: not ours to bring back.
                    att.remove();
                    return Ok(None);
                }
                Some((gc, att))
            }
            None => None,
        };
        let entry = match self.cache.read(net, container_id, ifname) {
            crate::cache::Lookup::Found(e) => e,
            crate::cache::Lookup::Missing => return Ok(None),
            crate::cache::Lookup::Corrupt(why) => return Err(CniError::decode(why)),
        };
        if !entry_netns(&entry).is_some_and(|n| netns_alive(&n)) {
            return Ok(None);
        }
        let list = entry_list(&entry)?;
        let rt = entry_runtime(&entry);
        crate::chain::validate_attachment(&list, &rt, Command::Add)?;
        let prev = match &entry.result {
            Some(v) => Some(CniResult::from_value(v, &list.cni_version).and_then(|r| r.convert(&list.cni_version))?),
            None => None,
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        self.reconcile_list(&list, &rt, prev.as_ref(), dry_run, &mut out, &mut errors);
        drop(held);
        crate::chain::combine_errors(errors)?;
        Ok(Some(out))
    }

    fn reconcile_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
        prev: Option<&CniResult>,
        dry_run: bool,
        out: &mut Vec<Restored>,
        errors: &mut Vec<CniError>,
    ) {
        for plugin in &list.plugins {
            let config = request::build(list, plugin, prev, rt);
            if plugin.plugin_type == "cnichain" && !self.registry.is_in_process("cnichain") {
                // The meta-plugin: its inner chain ran in-process with the capability
                // arguments of the entry's runtimeConfig.
                match meta_inner(&config, &list.cni_version) {
                    Ok((inner, rc)) => {
                        let mut rt2 = rt.clone();
                        rt2.capability_args = rc;
                        self.reconcile_list(&inner, &rt2, prev, dry_run, out, errors);
                    }
                    Err(e) => errors.push(e.context("plugin type=\"cnichain\" (reconcile)")),
                }
                continue;
            }
            // Exec'd plugins are not cnichain's to restore.
            if !self.registry.is_in_process(&plugin.plugin_type) {
                continue;
            }
            let stage = match self.registry.resolve(&plugin.plugin_type) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let inv = Invocation {
                command: Command::Check,
                config: &config,
                prev_result: prev,
                rt,
                version: &list.cni_version,
                cni_path: &self.registry.cni_path,
                registry: &self.registry,
            };
            match stage.reconcile(&inv, dry_run) {
                Ok(lines) => out.extend(lines.into_iter().map(|what| Restored {
                    plugin_type: plugin.plugin_type.clone(),
                    what,
                })),
                Err(e) => errors.push(e.context(format!("plugin type={:?} failed (reconcile)", plugin.plugin_type))),
            }
        }
    }
}

/// The meta-plugin's inner chain and the capability arguments its plugins see, as the
/// meta-plugin builds them from its request config.
fn meta_inner(config: &Map<String, Value>, version: &str) -> Result<(NetConfList, Map<String, Value>), CniError> {
    let mut inner = Map::new();
    for k in ["name", "disableCheck", "disableGC", "plugins"] {
        if let Some(v) = config.get(k) {
            inner.insert(k.to_string(), v.clone());
        }
    }
    inner.insert("cniVersion".into(), Value::String(version.to_string()));
    let list = NetConfList::from_map(&inner, Vec::new(), Vec::new())?;
    let rc = match config.get("runtimeConfig") {
        Some(Value::Object(rc)) => rc.clone(),
        _ => Map::new(),
    };
    Ok((list, rc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_liveness() {
        assert!(netns_alive("/proc/self/ns/net"));
        assert!(!netns_alive("/nonexistent/netns"));
        assert!(!netns_alive(""));
        let f = std::env::temp_dir().join(format!("cnichain-netns-file-{}", std::process::id()));
        std::fs::write(&f, "").unwrap();
        assert!(
            !netns_alive(&f.display().to_string()),
            "a plain file left where a netns was"
        );
        std::fs::remove_file(&f).unwrap();
    }
}
