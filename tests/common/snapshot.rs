//! A snapshot of the trees cnichain writes (state, cache, data dirs): every path with its
//! type, mode and content (a symlink's target), so that a test can say "this request
//! changed nothing" by comparing two snapshots.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

/// Path (relative to the root it was taken under, prefixed by the root's label) -> node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot(pub BTreeMap<String, Node>);

impl Snapshot {
    /// Snapshot each `(label, root)`; a missing root is recorded as missing (no entry).
    pub fn take(roots: &[(&str, &Path)]) -> Snapshot {
        let mut map = BTreeMap::new();
        for (label, root) in roots {
            walk(label, root, root, &mut map);
        }
        Snapshot(map)
    }

    /// Human-readable differences (added, removed, changed paths); empty when equal.
    pub fn diff(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (p, n) in &self.0 {
            match after.0.get(p) {
                None => out.push(format!("removed {p} ({})", describe(n))),
                Some(m) if m != n => out.push(format!("changed {p}: {} -> {}", describe(n), describe(m))),
                _ => {}
            }
        }
        for (p, n) in &after.0 {
            if !self.0.contains_key(p) {
                out.push(format!("added {p} ({})", describe(n)));
            }
        }
        out
    }
}

fn describe(n: &Node) -> String {
    match n {
        Node::Dir { mode } => format!("dir {mode:o}"),
        Node::File { mode, content } => format!(
            "file {mode:o}, {} bytes: {:?}",
            content.len(),
            String::from_utf8_lossy(&content[..content.len().min(80)])
        ),
        Node::Symlink { target } => format!("symlink -> {}", target.display()),
        Node::Other { mode } => format!("other {mode:o}"),
    }
}

fn walk(label: &str, root: &Path, p: &Path, map: &mut BTreeMap<String, Node>) {
    let Ok(md) = std::fs::symlink_metadata(p) else { return };
    let rel = p.strip_prefix(root).unwrap_or(p).display().to_string();
    let key = if rel.is_empty() {
        format!("{label}:")
    } else {
        format!("{label}:{rel}")
    };
    let mode = md.permissions().mode() & 0o7777;
    let ft = md.file_type();
    let node = if ft.is_symlink() {
        Node::Symlink {
            target: std::fs::read_link(p).unwrap_or_default(),
        }
    } else if ft.is_dir() {
        Node::Dir { mode }
    } else if ft.is_file() {
        Node::File {
            mode,
            content: std::fs::read(p).unwrap_or_default(),
        }
    } else {
        Node::Other { mode }
    };
    let is_dir = matches!(node, Node::Dir { .. });
    map.insert(key, node);
    if is_dir {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                walk(label, root, &e.path(), map);
            }
        }
    }
}

/// Assert that nothing changed between `before` and a new snapshot of `roots`.
#[track_caller]
pub fn assert_unchanged(before: &Snapshot, roots: &[(&str, &Path)], what: &str) {
    let after = Snapshot::take(roots);
    let d = before.diff(&after);
    assert!(d.is_empty(), "{what} changed the state:\n  {}", d.join("\n  "));
}
