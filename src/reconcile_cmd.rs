//! `cnichain reconcile [NET] [--dry-run]`: put back, for every live attachment cnichain
//! made, the kernel state its records say it has and the kernel lost (see
//! `cnichain_engine::reconcile` and each stage's `reconcile`).
//!
//! Output, one line per thing restored, on stdout:
//! `restored NET CONTAINERID/IFNAME: TYPE: WHAT` (`would restore ...` with --dry-run),
//! then `nothing to do (N live attachments checked)` when there was nothing. A failing
//! attachment is named on stderr and the others still run; the exit status is then 1.

use crate::output::{write_stderr, write_stdout};
use cnichain_engine::chain::Engine;
use cnichain_engine::spec::error::CniError;

/// Reconcile every cached attachment of `net` (all networks when None).
pub fn run(engine: &Engine, net: Option<&str>, dry_run: bool) -> Result<(), CniError> {
    let verb = if dry_run { "would restore" } else { "restored" };
    let mut lines = Vec::new();
    let mut checked = 0usize;
    let mut errors = Vec::new();
    // The shared GC lock for the whole walk (each attachment takes it again, shared): the
    // file is then made and removed once, not once per attachment.
    let _gc = match &engine.locks {
        Some(locks) => Some(locks.gc(false)?),
        None => None,
    };
    for e in engine.cache.entries() {
        if net.is_some_and(|n| n != e.network_name) || e.ifname.is_empty() {
            continue;
        }
        match engine.reconcile_attachment(&e.network_name, &e.container_id, &e.ifname, dry_run) {
            Ok(None) => {}
            Ok(Some(done)) => {
                checked += 1;
                for r in done {
                    lines.push(format!(
                        "{verb} {} {}/{}: {}: {}\n",
                        e.network_name, e.container_id, e.ifname, r.plugin_type, r.what
                    ));
                }
            }
            Err(err) => {
                checked += 1;
                write_stderr(&format!(
                    "cnichain reconcile: {} {}/{}: {err}\n",
                    e.network_name, e.container_id, e.ifname
                ));
                errors.push(err.context(format!("{} {}/{}", e.network_name, e.container_id, e.ifname)));
            }
        }
    }
    if lines.is_empty() && errors.is_empty() {
        lines.push(format!("nothing to do ({checked} live attachments checked)\n"));
    }
    write_stdout(&lines.concat()).map_err(|e| CniError::io(format!("writing the report: {e}")))?;
    cnichain_engine::chain::combine_errors(errors)
}
