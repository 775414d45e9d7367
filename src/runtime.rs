//! Shared set-up of the engine for the CLI and the cnitool stand-in.

use cnichain_engine::cache::Cache;
use cnichain_engine::chain::Engine;
use cnichain_engine::lock::Locks;
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::stage::{split_cni_path, ExecPolicy, Registry};
use sha2::{Digest, Sha512};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub struct Settings {
    pub cni_path: String,
    pub cache_dir: PathBuf,
    pub exec: ExecPolicy,
    pub plugin_timeout: Option<Duration>,
    pub cache_fsync: bool,
    /// Locks and records (tuning) live here; None: no locks.
    pub state_dir: Option<PathBuf>,
    pub rollback: bool,
}

pub fn engine(s: &Settings) -> Engine {
    let mut reg = Registry::new(split_cni_path(&s.cni_path));
    cnichain_stages::register_all(&mut reg);
    reg.policy = s.exec.clone();
    reg.plugin_timeout = s.plugin_timeout;
    let mut cache = Cache::new(&s.cache_dir);
    cache.fsync = s.cache_fsync;
    let mut engine = Engine::new(reg, cache);
    engine.locks = s.state_dir.as_deref().map(Locks::new);
    engine.rollback = s.rollback;
    engine
}

/// Go's filepath.Abs: join with the cwd and clean lexically (no symlinks resolved).
pub fn abs_path(p: &str) -> PathBuf {
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// cnitool's container ID: "cnitool-" + the first 10 bytes of sha512(abs netns path), hex.
pub fn cnitool_container_id(netns_abs: &Path) -> String {
    let sum = Sha512::digest(netns_abs.as_os_str().as_encoded_bytes());
    let hex: String = sum[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

pub fn runtime_conf(container_id: String, netns: String, ifname: String) -> RuntimeConf {
    RuntimeConf {
        container_id,
        netns,
        ifname,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_matches_cnitool() {
        // sha512("/run/netns/x") computed independently with sha512sum
        let id = cnitool_container_id(Path::new("/run/netns/x"));
        assert_eq!(id, "cnitool-55e2cecc95014b0f7fc4");
    }

    #[test]
    fn abs_cleans_lexically() {
        assert_eq!(abs_path("/run/netns/../netns/a"), PathBuf::from("/run/netns/a"));
        assert_eq!(abs_path("/a/./b//c"), PathBuf::from("/a/b/c"));
    }
}
