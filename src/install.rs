//! `cnichain install` / `uninstall`: put the binary into a CNI bin dir with a symlink per
//! in-process stage, so runtimes find `bridge`, `host-local`, ... as drop-ins and
//! `cnichain` as the meta-plugin. A manifest records what was made, so uninstall removes
//! exactly that and puts back any plugin that `--force` moved aside.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The plugin names the binary answers to as a drop-in.
pub const STAGE_NAMES: &[&str] = &[
    "bridge",
    "ptp",
    "loopback",
    "host-local",
    "static",
    "tuning",
    "portmap",
    "bandwidth",
];
const BINARY: &str = "cnichain";
const MANIFEST: &str = ".cnichain-install";
const BACKUP_SUFFIX: &str = ".cnichain-orig";

fn is_our_link(p: &Path) -> bool {
    std::fs::read_link(p).map(|t| t == Path::new(BINARY)).unwrap_or(false)
}

/// One line on stdout; a closed stdout is an error, not a panic.
fn say(dry: bool, what: &str) -> Result<(), String> {
    let line = if dry {
        format!("would {what}\n")
    } else {
        format!("{what}\n")
    };
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}

/// The stage names to link: those this build runs in-process.
fn names(in_process: &[String]) -> Vec<&'static str> {
    STAGE_NAMES
        .iter()
        .copied()
        .filter(|n| in_process.iter().any(|t| t == n))
        .collect()
}

pub fn install(bin_dir: &Path, force: bool, dry: bool, in_process: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let names = names(in_process);
    let target = bin_dir.join(BINARY);
    let mut manifest: Vec<String> = read_manifest(bin_dir);
    // Check everything before changing anything. Ours: our links, and the binary when
    // the manifest records it.
    let ours_bin = binary_is_ours(&manifest, bin_dir);
    let mut conflicts = Vec::new();
    let mut aside: Vec<&str> = Vec::new();
    if target.symlink_metadata().is_ok() && !ours_bin {
        conflicts.push(target.clone());
        aside.push(BINARY);
    }
    for n in &names {
        let p = bin_dir.join(n);
        if p.symlink_metadata().is_ok() && !is_our_link(&p) {
            conflicts.push(p);
            aside.push(n);
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(format!(
            "refusing to overwrite files cnichain did not create (use --force to move them aside): {}",
            conflicts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // A backup already there is an earlier install's: never overwrite it.
    for n in &aside {
        let backup = bin_dir.join(format!("{n}{BACKUP_SUFFIX}"));
        if backup.symlink_metadata().is_ok() {
            return Err(format!(
                "{} already exists (an earlier backup); move it away before installing",
                backup.display()
            ));
        }
    }
    if !dry {
        std::fs::create_dir_all(bin_dir).map_err(|e| format!("creating {}: {e}", bin_dir.display()))?;
        // The manifest first, with everything about to be made or moved: an install
        // interrupted at any point can be undone by `uninstall` (it skips what is
        // missing and puts back every backup that exists).
        push_unique(&mut manifest, BINARY.to_string());
        for n in &aside {
            push_unique(&mut manifest, format!("{n}{BACKUP_SUFFIX}"));
        }
        for n in &names {
            push_unique(&mut manifest, n.to_string());
        }
        write_manifest(bin_dir, &manifest)?;
    }
    for n in &aside {
        let p = bin_dir.join(n);
        let backup = bin_dir.join(format!("{n}{BACKUP_SUFFIX}"));
        say(dry, &format!("move {} aside to {}", p.display(), backup.display()))?;
        if !dry {
            std::fs::rename(&p, &backup).map_err(|e| format!("moving {}: {e}", p.display()))?;
        }
    }
    say(dry, &format!("install {} -> {}", exe.display(), target.display()))?;
    if !dry {
        copy_binary(&exe, bin_dir, &target)?;
    }
    for n in &names {
        let p = bin_dir.join(n);
        if is_our_link(&p) {
            continue;
        }
        say(dry, &format!("link {} -> {BINARY}", p.display()))?;
        if !dry {
            std::os::unix::fs::symlink(BINARY, &p).map_err(|e| format!("linking {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Copy `exe` to a new file of a random name in `bin_dir` (made exclusively, never
/// through a symlink), then rename it over `target`.
fn copy_binary(exe: &Path, bin_dir: &Path, target: &Path) -> Result<(), String> {
    let hex = cnichain_engine::nodefs::random_hex().map_err(|e| format!("random name: {e}"))?;
    let tmp = bin_dir.join(format!(".{BINARY}.tmp-{hex}"));
    let res = (|| {
        let mut src = std::fs::File::open(exe)?;
        let mut f = cnichain_engine::nodefs::create_new(&tmp, 0o755)?;
        std::io::copy(&mut src, &mut f)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("installing {}: {e}", target.display()));
    }
    Ok(())
}

pub fn uninstall(bin_dir: &Path, dry: bool) -> Result<(), String> {
    let manifest = read_manifest(bin_dir);
    if manifest.is_empty() {
        return Err(format!("no cnichain installation recorded in {}", bin_dir.display()));
    }
    for entry in manifest
        .iter()
        .filter(|e| !e.ends_with(BACKUP_SUFFIX) && e.as_str() != BINARY)
    {
        let p = bin_dir.join(entry);
        if is_our_link(&p) {
            say(dry, &format!("remove {}", p.display()))?;
            if !dry {
                std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
            }
        }
    }
    let bin = bin_dir.join(BINARY);
    if binary_is_ours(&manifest, bin_dir) && bin.symlink_metadata().is_ok_and(|m| m.is_file()) {
        say(dry, &format!("remove {}", bin.display()))?;
        if !dry {
            std::fs::remove_file(&bin).map_err(|e| format!("removing {}: {e}", bin.display()))?;
        }
    }
    for entry in manifest.iter().filter(|e| e.ends_with(BACKUP_SUFFIX)) {
        let backup = bin_dir.join(entry);
        let orig = bin_dir.join(entry.trim_end_matches(BACKUP_SUFFIX));
        if backup.exists() && orig.symlink_metadata().is_err() {
            say(dry, &format!("restore {} from {}", orig.display(), backup.display()))?;
            if !dry {
                std::fs::rename(&backup, &orig).map_err(|e| format!("restoring {}: {e}", orig.display()))?;
            }
        }
    }
    if !dry {
        let _ = std::fs::remove_file(bin_dir.join(MANIFEST));
    }
    Ok(())
}

/// The manifest records the binary as ours, and a foreign binary it was to move aside
/// was moved (an install interrupted before that leaves the foreign one in place).
fn binary_is_ours(manifest: &[String], bin_dir: &Path) -> bool {
    let backup = format!("{BINARY}{BACKUP_SUFFIX}");
    manifest.iter().any(|e| e == BINARY)
        && (!manifest.contains(&backup) || bin_dir.join(&backup).symlink_metadata().is_ok())
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

fn read_manifest(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(MANIFEST))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.contains('/') && *l != "." && *l != "..")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn write_manifest(dir: &Path, entries: &[String]) -> Result<(), String> {
    let path: PathBuf = dir.join(MANIFEST);
    let body: String = entries.iter().map(|e| format!("{e}\n")).collect();
    // fsync: the manifest must be on disk before anything is moved aside.
    cnichain_engine::cache::write_atomic(&path, body.as_bytes(), true)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
