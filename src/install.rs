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

fn say(dry: bool, what: &str) {
    if dry {
        println!("would {what}");
    } else {
        println!("{what}");
    }
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
    if !dry {
        std::fs::create_dir_all(bin_dir).map_err(|e| format!("creating {}: {e}", bin_dir.display()))?;
    }
    let names = names(in_process);
    // Check everything before changing anything.
    let mut conflicts = Vec::new();
    for n in &names {
        let p = bin_dir.join(n);
        if p.symlink_metadata().is_ok() && !is_our_link(&p) {
            conflicts.push(p);
        }
    }
    let target = bin_dir.join(BINARY);
    let manifest_path = bin_dir.join(MANIFEST);
    if target.exists() && !manifest_path.exists() && !force {
        conflicts.push(target.clone());
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
    let mut manifest: Vec<String> = read_manifest(bin_dir);
    say(dry, &format!("install {} -> {}", exe.display(), target.display()));
    if !dry {
        let tmp = bin_dir.join(format!(".{BINARY}.tmp{}", std::process::id()));
        std::fs::copy(&exe, &tmp).map_err(|e| format!("copying to {}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &target).map_err(|e| format!("installing {}: {e}", target.display()))?;
        push_unique(&mut manifest, BINARY.to_string());
    }
    for n in &names {
        let p = bin_dir.join(n);
        if p.symlink_metadata().is_ok() && !is_our_link(&p) {
            let backup = bin_dir.join(format!("{n}{BACKUP_SUFFIX}"));
            say(dry, &format!("move {} aside to {}", p.display(), backup.display()));
            if !dry {
                std::fs::rename(&p, &backup).map_err(|e| format!("moving {}: {e}", p.display()))?;
                push_unique(&mut manifest, format!("{n}{BACKUP_SUFFIX}"));
            }
        }
        if is_our_link(&p) {
            continue;
        }
        say(dry, &format!("link {} -> {BINARY}", p.display()));
        if !dry {
            std::os::unix::fs::symlink(BINARY, &p).map_err(|e| format!("linking {}: {e}", p.display()))?;
            push_unique(&mut manifest, n.to_string());
        }
    }
    if !dry {
        write_manifest(bin_dir, &manifest)?;
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
            say(dry, &format!("remove {}", p.display()));
            if !dry {
                std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
            }
        }
    }
    for entry in manifest.iter().filter(|e| e.ends_with(BACKUP_SUFFIX)) {
        let backup = bin_dir.join(entry);
        let orig = bin_dir.join(entry.trim_end_matches(BACKUP_SUFFIX));
        if backup.exists() && orig.symlink_metadata().is_err() {
            say(dry, &format!("restore {} from {}", orig.display(), backup.display()));
            if !dry {
                std::fs::rename(&backup, &orig).map_err(|e| format!("restoring {}: {e}", orig.display()))?;
            }
        }
    }
    let bin = bin_dir.join(BINARY);
    if manifest.iter().any(|e| e == BINARY) && bin.exists() {
        say(dry, &format!("remove {}", bin.display()));
        if !dry {
            std::fs::remove_file(&bin).map_err(|e| format!("removing {}: {e}", bin.display()))?;
        }
    }
    if !dry {
        let _ = std::fs::remove_file(bin_dir.join(MANIFEST));
    }
    Ok(())
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
    let mut f = std::fs::File::create(&path).map_err(|e| format!("writing {}: {e}", path.display()))?;
    for e in entries {
        writeln!(f, "{e}").map_err(|e| e.to_string())?;
    }
    Ok(())
}
