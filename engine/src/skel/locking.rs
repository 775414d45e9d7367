//! Plugin mode's lock policy: the same locks as the CLI, held around the whole call.

use super::Mode;
use crate::lock::{self, Locks};
use crate::request::Attachment;
use crate::spec::args::RuntimeConf;
use crate::spec::error::CniError;
use crate::stage::Command;
use serde_json::{Map, Value};

/// Held until the call returns (dropping releases).
pub(super) enum Held {
    Attachment(lock::Held, lock::Held),
    Gc(#[allow(dead_code)] lock::Held),
}

/// ADD/CHECK/DEL share the node's GC lock and hold the attachment's alone; GC holds the
/// GC lock alone, and afterwards removes the lock files of attachments that are not
/// valid. Runtimes serialize calls themselves, but several runtimes (or a runtime and
/// the CLI) can share a node.
pub(super) fn lock(
    locks: &Locks,
    command: Command,
    config: &Map<String, Value>,
    rt: &RuntimeConf,
) -> Result<Option<Held>, CniError> {
    let net = config.get("name").and_then(Value::as_str).unwrap_or_default();
    match command {
        Command::Add | Command::Check | Command::Del => {
            let gc = locks.gc(false)?;
            Ok(Some(Held::Attachment(
                gc,
                locks.attachment(net, &rt.container_id, &rt.ifname)?,
            )))
        }
        Command::Gc => {
            let gc = locks.gc(true)?;
            if let Some(valid) = valid_attachments(config) {
                let keep: Vec<(&str, &str)> = valid
                    .iter()
                    .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
                    .collect();
                locks.sweep(net, &keep);
            }
            Ok(Some(Held::Gc(gc)))
        }
        _ => Ok(None),
    }
}

/// Release the locks. The lock file stays with the attachment (see lock.rs): gone after
/// DEL, a failed ADD that made it (a drop-in undoes its own partial work; the
/// meta-plugin rolls back), or a CHECK or failed DEL that made it.
pub(super) fn release(held: Option<Held>, command: Command, mode: Mode, ok: bool) {
    if let Some(Held::Attachment(_gc, att)) = held {
        let gone = match command {
            // A failed DEL leaves the lock file as it found it.
            Command::Del => ok || att.created,
            Command::Add => !ok && (mode == Mode::Meta || att.created),
            _ => att.created,
        };
        if gone {
            att.remove();
        }
    }
}

/// `cni.dev/valid-attachments` (or the older key) of a GC request; None without either.
pub(super) fn valid_attachments(config: &Map<String, Value>) -> Option<Vec<Attachment>> {
    match config
        .get("cni.dev/valid-attachments")
        .or_else(|| config.get("cni.dev/attachments"))
    {
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| Attachment {
                    container_id: v.get("containerID").and_then(Value::as_str).unwrap_or_default().into(),
                    ifname: v.get("ifname").and_then(Value::as_str).unwrap_or_default().into(),
                })
                .collect(),
        ),
        _ => None,
    }
}
