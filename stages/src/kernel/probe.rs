//! Kernel feature probes for STATUS: does the running kernel support what ADD will ask
//! of it? Module files cannot tell (a monolithic kernel has none, a module may be
//! blacklisted), so each feature is really tried: on a dedicated thread that unshares
//! into a fresh network namespace, never mounted anywhere, the objects ADD makes are made
//! with the stages' own helpers (links and tc over rtnetlink, cnichain's own nftables
//! tables through `nft`, a child of that thread and so in that namespace). When the thread
//! ends the namespace and everything in it goes: nothing on the host changes (the kernel
//! may autoload a module, as ADD itself would).
//!
//! Answers: present, missing (the kernel said it does not know the kind: EOPNOTSUPP,
//! ENOENT, ...) or unknown (the probe could not run, e.g. unshare EPERM when not root).
//! Unknown counts as present: STATUS never says 50 on a guess.
//!
//! Positive answers are cached in `$CNICHAIN_STATE_DIR/kernel-features.json` for the
//! current boot (`/proc/sys/kernel/random/boot_id`), so a runtime calling STATUS every few
//! seconds does not make a namespace each time. A missing feature is probed again on
//! every call: loading the module fixes it.

use crate::kernel::netlink::htb::{self, Subnet};
use crate::kernel::netlink::{errno_of, Netlink, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};
use crate::kernel::netns::NetNs;
use crate::kernel::nft::{self, Batch, Nft, NftErrorKind};
use cnichain_engine::settings::Settings;
use cnichain_engine::spec::error::{CniError, PLUGIN_NOT_AVAILABLE};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// Something ADD asks of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    Bridge,
    Veth,
    Ifb,
    Tbf,
    /// htb qdisc and class with a u32 subnet filter (bandwidth's subnet lists).
    Htb,
    /// ingress qdisc with a u32 match-all mirred redirect (bandwidth egress).
    Redirect,
    /// cnichain's `table inet cnichain` (portmap, ipMasq).
    NftInet,
    /// cnichain's `table bridge cnichain` (macspoofchk).
    NftBridge,
}

impl Feature {
    pub const ALL: &'static [Feature] = &[
        Feature::Bridge,
        Feature::Veth,
        Feature::Ifb,
        Feature::Tbf,
        Feature::Htb,
        Feature::Redirect,
        Feature::NftInet,
        Feature::NftBridge,
    ];

    /// Stable name: the cache's key and the fault point `probe.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Bridge => "bridge",
            Feature::Veth => "veth",
            Feature::Ifb => "ifb",
            Feature::Tbf => "tbf",
            Feature::Htb => "htb",
            Feature::Redirect => "redirect",
            Feature::NftInet => "nft-inet",
            Feature::NftBridge => "nft-bridge",
        }
    }

    fn from_name(s: &str) -> Option<Feature> {
        Feature::ALL.iter().copied().find(|f| f.name() == s)
    }

    /// For messages: "the kernel has no <this> support".
    pub fn describe(self) -> &'static str {
        match self {
            Feature::Bridge => "bridge device",
            Feature::Veth => "veth device",
            Feature::Ifb => "ifb device",
            Feature::Tbf => "tbf qdisc",
            Feature::Htb => "htb qdisc (with u32 filters)",
            Feature::Redirect => "ingress qdisc with u32 mirred redirect",
            Feature::NftInet => "nftables inet nat table",
            Feature::NftBridge => "nftables bridge family",
        }
    }

    /// What to do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            Feature::Bridge => "load module bridge",
            Feature::Veth => "load module veth",
            Feature::Ifb => "load module ifb",
            Feature::Tbf => "load module sch_tbf",
            Feature::Htb => "load modules sch_htb and cls_u32",
            Feature::Redirect => "load modules sch_ingress, cls_u32 and act_mirred",
            Feature::NftInet => "load modules nf_tables, nft_nat, nft_masq, nft_ct and nft_fib_inet",
            Feature::NftBridge => "load module nf_tables with bridge family support (nft_meta_bridge)",
        }
    }

    fn fault_point(self) -> String {
        format!("probe.{}", self.name())
    }
}

/// A feature the kernel lacks, with the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub feature: Feature,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Present,
    Missing(String),
    /// The probe could not tell; counts as present, is not cached.
    Unknown(String),
}

/// The features of `wanted` the running kernel lacks (empty when it has them all or
/// cannot tell).
pub fn missing(settings: &Settings, wanted: &[Feature]) -> Vec<Missing> {
    let mut wanted: Vec<Feature> = wanted.to_vec();
    wanted.sort();
    wanted.dedup();
    // A fault point (test builds) makes its feature missing, cached or not.
    let faulted = |f: &Feature| cnichain_engine::fault::point(&f.fault_point()).is_err();
    let cache = settings.state_dir.join(CACHE_FILE);
    let boot = boot_id();
    let cached = boot.as_deref().map(|b| read_cache(&cache, b)).unwrap_or_default();
    let to_probe: Vec<Feature> = wanted
        .iter()
        .copied()
        .filter(|f| faulted(f) || !cached.contains(f))
        .collect();
    if to_probe.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut found: Vec<Feature> = Vec::new();
    for (f, outcome) in run_probes(&Nft::new(settings), &to_probe) {
        let outcome = if faulted(&f) {
            Outcome::Missing("fault point (CNICHAIN_FAULT)".into())
        } else {
            outcome
        };
        match outcome {
            Outcome::Present => found.push(f),
            Outcome::Missing(detail) => out.push(Missing { feature: f, detail }),
            Outcome::Unknown(why) => tracing::debug!("probe {}: cannot tell ({why}); taken as present", f.name()),
        }
    }
    if let (Some(b), false) = (&boot, found.is_empty()) {
        found.extend(cached);
        if let Err(e) = write_cache(&cache, b, found) {
            tracing::debug!("kernel feature cache {}: {e}", cache.display());
        }
    }
    out
}

/// For a stage's STATUS: Ok, or code 50 naming each missing feature and what needs it.
/// `needs` pairs a feature with the config setting that uses it.
pub fn require(settings: &Settings, stage: &str, needs: &[(Feature, &str)]) -> Result<(), CniError> {
    let features: Vec<Feature> = needs.iter().map(|(f, _)| *f).collect();
    let lacking = missing(settings, &features);
    if lacking.is_empty() {
        return Ok(());
    }
    let mut msgs = Vec::new();
    let mut details = Vec::new();
    for m in &lacking {
        let mut users: Vec<&str> = Vec::new();
        for (_, u) in needs.iter().filter(|(f, _)| *f == m.feature) {
            if !users.contains(u) {
                users.push(u);
            }
        }
        msgs.push(format!(
            "{stage}: the kernel has no {} support (needed for {}); {}",
            m.feature.describe(),
            users.join(", "),
            m.feature.remedy()
        ));
        details.push(format!("{}: {}", m.feature.name(), m.detail));
    }
    Err(CniError::new(PLUGIN_NOT_AVAILABLE, msgs.join("; ")).with_details(details.join("; ")))
}

/// Run the probes on a dedicated thread in a namespace of its own.
fn run_probes(nft: &Nft, features: &[Feature]) -> Vec<(Feature, Outcome)> {
    let unknown = |why: String| features.iter().map(|f| (*f, Outcome::Unknown(why.clone()))).collect();
    // The host's netns, to make sure the probe thread really left it.
    let host = match NetNs::current().and_then(|n| n.id()) {
        Ok(id) => id,
        Err(e) => return unknown(format!("{e:#}")),
    };
    let list = features.to_vec();
    let nft = nft.clone();
    let spawned = std::thread::Builder::new()
        .name("cnichain-probe".into())
        .spawn(move || probe_in_new_netns(&nft, host, &list));
    match spawned.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => unknown("the probe thread panicked".into()),
        Err(e) => unknown(format!("cannot start the probe thread: {e}")),
    }
}

/// On the probe thread only: leave the host's netns for a fresh one (this thread's
/// alone; it goes when the thread ends), then try each feature there.
fn probe_in_new_netns(nft: &Nft, host: (u64, u64), features: &[Feature]) -> Vec<(Feature, Outcome)> {
    let unknown = |why: String| features.iter().map(|f| (*f, Outcome::Unknown(why.clone()))).collect();
    // SAFETY: unshare changes only this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return unknown(format!(
            "cannot make a throwaway netns: {}",
            std::io::Error::last_os_error()
        ));
    }
    let ns = match NetNs::current() {
        Ok(ns) => ns,
        Err(e) => return unknown(format!("{e:#}")),
    };
    if !ns.id().is_ok_and(|id| id != host) {
        return unknown("still in the host's netns after unshare".into());
    }
    let mut nl = match Netlink::new() {
        Ok(nl) => nl,
        Err(e) => return unknown(format!("{e:#}")),
    };
    let mut out: Vec<(Feature, Outcome)> = Vec::new();
    let nft_wanted: Vec<Feature> = features
        .iter()
        .copied()
        .filter(|f| matches!(f, Feature::NftInet | Feature::NftBridge))
        .collect();
    for f in features.iter().copied().filter(|f| !nft_wanted.contains(f)) {
        let r = match f {
            Feature::Bridge => nl.add_bridge("cnp-br", None),
            Feature::Veth => nl.add_veth("cnp-v0", "cnp-v1", &ns, None, None),
            Feature::Ifb => nl.add_ifb("cnp-ifb"),
            Feature::Tbf | Feature::Htb | Feature::Redirect => probe_tc(&mut nl, f),
            Feature::NftInet | Feature::NftBridge => continue,
        };
        out.push((f, classify(r)));
    }
    out.extend(probe_nft(nft, &nft_wanted));
    out
}

/// The tc objects bandwidth makes, on this namespace's lo (a device every kernel has),
/// removed again so the next tc probe starts clean.
fn probe_tc(nl: &mut Netlink, f: Feature) -> anyhow::Result<()> {
    let lo = nl.index_of("lo")?;
    match f {
        Feature::Tbf => {
            nl.add_tbf(lo, 125_000, 12_500, 15_625)?;
            nl.del_qdisc(lo, TC_H_ROOT, TBF_HANDLE)
        }
        Feature::Htb => {
            let (defcls, target) = htb::class_targets(true);
            nl.add_htb_qdisc(lo, defcls)?;
            nl.add_htb_class(lo, htb::SHAPED_MINOR, 125_000, 250_000, 1_000, 1_000)?;
            let net = Subnet::parse("10.0.0.0/8").map_err(anyhow::Error::msg)?;
            nl.add_subnet_filter(lo, &net, target)?;
            nl.del_qdisc(lo, TC_H_ROOT, htb::HTB_HANDLE)
        }
        _ => {
            nl.add_ingress_qdisc(lo)?;
            nl.add_redirect_filter(lo, lo)?;
            nl.del_qdisc(lo, TC_H_INGRESS, INGRESS_HANDLE)
        }
    }
}

/// Errnos by which the kernel says it does not know a link kind, qdisc, classifier,
/// action, nftables family or expression (after trying to load its module).
fn is_unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::EOPNOTSUPP | libc::ENOENT | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT
    )
}

fn classify(r: anyhow::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Present,
        Err(e) => {
            let text = format!("{e:#}");
            if errno_of(&e).is_some_and(is_unsupported) || text.contains("Unknown device type") {
                Outcome::Missing(text)
            } else {
                Outcome::Unknown(text)
            }
        }
    }
}

/// cnichain's own base layouts, declared as ADD declares them: both in one `nft` run
/// when both are wanted, each alone to tell which one fails.
fn probe_nft(nft: &Nft, wanted: &[Feature]) -> Vec<(Feature, Outcome)> {
    let batch = |fs: &[Feature]| {
        let mut b = Batch::new();
        for f in fs {
            match f {
                Feature::NftInet => nft::layout::declare_base(&mut b),
                _ => nft::macspoof_table::declare(&mut b),
            }
        }
        b
    };
    let classify_nft = |r: Result<(), nft::NftError>| match r {
        Ok(()) => Outcome::Present,
        Err(e) if e.kind == NftErrorKind::NotFound => Outcome::Missing(e.msg),
        Err(e)
            if [
                "Operation not supported",
                "Protocol not supported",
                "Address family not supported",
            ]
            .iter()
            .any(|t| e.msg.contains(t)) =>
        {
            Outcome::Missing(e.msg)
        }
        Err(e) => Outcome::Unknown(e.msg),
    };
    if wanted.is_empty() {
        return Vec::new();
    }
    if wanted.len() > 1 && nft::apply_nft(nft, &batch(wanted)).is_ok() {
        return wanted.iter().map(|f| (*f, Outcome::Present)).collect();
    }
    wanted
        .iter()
        .map(|f| (*f, classify_nft(nft::apply_nft(nft, &batch(&[*f])))))
        .collect()
}

/// The cache file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    #[serde(rename = "bootId")]
    boot_id: String,
    /// Names of features found present during that boot.
    present: Vec<String>,
}

/// The cache is a few hundred bytes; anything larger is not ours.
const CACHE_MAX: u64 = 64 * 1024;
const CACHE_FILE: &str = "kernel-features.json";

fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The features the cache lists as present for boot `boot`; nothing when it is missing,
/// unreadable, of another boot or not ours.
fn read_cache(path: &Path, boot: &str) -> Vec<Feature> {
    let mut buf = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(CACHE_MAX + 1).read_to_end(&mut buf));
    if read.is_err() || buf.len() as u64 > CACHE_MAX {
        return Vec::new();
    }
    parse_cache(&buf, boot)
}

fn parse_cache(buf: &[u8], boot: &str) -> Vec<Feature> {
    match serde_json::from_slice::<Cache>(buf) {
        Ok(c) if c.boot_id == boot => c.present.iter().filter_map(|n| Feature::from_name(n)).collect(),
        _ => Vec::new(),
    }
}

/// Write the cache atomically (a temporary file renamed over it): concurrent callers
/// each leave a whole file.
fn write_cache(path: &Path, boot: &str, mut present: Vec<Feature>) -> std::io::Result<()> {
    present.sort();
    present.dedup();
    let c = Cache {
        boot_id: boot.to_string(),
        present: present.iter().map(|f| f.name().to_string()).collect(),
    };
    let data = serde_json::to_vec(&c).map_err(std::io::Error::other)?;
    cnichain_engine::cache::write_atomic(path, &data, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fault_points_are_listed() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(*f));
            assert!(
                cnichain_engine::fault::PROBE_POINTS.contains(&f.fault_point().as_str()),
                "{} missing from fault::PROBE_POINTS",
                f.fault_point()
            );
        }
        assert_eq!(cnichain_engine::fault::PROBE_POINTS.len(), Feature::ALL.len());
        assert_eq!(Feature::from_name("nope"), None);
    }

    #[test]
    fn garbage_caches_are_ignored() {
        let boot = "b1";
        for bad in [
            &b""[..],
            b"\xff\x00garbage",
            b"{}",
            b"[1,2]",
            b"null",
            br#"{"bootId": 5, "present": []}"#,
            br#"{"bootId": "b1", "present": "bridge"}"#,
            br#"{"bootId": "b1", "present": [1, null]}"#,
            br#"{"bootId": "b2", "present": ["bridge"]}"#,
            br#"{"bootId": "b1", "present": ["bridge""#,
        ] {
            assert_eq!(parse_cache(bad, boot), Vec::<Feature>::new(), "{bad:?}");
        }
        assert_eq!(
            parse_cache(br#"{"bootId": "b1", "present": ["ifb", "what", "bridge"]}"#, boot),
            vec![Feature::Ifb, Feature::Bridge]
        );
    }

    #[test]
    fn cache_write_then_read() {
        let dir = std::env::temp_dir().join(format!("cnichain-probe-unit-{}", std::process::id()));
        let p = dir.join("sub").join(CACHE_FILE);
        write_cache(&p, "b1", vec![Feature::Veth, Feature::Bridge, Feature::Veth]).unwrap();
        assert_eq!(read_cache(&p, "b1"), vec![Feature::Bridge, Feature::Veth]);
        assert_eq!(read_cache(&p, "b2"), Vec::<Feature>::new());
        std::fs::write(&p, vec![b' '; CACHE_MAX as usize + 10]).unwrap();
        assert_eq!(read_cache(&p, "b1"), Vec::<Feature>::new());
        let left: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsupported_errnos() {
        assert!(is_unsupported(libc::EOPNOTSUPP));
        assert!(is_unsupported(libc::ENOENT));
        assert!(!is_unsupported(libc::EPERM));
        assert!(!is_unsupported(libc::EEXIST));
        assert_eq!(classify(Ok(())), Outcome::Present);
        assert!(matches!(classify(Err(anyhow::anyhow!("odd"))), Outcome::Unknown(_)));
        let kernel = |errno: i32, msg: Option<&str>| {
            Err(anyhow::Error::new(crate::kernel::netlink::NetlinkError {
                op: "add ifb \"cnp-ifb\" in the current netns".into(),
                errno,
                kernel_msg: msg.map(String::from),
            }))
        };
        // `ip link add x type nosuch`: EOPNOTSUPP; an unknown qdisc / classifier / action: ENOENT.
        assert!(
            matches!(classify(kernel(libc::EOPNOTSUPP, Some("Unknown device type"))), Outcome::Missing(m) if m.contains("Unknown device type"))
        );
        assert!(matches!(classify(kernel(libc::ENOENT, None)), Outcome::Missing(_)));
        assert!(matches!(classify(kernel(libc::EPERM, None)), Outcome::Unknown(_)));
    }

    /// On a root test run the probes really run (in a throwaway netns) and this kernel
    /// has every feature.
    #[test]
    fn real_probes_as_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let r = run_probes(&Nft::new(&Settings::default()), Feature::ALL);
        assert_eq!(r.len(), Feature::ALL.len());
        for (f, o) in r {
            assert_eq!(o, Outcome::Present, "{}", f.name());
        }
    }
}
