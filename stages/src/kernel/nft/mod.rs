//! nftables: the one place that talks to netfilter.
//!
//! * Writes are batches: one kernel transaction each (all or nothing). The common one, a
//!   pod adding or removing its own set and map elements, is one nfnetlink batch sent on
//!   our own socket ([`apply_elems`]): no process, no listing of the ruleset. The rare
//!   ones (declaring the table, a per-prefix or per-bit rule needed for the first time)
//!   are libnftables JSON run through one `nft -j -f -` process. Both are built from
//!   typed values (addresses, ports, protocol enums, names we derive ourselves); no text
//!   from a config ever reaches nft as rule text.
//! * Reads that must stay cheap (does this chain exist, the comments of one chain's rules,
//!   one element of a set or map with its comment) use nfnetlink directly ([`elements`]):
//!   a few microseconds, no process, independent of how many other pods exist.
//! * [`list`] runs `nft -j list` on a single table, chain, set or map and returns the JSON
//!   as a `serde_json::Value`.
//! * [`conntrack`] deletes conntrack entries over ctnetlink.
//!
//! Everything runs in the calling thread's network namespace: the netlink sockets are
//! opened on that thread (and then used in the namespace they were opened in) and the
//! `nft` child inherits that thread's namespaces.
//!
//! The table layout shared by portmap and ipMasq is in [`layout`]; element ownership and
//! each attachment's records in [`records`].

pub mod conntrack;
pub mod elements;
pub mod expr;
pub mod hostport;
pub mod layout;
pub mod macspoof_table;
pub mod masq;
pub mod netlink;
pub mod records;
pub mod restore;

use serde_json::{json, Value};
use std::fmt;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cnichain_engine::settings::Settings;

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

/// One nft transaction: libnftables JSON commands and element writes, in order.
///
/// A batch of element writes only ([`Batch::create_elem`], [`Batch::delete_elem`]) is
/// sent by [`apply`] as one nfnetlink transaction on a socket of our own (no process);
/// anything else (tables, chains, rules, sets) goes through one `nft -j -f -` process.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
enum Cmd {
    Json(Value),
    Elem(ElemOp),
}

/// One element write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemOp {
    /// Create `elem` (with `data` in a map) and its comment; fails with EEXIST when the
    /// key exists, whatever its data.
    Create {
        elem: layout::Elem,
        data: Option<layout::Field>,
        comment: String,
    },
    /// Delete `elem` by key; fails with ENOENT when it does not exist.
    Delete(layout::Elem),
}

impl ElemOp {
    fn to_json(&self) -> Value {
        match self {
            ElemOp::Create { elem, data, comment } => json!({ "create": elem.with(data.as_ref(), comment) }),
            ElemOp::Delete(elem) => json!({ "delete": elem.key_only() }),
        }
    }

    /// `create element tcp . 8080 in pm-port4-to`, for messages.
    fn describe(&self) -> String {
        match self {
            ElemOp::Create { elem, .. } => format!("create element {} in {}", elem.describe_key(), elem.set),
            ElemOp::Delete(elem) => format!("delete element {} from {}", elem.describe_key(), elem.set),
        }
    }
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
    fn json(&mut self, verb: &str, obj: Value) {
        let mut m = serde_json::Map::new();
        m.insert(verb.to_string(), obj);
        self.cmds.push(Cmd::Json(Value::Object(m)));
    }
    /// `{"add": obj}` (idempotent for tables, chains and maps; elements with the same key
    /// and value are accepted again, with another value they fail with EEXIST).
    pub fn add(&mut self, obj: Value) {
        self.json("add", obj);
    }
    /// `{"create": obj}`: like add, but an element whose key exists fails with EEXIST
    /// whatever its value (how a taken host port is detected, atomically).
    pub fn create(&mut self, obj: Value) {
        self.json("create", obj);
    }
    pub fn flush(&mut self, obj: Value) {
        self.json("flush", obj);
    }
    pub fn delete(&mut self, obj: Value) {
        self.json("delete", obj);
    }
    /// Create one element of the layout (with `data` in a map) carrying `comment`
    /// (clipped to [`layout::MAX_COMMENT`] bytes); EEXIST when its key exists.
    pub fn create_elem(&mut self, elem: &layout::Elem, data: Option<&layout::Field>, comment: &str) {
        self.cmds.push(Cmd::Elem(ElemOp::Create {
            elem: elem.clone(),
            data: data.cloned(),
            comment: layout::clip(comment),
        }));
    }
    /// Delete one element of the layout by key; ENOENT when it does not exist.
    pub fn delete_elem(&mut self, elem: &layout::Elem) {
        self.cmds.push(Cmd::Elem(ElemOp::Delete(elem.clone())));
    }
    /// Append another batch's commands.
    pub fn extend(&mut self, other: Batch) {
        self.cmds.extend(other.cmds);
    }
    /// The commands that are not element writes (in order), and the element writes.
    pub fn split(&self) -> (Batch, Vec<&ElemOp>) {
        let mut rest = Batch::new();
        let mut elems = Vec::new();
        for c in &self.cmds {
            match c {
                Cmd::Elem(op) => elems.push(op),
                Cmd::Json(_) => rest.cmds.push(c.clone()),
            }
        }
        (rest, elems)
    }
    /// The element writes, when the batch holds nothing else.
    pub fn elem_ops(&self) -> Option<Vec<&ElemOp>> {
        self.cmds
            .iter()
            .map(|c| match c {
                Cmd::Elem(op) => Some(op),
                Cmd::Json(_) => None,
            })
            .collect()
    }
    pub fn to_json(&self) -> Value {
        let cmds: Vec<Value> = self
            .cmds
            .iter()
            .map(|c| match c {
                Cmd::Json(v) => v.clone(),
                Cmd::Elem(op) => op.to_json(),
            })
            .collect();
        json!({ "nftables": cmds })
    }
}

/// Where `nft` is and how long one run may take, from the entry point's settings
/// (`CNICHAIN_NFT`, `PATH`, `CNICHAIN_NFT_TIMEOUT`); every call that runs `nft` takes one.
#[derive(Debug, Clone)]
pub struct Nft {
    explicit: Option<PathBuf>,
    search: Vec<PathBuf>,
    timeout: Duration,
}

impl Nft {
    pub fn new(s: &Settings) -> Nft {
        Nft {
            explicit: s.nft_binary.clone().filter(|p| !p.as_os_str().is_empty()),
            search: s.search_path.clone(),
            timeout: s.nft_timeout,
        }
    }

    /// The `nft` binary: the explicit one if set, else the first `nft` on PATH, else the
    /// usual sbin locations (runtimes often call plugins with a short PATH).
    pub fn binary(&self) -> Option<PathBuf> {
        // An explicit binary that is not there means nft is missing (STATUS says so), not
        // a search elsewhere.
        if let Some(p) = &self.explicit {
            return is_executable(p).then(|| p.clone());
        }
        let sbin = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
        self.search
            .iter()
            .chain(sbin.iter())
            .map(|d| d.join("nft"))
            .find(|p| is_executable(p))
    }

    /// How long one `nft` run may take before it is killed. nft answers in milliseconds;
    /// a run that hangs (a wedged kernel, a stuck nfnetlink lock) must not hang a
    /// runtime's call with it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn run_nft(nft: &Nft, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, NftError> {
    let started = std::time::Instant::now();
    let out = run_nft_untimed(nft, args, stdin);
    cnichain_engine::trace::kernel_step(started, || format!("nft {}", args.join(" ")));
    out
}

fn run_nft_untimed(nft: &Nft, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, NftError> {
    let bin = nft.binary().ok_or_else(|| NftError {
        kind: NftErrorKind::NoBinary,
        msg: "nft not found (install nftables)".to_string(),
    })?;
    let mut cmd = Command::new(&bin);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    // Its own process group: on timeout the whole group is killed (a wrapper script's
    // children too, which would otherwise hold the pipes open).
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| NftError {
        kind: NftErrorKind::NoBinary,
        msg: format!("failed to run {}: {e}", bin.display()),
    })?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // nft reads all of its input before it answers; a write error (nft gone
            // early) shows up below as its exit status and message.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    // The pipes are read on threads that end at EOF (nft's exit, or its kill); only
    // this thread reaps the child, so its pid stays valid until then.
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut out_pipe, mut err_pipe) = (child.stdout.take(), child.stderr.take());
    std::thread::spawn(move || {
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = std::io::Read::read_to_end(p, &mut v);
            }
            v
        });
        let mut out = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = std::io::Read::read_to_end(p, &mut out);
        }
        let err = err_reader.join().unwrap_or_default();
        let _ = tx.send((out, err));
    });
    let limit = nft.timeout();
    let (stdout, stderr) = match rx.recv_timeout(limit) {
        Ok(o) => o,
        Err(_) => {
            // SAFETY: killpg on the group this child leads; the child is not reaped yet,
            // so the id cannot belong to anything else.
            unsafe {
                libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(w) = writer {
                let _ = w.join();
            }
            return Err(NftError {
                kind: NftErrorKind::Other,
                msg: format!(
                    "nft did not finish within {} s and was killed ({} {}); set CNICHAIN_NFT_TIMEOUT to wait longer",
                    limit.as_secs(),
                    bin.display(),
                    args.join(" ")
                ),
            });
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let status = child.wait().map_err(|e| NftError {
        kind: NftErrorKind::Other,
        msg: format!("failed to wait for nft: {e}"),
    })?;
    let out = std::process::Output { status, stdout, stderr };
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

/// Run one batch as one transaction. An empty batch runs nothing. A batch of element
/// writes only is one nfnetlink transaction on a socket opened here, in the calling
/// thread's network namespace (see [`apply_elems`]); anything else runs `nft -j -f -`.
pub fn apply(nft: &Nft, batch: &Batch) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    match batch.elem_ops() {
        Some(ops) => {
            let mut nl = netlink::Nfnl::open().map_err(|e| NftError {
                kind: NftErrorKind::Other,
                msg: format!("nfnetlink: {e}"),
            })?;
            apply_elems(&mut nl, &ops)
        }
        None => apply_nft(nft, batch),
    }
}

/// [`apply`] with element writes sent on `nl` (a socket of the namespace to change).
pub fn apply_on(nft: &Nft, nl: &mut netlink::Nfnl, batch: &Batch) -> Result<(), NftError> {
    match batch.elem_ops() {
        Some(ops) => apply_elems(nl, &ops),
        None => apply_nft(nft, batch),
    }
}

/// Run one batch through one `nft -j -f -` process, whatever it holds.
pub fn apply_nft(nft: &Nft, batch: &Batch) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    let data = serde_json::to_vec(&batch.to_json()).map_err(|e| NftError {
        kind: NftErrorKind::Other,
        msg: format!("failed to encode the nft batch: {e}"),
    })?;
    tracing::debug!(commands = batch.len(), "nft transaction");
    run_nft(nft, &["-j", "-f", "-"], Some(&data)).map(|_| ())
}

/// `nft -j list set FAMILY TABLE NAME` as JSON, for a table other than the portmap one
/// (the bridge-family MAC spoof check). Only plain names are accepted.
pub fn list_set(nft: &Nft, family: &str, table: &str, name: &str) -> Result<Value, NftError> {
    for n in [family, table, name] {
        if !layout::is_plain_name(n) {
            return Err(NftError {
                kind: NftErrorKind::Other,
                msg: format!("refusing to list {n:?}: not a plain name"),
            });
        }
    }
    let out = run_nft(nft, &["-j", "list", "set", family, table, name], None)?;
    serde_json::from_slice(&out).map_err(|e| NftError {
        kind: NftErrorKind::Other,
        msg: format!("nft printed invalid JSON: {e}"),
    })
}

/// Write element `ops` in one nfnetlink transaction on `nl` (NFNL_MSG_BATCH_BEGIN, one
/// NEWSETELEM / DELSETELEM per element, NFNL_MSG_BATCH_END): all or nothing, whatever
/// its size (see [`netlink::Nfnl::batch`]). The first failure names its element and set. EEXIST (a key
/// that exists) is [`NftErrorKind::Exists`], ENOENT (no such table, set or element)
/// [`NftErrorKind::NotFound`], EBUSY [`NftErrorKind::Busy`].
pub fn apply_elems(nl: &mut netlink::Nfnl, ops: &[&ElemOp]) -> Result<(), NftError> {
    if ops.is_empty() {
        return Ok(());
    }
    let keys: Vec<(Vec<u8>, Option<Vec<u8>>)> = ops
        .iter()
        .map(|op| match op {
            ElemOp::Create { elem, data, .. } => (elem.kernel_key(), data.as_ref().map(layout::Field::kernel_bytes)),
            ElemOp::Delete(elem) => (elem.kernel_key(), None),
        })
        .collect();
    let msgs: Vec<netlink::BatchMsg> = ops
        .iter()
        .zip(&keys)
        .map(|(op, (key, data))| match op {
            ElemOp::Create { elem, comment, .. } => elements::elem_msg(
                layout::TABLE,
                &elem.set,
                &elements::ElemWrite::Create {
                    key,
                    data: data.as_deref(),
                    comment,
                },
            ),
            ElemOp::Delete(elem) => elements::elem_msg(layout::TABLE, &elem.set, &elements::ElemWrite::Delete { key }),
        })
        .collect();
    tracing::debug!(elements = msgs.len(), "nfnetlink element transaction");
    let answers = nl
        .batch(netlink::NFNL_SUBSYS_NFTABLES, &msgs)
        .map_err(|e| errno_error(e.raw_os_error().unwrap_or(0), &format!("element transaction: {e}")))?;
    match ops.iter().zip(answers).find(|(_, err)| *err != 0) {
        None => Ok(()),
        Some((op, err)) => {
            let text = std::io::Error::from_raw_os_error(-err);
            Err(errno_error(-err, &format!("{}: {text}", op.describe())))
        }
    }
}

/// An errno of the kernel as an [`NftError`] of the matching kind.
fn errno_error(errno: i32, what: &str) -> NftError {
    let (kind, hint) = match errno {
        libc::EEXIST => (NftErrorKind::Exists, ""),
        libc::ENOENT => (NftErrorKind::NotFound, ""),
        libc::EBUSY => (NftErrorKind::Busy, ""),
        libc::EPERM | libc::EACCES => (NftErrorKind::Other, " (CAP_NET_ADMIN is needed)"),
        libc::EINVAL => (NftErrorKind::Other, " (the kernel refused the element's key or data)"),
        libc::ENFILE | libc::E2BIG | libc::ENOSPC => (NftErrorKind::Other, " (the set is full)"),
        _ => (NftErrorKind::Other, ""),
    };
    NftError {
        kind,
        msg: format!("nfnetlink: {what}{hint}"),
    }
}

/// Run a pod's batch (its elements, records and any per-prefix / per-bit rule it is the
/// first to need). The elements and records are always one nfnetlink transaction on `nl`
/// (all or nothing, whatever their number). A rule the batch adds (with its set) runs
/// first through one `nft` process, with the fixed objects declared in front when the
/// table is missing; so does the declaration alone when the elements find no table or
/// set (first use on this host or netns), before the elements are sent once more.
///
/// The rules are shared and kept once made (nothing removes them), so committing them
/// ahead of the elements leaves, should the elements fail or the process die between the
/// two, only what the next ADD would make anyway. Sending the elements over nfnetlink
/// rather than through nft keeps a first pod with thousands of mappings as fast as any
/// other.
pub fn apply_pod(nft: &Nft, nl: &mut netlink::Nfnl, batch: &Batch) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    let (rules, elems) = batch.split();
    if !rules.is_empty() {
        apply_declared(nft, &rules)?;
    }
    match apply_elems(nl, &elems) {
        Err(e) if e.kind == NftErrorKind::NotFound && rules.is_empty() => {
            tracing::debug!("element transaction: {e}; declaring the cnichain nftables table");
            let mut base = Batch::new();
            layout::declare_base(&mut base);
            apply_nft(nft, &base)?;
            apply_elems(nl, &elems)
        }
        other => other,
    }
}

/// Run `batch` through nft; when something it refers to is missing, once more with the
/// fixed objects of the layout declared in front.
fn apply_declared(nft: &Nft, batch: &Batch) -> Result<(), NftError> {
    match apply_nft(nft, batch) {
        Err(e) if e.kind == NftErrorKind::NotFound => {
            tracing::debug!("declaring the cnichain nftables table ({e})");
            let mut full = Batch::new();
            layout::declare_base(&mut full);
            full.extend(batch.clone());
            apply_nft(nft, &full)
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
pub fn list(nft: &Nft, what: Listing) -> Result<Value, NftError> {
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
    let out = run_nft(nft, &args, None)?;
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
    fn element_batches_and_errors() {
        use layout::{Elem, Field};
        let e = Elem::new(
            layout::MAP_PORT4_TO,
            vec![Field::Proto(expr::Proto::Tcp), Field::Port(8080)],
        );
        let mut b = Batch::new();
        b.create_elem(&e, Some(&Field::Addr("10.0.0.2".parse().unwrap())), &"c".repeat(300));
        b.delete_elem(&e);
        let ops = b.elem_ops().unwrap();
        assert_eq!(ops.len(), 2);
        assert!(matches!(ops[0], ElemOp::Create { comment, .. } if comment.len() == layout::MAX_COMMENT));
        assert_eq!(ops[1].describe(), "delete element tcp . 8080 from pm-port4-to");
        // the nft rendering (the fallback) is the same as before
        let v = b.to_json();
        assert_eq!(v["nftables"][0]["create"]["element"]["name"], "pm-port4-to");
        assert_eq!(v["nftables"][0]["create"]["element"]["elem"][0][1], "10.0.0.2");
        assert_eq!(v["nftables"][1]["delete"]["element"]["elem"][0]["concat"][1], 8080);
        // anything but elements goes through nft
        b.add(layout::table());
        assert!(b.elem_ops().is_none());
        assert_eq!(Batch::new().elem_ops().map(|o| o.len()), Some(0));

        assert_eq!(errno_error(libc::EEXIST, "x").kind, NftErrorKind::Exists);
        assert_eq!(errno_error(libc::ENOENT, "x").kind, NftErrorKind::NotFound);
        assert_eq!(errno_error(libc::EBUSY, "x").kind, NftErrorKind::Busy);
        let p = errno_error(libc::EPERM, "create element 1 in s: Operation not permitted");
        assert_eq!(p.kind, NftErrorKind::Other);
        assert!(p.msg.starts_with("nfnetlink: create element 1 in s") && p.msg.contains("CAP_NET_ADMIN"));
    }

    #[test]
    fn list_refuses_odd_names() {
        let e = list(&Nft::new(&Settings::default()), Listing::Chain("x; flush ruleset")).unwrap_err();
        assert_eq!(e.kind, NftErrorKind::Other);
    }
}
