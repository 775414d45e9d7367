//! nftables: the one place that talks to netfilter.
//!
//! * Writes are libnftables JSON batches run through one `nft -j -f -` process each: a
//!   batch is one kernel transaction (all or nothing). The JSON is built from typed values
//!   (addresses, ports, protocol enums, names we derive ourselves); no text from a config
//!   ever reaches nft as rule text.
//! * Reads that must stay cheap (does this chain exist, the comments of one chain's rules,
//!   one element of a set or map with its comment) use nfnetlink directly ([`netlink`]):
//!   a few microseconds, no process, independent of how many other pods exist.
//! * [`list`] runs `nft -j list` on a single table, chain, set or map and returns the JSON
//!   as a `serde_json::Value`.
//! * [`conntrack`] deletes conntrack entries over ctnetlink.
//!
//! Everything runs in the calling thread's network namespace: the netlink sockets are
//! opened on that thread and the `nft` child inherits that thread's namespaces.
//!
//! The table layout shared by portmap and ipMasq is in [`layout`]; element ownership and
//! each attachment's records in [`records`].

pub mod conntrack;
pub mod expr;
pub mod layout;
pub mod netlink;
pub mod records;

use serde_json::{json, Value};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What went wrong in an nft run, classified from the kernel's errno text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftErrorKind {
    /// ENOENT: a table, chain, map or element the batch refers to does not exist.
    NotFound,
    /// EEXIST: an element with the same key and a different value exists.
    Exists,
    /// EBUSY: a chain is still referenced.
    Busy,
    /// The `nft` binary could not be run.
    NoBinary,
    Other,
}

/// An nft failure, with nft's own message.
#[derive(Debug, Clone)]
pub struct NftError {
    pub kind: NftErrorKind,
    pub msg: String,
}

impl fmt::Display for NftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)
    }
}

impl std::error::Error for NftError {}

/// One nft transaction: a list of libnftables JSON commands.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    cmds: Vec<Value>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }
    pub fn len(&self) -> usize {
        self.cmds.len()
    }
    /// `{"add": obj}` (idempotent for tables, chains and maps; elements with the same key
    /// and value are accepted again, with another value they fail with EEXIST).
    pub fn add(&mut self, obj: Value) {
        self.cmds.push(json!({ "add": obj }));
    }
    /// `{"create": obj}`: like add, but an element whose key exists fails with EEXIST
    /// whatever its value (how a taken host port is detected, atomically).
    pub fn create(&mut self, obj: Value) {
        self.cmds.push(json!({ "create": obj }));
    }
    pub fn flush(&mut self, obj: Value) {
        self.cmds.push(json!({ "flush": obj }));
    }
    pub fn delete(&mut self, obj: Value) {
        self.cmds.push(json!({ "delete": obj }));
    }
    /// Append another batch's commands.
    pub fn extend(&mut self, other: Batch) {
        self.cmds.extend(other.cmds);
    }
    pub fn to_json(&self) -> Value {
        json!({ "nftables": self.cmds })
    }
}

/// The `nft` binary: `CNICHAIN_NFT` if set, else the first `nft` on PATH, else the usual
/// sbin locations (runtimes often call plugins with a short PATH).
pub fn nft_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CNICHAIN_NFT").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join("nft")).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn run_nft(args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, NftError> {
    let bin = nft_binary().ok_or_else(|| NftError {
        kind: NftErrorKind::NoBinary,
        msg: "nft not found (install nftables)".to_string(),
    })?;
    let mut cmd = Command::new(&bin);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().map_err(|e| NftError {
        kind: NftErrorKind::NoBinary,
        msg: format!("failed to run {}: {e}", bin.display()),
    })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // nft reads all of its input before it answers; a write error (nft gone early)
        // shows up below as its exit status and message.
        let _ = pipe.write_all(data);
    }
    let out = child.wait_with_output().map_err(|e| NftError {
        kind: NftErrorKind::Other,
        msg: format!("failed to wait for nft: {e}"),
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let text = text
        .lines()
        .map(|l| l.trim().trim_start_matches("internal:0:0-0: ").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let kind = if text.contains("No such file or directory") {
        NftErrorKind::NotFound
    } else if text.contains("File exists") {
        NftErrorKind::Exists
    } else if text.contains("Device or resource busy") {
        NftErrorKind::Busy
    } else {
        NftErrorKind::Other
    };
    let text = if text.is_empty() {
        format!("exit status {}", out.status)
    } else {
        text
    };
    Err(NftError {
        kind,
        msg: format!("nft: {text}"),
    })
}

/// Run one batch as one transaction (`nft -j -f -`). An empty batch runs nothing.
pub fn apply(batch: &Batch) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    let data = serde_json::to_vec(&batch.to_json()).map_err(|e| NftError {
        kind: NftErrorKind::Other,
        msg: format!("failed to encode the nft batch: {e}"),
    })?;
    tracing::debug!(commands = batch.len(), "nft transaction");
    run_nft(&["-j", "-f", "-"], Some(&data)).map(|_| ())
}

/// Run a pod's batch (its elements, records and any per-prefix / per-bit rule it is the
/// first to need). If it fails with ENOENT because the table, a set or a chain is missing
/// (first use on this host or netns), run it once more with the fixed objects declared in
/// front. The common case is a single small transaction.
pub fn apply_pod(batch: &Batch) -> Result<(), NftError> {
    match apply(batch) {
        Err(e) if e.kind == NftErrorKind::NotFound => {
            tracing::debug!("declaring the cnichain nftables table ({e})");
            let mut full = Batch::new();
            layout::declare_base(&mut full);
            full.extend(batch.clone());
            apply(&full)
        }
        other => other,
    }
}

/// What [`list`] may list: one object of the cnichain table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing<'a> {
    Table,
    Chain(&'a str),
    Map(&'a str),
    Set(&'a str),
}

/// `nft -j list table|chain|map|set inet cnichain [name]` as JSON (only names made of
/// `[A-Za-z0-9_-]` are accepted). Missing objects are `NftErrorKind::NotFound`.
pub fn list(what: Listing) -> Result<Value, NftError> {
    let (kind, name) = match what {
        Listing::Table => ("table", None),
        Listing::Chain(n) => ("chain", Some(n)),
        Listing::Map(n) => ("map", Some(n)),
        Listing::Set(n) => ("set", Some(n)),
    };
    let mut args = vec!["-j", "list", kind, layout::FAMILY, layout::TABLE];
    if let Some(n) = name {
        if !layout::is_plain_name(n) {
            return Err(NftError {
                kind: NftErrorKind::Other,
                msg: format!("refusing to list {kind} {n:?}: not a plain name"),
            });
        }
        args.push(n);
    }
    let out = run_nft(&args, None)?;
    serde_json::from_slice(&out).map_err(|e| NftError {
        kind: NftErrorKind::Other,
        msg: format!("nft printed JSON that does not parse: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shape() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.add(layout::table());
        b.flush(layout::chain("x"));
        b.delete(layout::chain("x"));
        b.create(layout::chain("y"));
        let v = b.to_json();
        assert_eq!(v["nftables"][0]["add"]["table"]["name"], "cnichain");
        assert_eq!(v["nftables"][1]["flush"]["chain"]["name"], "x");
        assert_eq!(v["nftables"][2]["delete"]["chain"]["family"], "inet");
        assert_eq!(v["nftables"][3]["create"]["chain"]["name"], "y");
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn list_refuses_odd_names() {
        let e = list(Listing::Chain("x; flush ruleset")).unwrap_err();
        assert_eq!(e.kind, NftErrorKind::Other);
    }
}
