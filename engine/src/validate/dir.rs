//! Checks across the files of a directory: a network name defined twice (libcni loads
//! the first file by its search order, the other is shadowed: never used), and IPAM
//! subnets of different networks that overlap.

use super::diag::Code;
use super::{rules, Cx, FileReport, Kind};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

fn is_conflist(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("conflist")
}

/// libcni's search order in a directory (cnitool LoadConfList): `*.conflist` sorted by
/// name, then `*.conf` and `*.json` sorted by name.
fn search_order(a: &FileReport, b: &FileReport) -> Ordering {
    (!is_conflist(&a.path), &a.path).cmp(&(!is_conflist(&b.path), &b.path))
}

/// Duplicate network names among the files of one directory (or those named on the
/// command line: a runtime pointed at them loads one network per name).
pub fn check_directory(cx: &mut Cx, files: &[FileReport]) {
    // files of one directory in libcni's order; directories in the order given
    let mut dirs: Vec<&Path> = Vec::new();
    for f in files {
        let d = f.path.parent().unwrap_or(Path::new(""));
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let dir_index = |f: &FileReport| {
        let d = f.path.parent().unwrap_or(Path::new(""));
        dirs.iter().position(|x| *x == d).unwrap_or(usize::MAX)
    };
    let mut order: Vec<&FileReport> = files.iter().filter(|f| f.kind != Kind::Guess).collect();
    order.sort_by(|a, b| dir_index(a).cmp(&dir_index(b)).then_with(|| search_order(a, b)));
    let mut first: HashMap<&str, &FileReport> = HashMap::new();
    for f in order {
        let (Some(name), Some(src)) = (f.name.as_deref(), f.src) else {
            continue;
        };
        match first.get(name) {
            None => {
                first.insert(name, f);
            }
            // the same file named twice
            Some(winner) if same_file(&winner.path, &f.path) => {}
            Some(winner) => {
                let why = if winner.path.parent() != f.path.parent() {
                    "it comes first on the command line, and a runtime loads one network per name"
                } else if f.path < winner.path {
                    "libcni searches .conflist files before .conf and .json files"
                } else {
                    "libcni takes the first file by name"
                };
                let shown = winner
                    .src
                    .and_then(|s| cx.sources.get(s))
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| winner.path.display().to_string());
                cx.at(
                    src,
                    Code::DuplicateNetwork,
                    "/name",
                    format!("network {name:?} is also defined in {shown}, which shadows this file ({why})"),
                );
                cx.hint("give each network its own name, or remove the file that is not used");
            }
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Subnets of different networks that overlap. Each later subnet is reported once,
/// against the first network it overlaps.
pub fn check_overlaps(cx: &mut Cx, files: &[&FileReport]) {
    let mut seen_names: HashMap<&str, ()> = HashMap::new();
    let mut nets: Vec<(&str, &FileReport)> = Vec::new();
    for f in files {
        if let Some(n) = f.name.as_deref() {
            if seen_names.insert(n, ()).is_none() {
                nets.push((n, f));
            }
        }
    }
    for (j, (name_b, b)) in nets.iter().enumerate() {
        for sb in &b.subnets {
            let hit = nets[..j].iter().find_map(|(name_a, a)| {
                a.subnets
                    .iter()
                    .find(|sa| rules::overlaps(&sa.net, &sb.net))
                    .map(|sa| (*name_a, sa))
            });
            if let Some((name_a, sa)) = hit {
                let at = match cx.sources.get(sa.src) {
                    Some(s) => {
                        let span = s.pos.value_or_parent(&sa.ptr);
                        let (l, c) = s.pos.line_col(&s.text, span.start);
                        format!("{}:{l}:{c}", s.name)
                    }
                    None => String::new(),
                };
                let path = cx.path(sb.src, &sb.ptr);
                cx.at(
                    sb.src,
                    Code::SubnetOverlap,
                    &sb.ptr,
                    format!(
                        "{path}: {} of network {name_b:?} overlaps {} of network {name_a:?} ({at})",
                        sb.net, sa.net
                    ),
                );
                cx.hint("networks on one node need disjoint subnets, or their routes and addresses collide");
            }
        }
    }
}
