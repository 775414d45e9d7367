//! The pod netns checks every verb makes before a stage runs: a DEL may find it gone,
//! the caller's own netns is refused.

use crate::spec::error::{CniError, INVALID_ENV};

const NSFS_MAGIC: i64 = 0x6e736673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The refusal of a CNI_NETNS that is the caller's own network namespace.
pub fn own_netns_msg(path: &str) -> String {
    format!("CNI_NETNS {path:?} is the caller's own network namespace, not a pod's: refusing to configure it")
}

/// The netns must be a path to a network namespace (nsfs, or procfs for
/// `/proc/<pid>/ns/net`) other than the caller's own. With `required` false (DEL) an empty
/// path, a vanished one, or one that is no longer a network namespace (a runtime
/// unmounted it and crashed before unlinking the file) means the pod side is gone: DEL
/// goes on and releases what is host-side.
pub fn check_netns(path: &str, required: bool) -> Result<(), CniError> {
    if path.is_empty() {
        return if required {
            Err(CniError::new(INVALID_ENV, "missing network namespace path (CNI_NETNS)"))
        } else {
            Ok(())
        };
    }
    if path.contains('\0') {
        return Err(CniError::new(
            INVALID_ENV,
            "network namespace path (CNI_NETNS) contains a NUL byte",
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let gone = matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR));
            if !required && gone {
                return Ok(());
            }
            return Err(CniError::new(
                INVALID_ENV,
                format!("network namespace (CNI_NETNS) {path:?}: {e}"),
            ));
        }
    };
    let cpath = std::ffi::CString::new(path).map_err(|_| CniError::new(INVALID_ENV, "bad CNI_NETNS"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: cpath is a valid C string and st a properly sized out-parameter.
    let rc = unsafe { libc::statfs(cpath.as_ptr(), &mut st) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CniError::new(
            INVALID_ENV,
            format!("network namespace (CNI_NETNS) {path:?}: {e}"),
        ));
    }
    let magic = (st.f_type as i64) & 0xffff_ffff;
    if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
        if !required {
            return Ok(());
        }
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_NETNS {path:?} is not a network namespace (filesystem magic {magic:#x})"),
        ));
    }
    refuse_own_netns(path, &meta)
}

/// Code 4 when `path` names the calling thread's own netns; anything else (a missing
/// path included) is left to the code that opens it.
pub fn refuse_own_netns_path(path: &str) -> Result<(), CniError> {
    match std::fs::metadata(path) {
        Ok(meta) if !path.is_empty() => refuse_own_netns(path, &meta),
        _ => Ok(()),
    }
}

/// Code 4 when `path` (already stat'ed as `meta`) is the calling thread's own netns:
/// the same nsfs device and inode as /proc/thread-self/ns/net.
pub fn refuse_own_netns(path: &str, meta: &std::fs::Metadata) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| {
        CniError::new(
            INVALID_ENV,
            format!("cannot tell whether CNI_NETNS {path:?} is the caller's own network namespace: {e}"),
        )
    })?;
    if own.dev() == meta.dev() && own.ino() == meta.ino() {
        return Err(CniError::new(INVALID_ENV, own_netns_msg(path)));
    }
    Ok(())
}

#[cfg(test)]
mod netns_tests {
    use super::*;
    use crate::chain::combine_errors;

    #[test]
    fn del_takes_a_gone_netns_add_does_not() {
        let dir = std::env::temp_dir().join(format!("cnichain-chain-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "").unwrap();
        let plain = plain.to_str().unwrap();
        let missing = dir.join("missing");
        let missing = missing.to_str().unwrap();
        for p in [plain, missing, dir.to_str().unwrap(), "", "/proc/self/status/x"] {
            assert!(check_netns(p, false).is_ok(), "DEL {p:?}");
        }
        for p in [plain, missing, ""] {
            assert_eq!(check_netns(p, true).unwrap_err().code, 4, "ADD {p:?}");
        }
        assert_eq!(check_netns("a\0b", false).unwrap_err().code, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_callers_own_netns_is_refused_on_every_verb() {
        for p in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
            for required in [true, false] {
                let e = check_netns(p, required).unwrap_err();
                assert_eq!(e.code, 4);
                assert!(e.msg.contains("caller's own network namespace"), "{}", e.msg);
            }
            assert_eq!(refuse_own_netns_path(p).unwrap_err().code, 4);
        }
        assert!(refuse_own_netns_path("/nonexistent").is_ok());
    }

    #[test]
    fn combined_errors_keep_the_first_code_and_msg() {
        assert!(combine_errors(Vec::new()).is_ok());
        let one = CniError::new(11, "a").with_details("d");
        assert_eq!(combine_errors(vec![one.clone()]).unwrap_err(), one);
        let e = combine_errors(vec![one, CniError::new(7, "b"), CniError::new(999, "c")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (11, "a"));
        assert_eq!(e.details, "d; 2 more failed: b; c");
    }
}
