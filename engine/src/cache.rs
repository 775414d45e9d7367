//! libcni's result cache: `<dir>/results/<net>-<cid>-<ifname>`, JSON kind `cniCacheV1`
//! with the conflist bytes base64-encoded, so containerd, CRI-O and cnitool read ours and
//! we read theirs. Written atomically (libcni writes in place, which leaves empty files
//! after a crash: cni#1055).

use crate::spec::args::RuntimeConf;
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";
pub const KIND_V1: &str = "cniCacheV1";

#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub container_id: String,
    pub ifname: String,
    pub network_name: String,
    pub netns: String,
    pub config: Vec<u8>,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The final ADD result as stored (its own version); None for a legacy or empty entry.
    pub result: Option<Value>,
}

impl CacheEntry {
    /// The runtime arguments the attachment was added with (GC's DEL of a stale one).
    pub fn into_runtime(self) -> RuntimeConf {
        RuntimeConf {
            container_id: self.container_id,
            netns: self.netns,
            ifname: self.ifname,
            args: self.cni_args,
            capability_args: self.capability_args,
        }
    }
}

/// What a cache lookup found.
#[derive(Debug)]
pub enum Lookup {
    Missing,
    Found(CacheEntry),
    /// Present but unreadable: empty, truncated, garbage, wrong kind.
    Corrupt(String),
}

pub struct Cache {
    pub dir: PathBuf,
    /// fsync the entry before the rename. Off by default: the rename alone means no
    /// reader ever sees a partial file, even after a kill -9; fsync only adds
    /// durability across a power loss (after which the pods are gone and DEL tolerates
    /// a missing entry), and costs 2-20 ms per ADD on a VM disk.
    pub fsync: bool,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            dir: dir.into(),
            fsync: false,
        }
    }

    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// The ids were validated before they get here, so none holds a '/'.
    pub fn path(&self, net: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results_dir().join(format!("{net}-{container_id}-{ifname}"))
    }

    pub fn write(&self, net: &str, rt: &RuntimeConf, config: &[u8], result: &CniResult) -> Result<(), CniError> {
        let mut m = Map::new();
        m.insert("kind".into(), Value::String(KIND_V1.into()));
        m.insert("containerId".into(), Value::String(rt.container_id.clone()));
        m.insert(
            "config".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(config)),
        );
        m.insert("ifName".into(), Value::String(rt.ifname.clone()));
        m.insert("networkName".into(), Value::String(net.into()));
        if !rt.netns.is_empty() {
            m.insert("netns".into(), Value::String(rt.netns.clone()));
        }
        if !rt.args.is_empty() {
            let pairs = rt
                .args
                .iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), Value::String(v.clone())]))
                .collect();
            m.insert("cniArgs".into(), Value::Array(pairs));
        }
        if !rt.capability_args.is_empty() {
            m.insert("capabilityArgs".into(), Value::Object(rt.capability_args.clone()));
        }
        m.insert("result".into(), result.to_value());
        let bytes = serde_json::to_vec(&m).map_err(|e| CniError::internal(e.to_string()))?;
        let path = self.path(net, &rt.container_id, &rt.ifname);
        write_atomic_below(&self.dir, &path, &bytes, self.fsync).map_err(|e| {
            CniError::io(format!(
                "failed to set network {net:?} cached result: {}: {e}",
                path.display()
            ))
        })
    }

    pub fn read(&self, net: &str, container_id: &str, ifname: &str) -> Lookup {
        let path = self.path(net, container_id, ifname);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => return Lookup::Corrupt(format!("reading {}: {e}", path.display())),
        };
        parse_entry(&bytes).map_or_else(
            |why| Lookup::Corrupt(format!("{}: {why}", path.display())),
            Lookup::Found,
        )
    }

    /// Remove the entry; a missing file is fine. So is the temporary file of an ADD
    /// killed while writing the entry (crash consistency: DEL leaves no file behind).
    pub fn remove(&self, net: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.path(net, container_id, ifname);
        remove_temps(&path);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("removing {}: {e}", path.display()))),
        }
    }

    /// Every readable cniCacheV1 entry (libcni GetCachedAttachments). Unreadable files
    /// are skipped.
    pub fn entries(&self) -> Vec<CacheEntry> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.results_dir()) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        paths.sort();
        for p in paths {
            if let Ok(b) = std::fs::read(&p) {
                if let Ok(e) = parse_entry(&b) {
                    if !e.network_name.is_empty() && !e.container_id.is_empty() {
                        out.push(e);
                    }
                }
            }
        }
        out
    }
}

/// A cache file: cniCacheV1, or the legacy bare result (libcni <= 0.7).
pub fn parse_entry(bytes: &[u8]) -> Result<CacheEntry, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("not a JSON object".into());
    };
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    match m.get("kind") {
        Some(Value::String(k)) if k == KIND_V1 => {}
        None if m.contains_key("cniVersion") => {
            // legacy: the file is the result itself
            return Ok(CacheEntry {
                container_id: String::new(),
                ifname: String::new(),
                network_name: String::new(),
                netns: String::new(),
                config: Vec::new(),
                cni_args: Vec::new(),
                capability_args: Map::new(),
                result: Some(Value::Object(m)),
            });
        }
        other => return Err(format!("wrong kind {other:?}")),
    }
    let config = match m.get("config") {
        Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("config is not base64: {e}"))?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("config is not a string".into()),
    };
    let mut cni_args = Vec::new();
    if let Some(Value::Array(a)) = m.get("cniArgs") {
        for p in a {
            match p.as_array().map(|x| x.as_slice()) {
                Some([Value::String(k), Value::String(v)]) => cni_args.push((k.clone(), v.clone())),
                _ => return Err("cniArgs is not a list of [key, value] pairs".into()),
            }
        }
    }
    let capability_args = match m.get("capabilityArgs") {
        Some(Value::Object(c)) => c.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("capabilityArgs is not an object".into()),
    };
    let result = match m.get("result") {
        Some(Value::Object(r)) => Some(Value::Object(r.clone())),
        None | Some(Value::Null) => None,
        Some(_) => return Err("result is not an object".into()),
    };
    Ok(CacheEntry {
        container_id: s("containerId"),
        ifname: s("ifName"),
        network_name: s("networkName"),
        netns: s("netns"),
        config,
        cni_args,
        capability_args,
        result,
    })
}

/// The temporary files `write_atomic` renames into `path`: `.<name>.tmp-<16 hex>` beside
/// it, a random name made exclusively, so nobody can plant one ahead.
fn temp_prefix(path: &Path) -> Option<String> {
    path.file_name().and_then(|n| n.to_str()).map(|n| format!(".{n}.tmp"))
}

/// Remove the temporary files a writer of `path` killed between creating one and the
/// rename left behind (and the fixed `.<name>.tmp` of earlier versions). Only names of
/// that exact form: another entry's name cannot match.
pub fn remove_temps(path: &Path) {
    let (Some(dir), Some(prefix)) = (path.parent(), temp_prefix(path)) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let ours = rest.is_empty()
            || rest
                .strip_prefix('-')
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// [`write_atomic_below`] with the parent directory as the operator's base.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_below(dir, path, bytes, fsync)
}

/// Write to a new temporary file in the same directory, (fsync,) rename over, (fsync
/// the directory). Directories 0700 and the file 0600, as libcni. The directories
/// between `base` and the file are cnichain's and must not be symlinks (see
/// `nodefs::make_dirs`); the rename replaces whatever is at `path` (a planted symlink
/// included) without following it. Concurrent writers each leave a whole file.
pub fn write_atomic_below(base: &Path, path: &Path, bytes: &[u8], fsync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::nodefs::make_dirs(base, dir, 0o700)?;
    let prefix = temp_prefix(path).ok_or_else(|| std::io::Error::other(format!("{}: no file name", path.display())))?;
    let tmp = dir.join(format!("{prefix}-{}", crate::nodefs::random_hex()?));
    let mut f = crate::nodefs::create_new(&tmp, 0o600)?;
    let res = (|| {
        f.write_all(bytes)?;
        if fsync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if fsync {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_libcni_written_entry() {
        // As libcni 1.1 writes it (Go field order, base64 config, no netns key).
        let golden = br#"{"kind":"cniCacheV1","containerId":"cnitool-0123456789abcdef0123","config":"eyJuYW1lIjoibiJ9","ifName":"eth0","networkName":"n","cniArgs":[["IgnoreUnknown","1"]],"capabilityArgs":{"portMappings":[{"hostPort":8080}]},"result":{"cniVersion":"1.0.0","dns":{}}}"#;
        let e = parse_entry(golden).unwrap();
        assert_eq!(e.config, br#"{"name":"n"}"#);
        assert_eq!(e.cni_args, vec![("IgnoreUnknown".to_string(), "1".to_string())]);
        assert_eq!(e.network_name, "n");
        assert!(e.capability_args.contains_key("portMappings"));
        assert_eq!(e.result.unwrap()["cniVersion"], "1.0.0");
    }

    #[test]
    fn temporary_names_are_random_and_only_ours_are_removed() {
        let dir = std::env::temp_dir().join(format!("cnichain-cache-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let entry = dir.join("results/n-c-eth0");
        write_atomic_below(&dir, &entry, b"one", false).unwrap();
        assert_eq!(std::fs::read(&entry).unwrap(), b"one");
        let results = dir.join("results");
        // Left by killed writers: ours (both forms), and another entry's.
        for n in [
            ".n-c-eth0.tmp",
            ".n-c-eth0.tmp-0123456789abcdef",
            ".n-c-eth0.5.tmp-0123456789abcdef",
            ".n-c-eth0.tmp-x",
        ] {
            std::fs::write(results.join(n), "").unwrap();
        }
        remove_temps(&entry);
        let mut left: Vec<String> = std::fs::read_dir(&results)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".n-c-eth0.5.tmp-0123456789abcdef", ".n-c-eth0.tmp-x", "n-c-eth0"]
        );
        // Two names in a row differ.
        assert_ne!(
            crate::nodefs::random_hex().unwrap(),
            crate::nodefs::random_hex().unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_entries_are_reported_not_panicked() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"kind\":\"other\"}",
            b"{\"kind\":\"cniCacheV1\",\"config\":\"%%%\"}",
        ] {
            assert!(parse_entry(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
