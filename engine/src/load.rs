//! Conflist discovery the way libcni and cnitool do it: a file, or a directory searched
//! by network name (`*.conflist` sorted, then `*.conf`/`*.json` upconverted), with plugin
//! objects aggregated from `<dir>/<name>/*.conf` unless `loadOnlyInlinedPlugins`.

use crate::spec::conflist::{parse_object, NetConfList, PluginConf};
use crate::spec::error::CniError;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Default directory of network configurations (cnitool's NETCONFPATH default).
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Config files larger than this are refused rather than read into memory.
pub const MAX_CONF_BYTES: u64 = 16 << 20;

pub fn read_limited(path: &Path) -> Result<Vec<u8>, CniError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| CniError::io(format!("error reading {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(MAX_CONF_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::io(format!("error reading {}: {e}", path.display())))?;
    if buf.len() as u64 > MAX_CONF_BYTES {
        return Err(CniError::invalid_config(format!(
            "{} is larger than {MAX_CONF_BYTES} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// Regular files in `dir` whose extension is one of `exts` (with the dot), sorted by
/// name. A missing directory is an empty list, as in libcni.
pub fn conf_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, CniError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::io(format!("reading directory {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}"));
        if let Some(ext) = ext {
            if exts.contains(&ext.as_str()) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Load one conflist file (aggregating `<dir>/<name>/*.conf`), or a `.conf`/`.json`
/// single-plugin file upconverted to a list.
pub fn load_file(path: &Path) -> Result<NetConfList, CniError> {
    let bytes = read_limited(path)?;
    let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
    let ctx = |e: CniError| e.context(path.display());
    if !is_list {
        return NetConfList::from_single_conf(&bytes).map_err(ctx);
    }
    let raw = parse_object(&bytes, "configuration list").map_err(ctx)?;
    let mut extra = Vec::new();
    let only_inlined = matches!(raw.get("loadOnlyInlinedPlugins"), Some(Value::Bool(true)))
        || matches!(raw.get("loadOnlyInlinedPlugins"), Some(Value::String(s)) if s.eq_ignore_ascii_case("true"));
    if let (Some(Value::String(name)), false) = (raw.get("name"), only_inlined) {
        // The name becomes a path component: only aggregate for a valid name.
        if crate::spec::ids::validate_network_name(name).is_ok() {
            let dir = path.parent().unwrap_or(Path::new(".")).join(name);
            for f in conf_files(&dir, &[".conf"])? {
                let b = read_limited(&f)?;
                extra.push(PluginConf::from_bytes(&b, &f.display().to_string())?);
            }
        }
    }
    NetConfList::from_map(&raw, bytes, extra).map_err(ctx)
}

/// cnitool's LoadConfList(dir, name).
pub fn load_by_name(dir: &Path, name: &str) -> Result<NetConfList, CniError> {
    let lists = conf_files(dir, &[".conflist"])?;
    for f in &lists {
        let l = load_file(f)?;
        if l.name == name {
            return Ok(l);
        }
    }
    let singles = conf_files(dir, &[".conf", ".json"])?;
    if singles.is_empty() && lists.is_empty() {
        return Err(CniError::invalid_config(format!(
            "no net configurations found in {}",
            dir.display()
        )));
    }
    for f in &singles {
        let l = load_file(f)?;
        if l.name == name {
            return Ok(l);
        }
    }
    Err(CniError::invalid_config(format!(
        "no net configuration with name \"{name}\" in {}",
        dir.display()
    )))
}

/// A network argument is a file path if it names an existing file, else a network name
/// searched in `dir`.
pub fn load(net: &str, dir: &Path) -> Result<NetConfList, CniError> {
    let p = Path::new(net);
    if (net.contains('/') || net.ends_with(".conflist") || net.ends_with(".conf") || net.ends_with(".json"))
        && p.is_file()
    {
        return load_file(p);
    }
    load_by_name(dir, net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cnichain-load-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn searches_conflists_then_confs_by_name() {
        let d = tmpdir("search");
        std::fs::write(
            d.join("20-b.conflist"),
            r#"{"name":"b","cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.conflist"),
            r#"{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"y"}]}"#,
        )
        .unwrap();
        std::fs::write(d.join("30-c.conf"), r#"{"name":"c","cniVersion":"0.4.0","type":"z"}"#).unwrap();
        std::fs::write(
            d.join("40-b.json"),
            r#"{"name":"b","cniVersion":"0.4.0","type":"shadowed"}"#,
        )
        .unwrap();
        assert_eq!(load_by_name(&d, "b").unwrap().plugins[0].plugin_type, "x");
        assert_eq!(load_by_name(&d, "c").unwrap().plugins[0].plugin_type, "z");
        let e = load_by_name(&d, "nope").unwrap_err();
        assert!(e.msg.contains("no net configuration with name \"nope\""));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn aggregates_plugin_dir_unless_inlined_only() {
        let d = tmpdir("agg");
        std::fs::write(d.join("n.conflist"), r#"{"name":"n","plugins":[{"type":"a"}]}"#).unwrap();
        std::fs::create_dir_all(d.join("n")).unwrap();
        std::fs::write(d.join("n/2.conf"), r#"{"type":"c"}"#).unwrap();
        std::fs::write(d.join("n/1.conf"), r#"{"type":"b"}"#).unwrap();
        std::fs::write(d.join("n/ignored.json"), r#"{"type":"z"}"#).unwrap();
        let l = load_file(&d.join("n.conflist")).unwrap();
        let types: Vec<_> = l.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["a", "b", "c"]);
        std::fs::write(
            d.join("n.conflist"),
            r#"{"name":"n","loadOnlyInlinedPlugins":true,"plugins":[{"type":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(load_file(&d.join("n.conflist")).unwrap().plugins.len(), 1);
        // no inlined plugins at all: the directory supplies them
        std::fs::write(d.join("n.conflist"), r#"{"name":"n"}"#).unwrap();
        assert_eq!(load_file(&d.join("n.conflist")).unwrap().plugins.len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_empty_dir_says_so() {
        let d = tmpdir("empty");
        let e = load_by_name(&d, "x").unwrap_err();
        assert!(e.msg.contains("no net configurations found"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
