//! A runtime embedding the engine: load a conflist, build the engine with the
//! in-process stages (plugins without one are exec'd from CNI_PATH), and run ADD, CHECK
//! and DEL for one pod, as a container runtime does through libcni.
//!
//! ```text
//! cargo run -p cnichain-engine --example embed -- /etc/cni/net.d/10-pod.conflist /run/netns/pod1
//! ```
//! Run it as root, against a netns you made (`ip netns add pod1`); state goes to a
//! temporary directory.

use cnichain_engine::chain::Engine;
use cnichain_engine::load;
use cnichain_engine::settings::{split_cni_path, Settings};
use cnichain_engine::spec::args::RuntimeConf;
use cnichain_engine::CniError;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(conflist), Some(netns)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: embed CONFLIST NETNS");
        std::process::exit(2);
    };
    if let Err(e) = run(Path::new(conflist), netns) {
        // The CNI error object, as a plugin would print it.
        println!("{}", e.to_json_pretty());
        std::process::exit(1);
    }
}

fn run(conflist: &Path, netns: &str) -> Result<(), CniError> {
    // 1. The conflist, parsed and version-checked as libcni loads it.
    let list = load::load_file(conflist)?;

    // 2. One Settings value: where the cache and the state live, which plugins are
    //    exec'd, timeouts. A runtime builds it once; every stage sees it.
    let state = std::env::temp_dir().join(format!("cnichain-embed-{}", std::process::id()));
    let settings = Settings {
        cache_dir: state.join("cache"),
        state_dir: state.join("state"),
        ..Settings::from_process_env()
    };

    let cni_path = std::env::var("CNI_PATH")
        .map(|p| split_cni_path(&p))
        .unwrap_or_default();
    // 3. The engine: the in-process stages registered, everything else from CNI_PATH.
    let engine = Engine::from_settings(cni_path, settings, cnichain_stages::register_all);

    // 4. One attachment: the runtime's container ID, the pod netns, the interface.
    let rt = RuntimeConf {
        container_id: "embed-example".into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let result = engine.add(&list, &rt)?;
    println!("{}", result.to_json_pretty());
    engine.check(&list, &rt)?;
    engine.del(&list, &rt)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
