//! Plugin mode's I/O: a runtime executes the binary with CNI_COMMAND set. The protocol
//! (environment, version gating, locks, the verbs) is the engine's `skel`; this reads
//! stdin, hands it over with the environment, and writes what comes back.

use cnichain_engine::skel::{self, Mode, Output};
use std::io::Read;

/// Run as a plugin. `stage` is the drop-in type, or None for the meta-plugin.
pub fn main(stage: Option<&str>) -> i32 {
    crate::output::init_logging();
    let mut stdin = Vec::new();
    let out = match std::io::stdin().take(skel::MAX_STDIN + 1).read_to_end(&mut stdin) {
        Err(e) => skel::stdin_failed(&e),
        Ok(_) => {
            let mode = stage.map_or(Mode::Meta, Mode::DropIn);
            skel::run(mode, &|k| std::env::var(k).ok(), &stdin, &cnichain_stages::register_all)
        }
    };
    write(out)
}

/// The skeleton's "about" text for a drop-in run by hand without CNI_COMMAND.
pub fn about(name: &str) -> i32 {
    write(skel::about(name))
}

fn write(out: Output) -> i32 {
    crate::output::write_stderr(&out.stderr);
    if out.stdout.is_empty() {
        return out.status;
    }
    match crate::output::write_stdout(&out.stdout) {
        Ok(()) => out.status,
        // The runtime never sees a result that could not be written: exit 1.
        Err(e) if out.status == 0 => {
            crate::output::write_stderr(&format!("cnichain: writing the result to stdout: {e}\n"));
            1
        }
        Err(_) => out.status,
    }
}
