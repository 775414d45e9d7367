//! Shared set-up of the engine for the CLI and the cnitool stand-in.

use cnichain_engine::chain::Engine;
use cnichain_engine::settings::{split_cni_path, Settings};
use cnichain_engine::spec::args::RuntimeConf;
use sha2::{Digest, Sha512};
use std::path::{Component, Path, PathBuf};

/// The engine every entry point runs: `settings` over every in-process stage, other
/// plugins exec'd from CNI_PATH `cni_path` (colon-separated).
/// Spans are recorded when the settings name a trace file.
pub fn engine(cni_path: &str, settings: Settings) -> Engine {
    settings.start_tracing(&|k| std::env::var(k).ok());
    Engine::from_settings(split_cni_path(cni_path), settings, cnichain_stages::register_all)
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
