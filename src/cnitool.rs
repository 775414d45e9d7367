//! cnitool stand-in: when the binary is invoked as `cnitool` it keeps cnitool's exact
//! contract (environment, container ID, output format, messages on stderr, exit status),
//! so it can replace cnitool in other projects' test suites.

use crate::output::{write_stderr, write_stdout};
use crate::runtime;
use cnichain_engine::load;
use cnichain_engine::settings::Settings;
use cnichain_engine::spec::args::{parse_capability_args, parse_cni_args};
use cnichain_engine::spec::error::CniError;
use std::path::PathBuf;

fn usage(me: &str) -> i32 {
    let mut text = format!("{me}: Add, check, or remove network interfaces from a network namespace\n");
    for c in ["add  ", "check", "del  ", "gc   ", "status"] {
        text.push_str(&format!("  {me} {c} <net> <netns>\n"));
    }
    write_stderr(&text);
    1
}

pub fn main() -> i32 {
    crate::output::init_logging();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return usage("cnitool");
    }
    match run(&args[1], &args[2], &args[3]) {
        Ok(()) => 0,
        Err(e) => {
            write_stderr(&format!("{e}\n"));
            1
        }
    }
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

fn run(cmd: &str, net: &str, netns: &str) -> Result<(), CniError> {
    let dir = match env("NETCONFPATH") {
        d if d.is_empty() => PathBuf::from(load::DEFAULT_CONF_DIR),
        d => PathBuf::from(d),
    };
    let list = load::load_by_name(&dir, net)?;
    let caps = parse_capability_args(&env("CAP_ARGS"), "CAP_ARGS")?;
    let extra = parse_cni_args(&env("CNI_ARGS"))?;
    let ifname = std::env::var("CNI_IFNAME").unwrap_or_else(|_| "eth0".into());
    let abs = runtime::abs_path(netns);
    let mut rt = runtime::runtime_conf(runtime::cnitool_container_id(&abs), abs.display().to_string(), ifname);
    rt.args = extra;
    rt.capability_args = caps;
    // cnitool keeps libcni's behaviour: a failed ADD is left to the runtime's DEL.
    let engine = runtime::engine(
        &env("CNI_PATH"),
        Settings {
            rollback: false,
            ..Settings::from_process_env()
        },
    );
    match cmd {
        "add" => {
            let res = engine.add(&list, &rt)?;
            // cnitool prints with 4-space indentation and no trailing newline. ADD has
            // committed: a failing stdout is an error (exit status 1), not a panic.
            write_stdout(&res.to_json_pretty()).map_err(|e| {
                CniError::io(format!(
                    "ADD succeeded (its result is cached), but writing it to stdout failed: {e}"
                ))
            })
        }
        "check" => engine.check(&list, &rt),
        "del" => engine.del(&list, &rt),
        // upstream cnitool's gc passes no valid set: every cached attachment is stale
        "gc" => engine.gc(&list, None),
        "status" => engine.status(&list),
        // cnitool exits 0 on an unknown verb
        _ => Ok(()),
    }
}
