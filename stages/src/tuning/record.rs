//! The restore record: what the container interface and the pod's sysctls looked like
//! before ADD changed them, so that DEL can put them back.
//!
//! One JSON file per attachment, `<dir>/<containerID>_<ifname>.json`, where `<dir>` is the
//! config's `dataDir` when given (the reference's key) and otherwise
//! `$CNICHAIN_STATE_DIR/tuning` (default `/run/cnichain/tuning`). The link fields use the
//! reference's names and meaning (`mac`, `promisc`, `mtu`, `allmulti`, `txQLen`: the
//! values before ADD, present only for what ADD changes), so the reference plugin could
//! restore from it too; cnichain adds `sysctls`, each with the value before ADD and the
//! value ADD wrote. The file is written atomically (temporary file, fsync, rename) before
//! the first change and removed after a DEL that restored everything.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One sysctl ADD wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlRecord {
    /// Relative to /proc/sys, slashed (`net/ipv4/conf/eth0/arp_filter`).
    pub key: String,
    /// The value before ADD; None when it could not be read (a write-only entry such as
    /// `net/ipv4/route/flush`), in which case nothing is restored.
    pub original: Option<String>,
    /// What ADD wrote. DEL restores only while the entry still holds it, so that a
    /// later change by someone else is not overwritten.
    pub applied: String,
}

/// The record. Link fields: the value before ADD, present only for attributes ADD sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    pub txqlen: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<SysctlRecord>,
    /// Whose record this is: GC removes those of its network that are not valid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    #[serde(rename = "containerID", default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    /// The pod netns's identity when ADD ran (see `pod::identity`): a record of another
    /// netns under the same name is stale (its pod was torn down by a tool that does
    /// not know cnichain's records) and is neither merged nor restored.
    #[serde(rename = "netnsID", default, skip_serializing_if = "String::is_empty")]
    pub netns_id: String,
}

impl Record {
    /// Whether this record was made for the netns `id` (a record or a netns without an
    /// identity is taken as matching).
    pub fn is_for(&self, id: &str) -> bool {
        self.netns_id.is_empty() || id.is_empty() || self.netns_id == id
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Record {
    /// Nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.mac.is_empty()
            && self.promisc.is_none()
            && self.mtu == 0
            && self.allmulti.is_none()
            && self.txqlen.is_none()
            && self.sysctls.is_empty()
    }
}

/// The directory holding the records: `dataDir` if the config gives one, else
/// `<state dir>/tuning` (`CNICHAIN_STATE_DIR`, read once by the entry point).
pub fn dir(data_dir: Option<&Path>, state_dir: &Path) -> PathBuf {
    match data_dir {
        Some(d) => d.to_path_buf(),
        None => state_dir.join("tuning"),
    }
}

/// `<dir>/<containerID>_<ifname>.json`. None when either part could step out of the
/// directory (the engine validates both; this is a second fence).
pub fn path(dir: &Path, container_id: &str, ifname: &str) -> Option<PathBuf> {
    let ok = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0');
    (ok(container_id) && ok(ifname)).then(|| dir.join(format!("{container_id}_{ifname}.json")))
}

/// Read a record. Ok(None) if there is none.
pub fn read(path: &Path) -> anyhow::Result<Option<Record>> {
    match std::fs::read(path) {
        Ok(b) => {
            let r: Record = serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("tuning record {} is damaged: {e}", path.display()))?;
            Ok(Some(r))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("failed to read tuning record {}", path.display()))),
    }
}

/// Write a record atomically: a temporary file in the same directory, fsynced, renamed
/// over the record. The directory is made (mode 0700) when missing.
pub fn write(path: &Path, rec: &Record, state_dir: &Path) -> anyhow::Result<()> {
    let body = serde_json::to_vec_pretty(rec)?;
    // A random temporary name: an ADD killed between open and rename leaves it behind,
    // and `remove_temp` (DEL) finds it by its form.
    // The default `<state>/tuning` is made by cnichain (never through a symlink); a
    // configured dataDir is the operator's.
    let parent = path.parent().unwrap_or(Path::new("."));
    let base = if parent == dir(None, state_dir) {
        parent.parent().unwrap_or(parent)
    } else {
        parent
    };
    cnichain_engine::cache::write_atomic_below(base, path, &body, true)
        .map_err(|e| anyhow::Error::new(e).context(format!("failed to write tuning record {}", path.display())))
}

/// The records in `dir` (file names ending in `.json`; temporary files start with a dot
/// and are left out). A missing directory has none.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .collect()
}

/// Remove the temporary files a killed ADD may have left for the record at `path`.
pub fn remove_temp(path: &Path) {
    cnichain_engine::cache::remove_temps(path);
}

/// Remove a record; a missing one is fine.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("failed to remove tuning record {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = Path::new("/x");
        assert_eq!(path(d, "cid", "eth0").unwrap(), PathBuf::from("/x/cid_eth0.json"));
        assert!(path(d, "..", "eth0").is_none());
        assert!(path(d, "a/b", "eth0").is_none());
        assert!(path(d, "cid", "").is_none());
        assert_eq!(dir(Some(Path::new("/d")), Path::new("/s")), PathBuf::from("/d"));
        assert_eq!(dir(None, Path::new("/s")), PathBuf::from("/s/tuning"));
    }

    #[test]
    fn round_trip_and_reference_fields() {
        let t = std::env::temp_dir().join(format!("cnichain-tuning-record-{}", std::process::id()));
        let p = t.join("sub").join("c_eth0.json");
        let r = Record {
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            promisc: Some(false),
            sysctls: vec![SysctlRecord {
                key: "net/core/somaxconn".into(),
                original: Some("4096".into()),
                applied: "500".into(),
            }],
            ..Default::default()
        };
        write(&p, &r, Path::new(cnichain_engine::settings::DEFAULT_STATE_DIR)).unwrap();
        assert_eq!(read(&p).unwrap(), Some(r.clone()));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["mac"], "02:00:00:00:00:01");
        assert_eq!(v["mtu"], 1500);
        assert!(v.get("allmulti").is_none());
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read(&p).unwrap(), None);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(read(&p).is_err());
        let _ = std::fs::remove_dir_all(&t);
        assert!(Record::default().is_empty());
        assert!(!r.is_empty());
    }
}
