//! `cnichain inspect [NET] [--format table|json]`: every attachment the node shows, one
//! row each, with its state (see `model`). Read-only: it reads files and dumps kernel
//! state; the only thing it takes is the shared GC lock, and only when the lock
//! directory exists (so that a GC does not take attachments apart under it; a lock
//! file it had to make is removed again).

mod collect;
mod model;
mod render;

use crate::output::write_stdout;
use cnichain_engine::chain::Engine;
use cnichain_engine::spec::error::CniError;
use std::path::Path;

pub fn run(conf_dir: &Path, state_dir: &Path, engine: &Engine, net: Option<&str>, json: bool) -> Result<(), CniError> {
    let _gc = match &engine.locks {
        Some(locks) if locks.dir.is_dir() => Some(locks.gc(false)?),
        _ => None,
    };
    let rows = collect::collect(conf_dir, state_dir, &engine.cache, net);
    let text = if json {
        let report = model::Report {
            version: 1,
            attachments: rows,
        };
        let mut s = serde_json::to_string_pretty(&report).map_err(|e| CniError::internal(e.to_string()))?;
        s.push('\n');
        s
    } else {
        render::table(&rows)
    };
    write_stdout(&text).map_err(|e| CniError::io(format!("writing the report: {e}")))
}
