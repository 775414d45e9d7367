//! A real container runtime executes cnichain: Debian's podman (4.3, CNI backend, runc)
//! runs a busybox container with `-p HOSTPORT:80` on two networks made of the same
//! chain (bridge + host-local, tuning, portmap, bandwidth):
//!   - as cnichain drop-ins (the `cnichain install` symlinks, one exec per plugin), and
//!   - as one `cnichain` meta-plugin entry carrying the chain (one exec in all).
//! The CNI plugin dirs are [the install dir, /usr/lib/cni], so anything cnichain does
//! not implement would come from the reference plugins.
//!
//! Everything happens in a sandbox: podman runs inside the sandbox's host netns (so the
//! bridge, veths, ifb, nft table and ip_forward never touch the machine's root netns),
//! with its own containers.conf, --root/--runroot/tmp_dir, network_config_dir and
//! host-local dataDir in the sandbox dir. Skipped only when podman is not installed
//! (`scripts/install-deps` installs it).

mod common;
use cnichain_stages::bandwidth;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests share /var/lib/containers (podman's blob-info cache, whatever --root says)
/// and remove it when they made it: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const IFNAME: &str = "eth0";
const SOMAXCONN: &str = "1234";

fn podman_installed() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The hard limit of a resource, clamped to `max`.
fn hard_limit(res: libc::__rlimit_resource_t, max: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let got = unsafe { libc::getrlimit(res, &mut r) };
    if got != 0 || r.rlim_max == libc::RLIM_INFINITY || r.rlim_max > max {
        max
    } else {
        r.rlim_max
    }
}

/// One podman "installation" inside the sandbox. Dropped before the sandbox (declare it
/// after): removes the containers and images, unmounts what storage left mounted under
/// its dir, removes libcni's result cache files of its networks, and /var/lib/containers
/// and an empty /run/runc when they were not there before.
struct Podman {
    netns: String,
    dir: PathBuf,
    nets: Vec<String>,
    made_var_lib_containers: bool,
    made_run_runc: bool,
}

impl Podman {
    fn new(sb: &Sandbox, plugin_dirs: &[&Path], nets: &[String]) -> Podman {
        let dir = sb.dir.join("podman");
        for sub in ["net", "tmp", "libpod", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(sub)).expect("podman dirs");
        }
        let p = Podman {
            netns: sb.host(),
            dir,
            nets: nets.to_vec(),
            made_var_lib_containers: !Path::new("/var/lib/containers").exists(),
            made_run_runc: !Path::new("/run/runc").exists(),
        };
        // As root, podman asks for nofile=1048576 and clamps its own RLIMIT_NPROC to
        // 32768; without CAP_SYS_RESOURCE above the hard limits both fail with EPERM.
        let nofile = hard_limit(libc::RLIMIT_NOFILE, 1_048_576);
        let nproc = hard_limit(libc::RLIMIT_NPROC, 32_768);
        let dirs: Vec<String> = plugin_dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .collect();
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
lock_type = "file"
tmp_dir = "{libpod}"
image_copy_tmp_dir = "{tmp}"
# conmon's exit command (podman container cleanup, which DELs again) runs with conmon's
# environment, not ours: keep cnichain's locks in the sandbox there too.
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CNICHAIN_STATE_DIR={state}"]
[network]
network_backend = "cni"
cni_plugin_dirs = [{dirs}]
network_config_dir = "{net}"
"#,
            libpod = p.dir.join("libpod").display(),
            tmp = p.dir.join("tmp").display(),
            state = p.dir.join("cnichain-state").display(),
            dirs = dirs.join(", "),
            net = p.net_dir().display(),
        );
        std::fs::write(p.dir.join("containers.conf"), conf).expect("containers.conf");
        p
    }

    fn net_dir(&self) -> PathBuf {
        self.dir.join("net")
    }

    /// `podman ARGS` inside the sandbox's host netns with this installation's settings.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("TMPDIR", self.dir.join("tmp"))
            // cnichain's drop-ins inherit podman's environment: keep their locks and
            // records in the sandbox too
            .env("CNICHAIN_STATE_DIR", self.dir.join("cnichain-state"))
            .env_remove("CONTAINERS_STORAGE_CONF")
            .env_remove("CNI_PATH")
            .env_remove("NETCONFPATH");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run podman")
    }

    /// A busybox rootfs (busybox-static) imported as an image.
    fn import_busybox(&self, image: &str) {
        let rootfs = self.dir.join("rootfs");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox (busybox-static) is not installed");
        std::fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "ip", "cat", "nc", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
        }
        let tar = self.dir.join("rootfs.tar");
        let o = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .expect("tar");
        ok(&o);
        ok(&self.run(&["import", "-q", &tar.display().to_string(), image]));
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        let _ = self.run(&["rmi", "-af"]);
        // storage's mounts (the overlay home is a private bind mount of itself), deepest first
        let prefix = format!("{}/", self.dir.display());
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix) || *m == self.dir.display().to_string())
            .collect();
        mounts.sort();
        mounts.dedup();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        // libcni's cache, written by podman in the default place
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if self.nets.iter().any(|n| name.starts_with(&format!("{n}-"))) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if self.made_var_lib_containers {
            let _ = std::fs::remove_dir_all("/var/lib/containers");
        }
        // runc's state root (empty once the containers are gone; kept if not)
        if self.made_run_runc {
            let _ = std::fs::remove_dir("/run/runc");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The chain both networks run: bridge + host-local (dataDir in the sandbox), tuning,
/// portmap, bandwidth.
fn chain(bridge: &str, subnet: &str, gateway: &str, ipam_dir: &Path) -> String {
    format!(
        r#"[
  {{ "type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": {{ "type": "host-local", "dataDir": "{ipam}",
              "ranges": [[{{ "subnet": "{subnet}", "gateway": "{gateway}" }}]],
              "routes": [{{ "dst": "0.0.0.0/0" }}] }} }},
  {{ "type": "tuning", "sysctl": {{ "net.core.somaxconn": "{SOMAXCONN}" }} }},
  {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }},
  {{ "type": "bandwidth", "capabilities": {{ "bandwidth": true }},
    "ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000 }}
]"#,
        ipam = ipam_dir.display()
    )
}

struct Net {
    name: String,
    bridge: &'static str,
    subnet: String,
    gateway: String,
    /// the address host-local hands the first container (fresh dataDir)
    expect_ip: String,
    host_port: u16,
    meta: bool,
}

fn conflist(net: &Net, ipam_dir: &Path) -> String {
    let inner = chain(net.bridge, &net.subnet, &net.gateway, ipam_dir);
    let plugins = if net.meta {
        format!(
            r#"[{{ "type": "cnichain", "capabilities": {{ "portMappings": true, "bandwidth": true }}, "plugins": {inner} }}]"#
        )
    } else {
        inner
    };
    format!(
        r#"{{ "cniVersion": "1.0.0", "name": "{}", "plugins": {plugins} }}"#,
        net.name
    )
}

fn nft_table(sb: &Sandbox) -> String {
    stdout(&sb.sh_in(&sb.host(), "nft list table inet cnichain 2>/dev/null"))
}

/// The chains of an `nft list table` listing: (name, body).
fn chains(table: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in table.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("chain ") {
            cur = Some((rest.trim_end_matches('{').trim().to_string(), String::new()));
        } else if t == "}" {
            out.extend(cur.take());
        } else if let Some((_, body)) = cur.as_mut() {
            body.push_str(t);
            body.push('\n');
        }
    }
    out
}

/// `tok` occurs in `text` not as part of a longer number or address.
fn has_token(text: &str, tok: &str) -> bool {
    let b = text.as_bytes();
    text.match_indices(tok).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + tok.len()).copied();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.') && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

fn host_links(sb: &Sandbox) -> Vec<String> {
    stdout(&sb.sh_in(&sb.host(), "ip -o link show"))
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// host-local reservation files (not its lock or last_reserved_ip.*).
fn reservations(sb: &Sandbox) -> Vec<String> {
    sb.files_in("ipam")
        .into_iter()
        .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved_ip"))
        .collect()
}

/// Connect from the sandbox host netns to gateway:port until the container's line
/// arrives (its nc may not be listening yet right after `podman run`).
fn fetch(sb: &Sandbox, addr: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = stdout(&sb.sh_in(
            &sb.host(),
            &format!("timeout 3 busybox nc {addr} {port} </dev/null 2>/dev/null"),
        ));
        if got.trim() == "hello" || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_container_on(meta: bool, tag: &str, host_port: u16, third_octet: u8) {
    require_root("podman, netns, bridges, nftables");
    assert!(
        podman_installed(),
        "podman is not installed (scripts/install-deps installs podman and runc)"
    );
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let sb = Sandbox::new(tag);
    let bin = sb.dir.join("cnibin");
    let o = Command::new(cnichain_bin())
        .args(["install", "--bin-dir"])
        .arg(&bin)
        .output()
        .unwrap();
    ok(&o);
    let net = Net {
        name: format!("{}-n", sb.tag),
        bridge: if meta { "cnpm0" } else { "cnpd0" },
        subnet: format!("10.89.{third_octet}.0/24"),
        gateway: format!("10.89.{third_octet}.1"),
        expect_ip: format!("10.89.{third_octet}.2"),
        host_port,
        meta,
    };
    let pm = Podman::new(&sb, &[&bin, Path::new(REF_PLUGINS)], &[net.name.clone()]);
    std::fs::write(
        pm.net_dir().join(format!("{}.conflist", net.name)),
        conflist(&net, &sb.ipam_dir()),
    )
    .unwrap();
    let image = "localhost/cnichain-busybox:latest";
    pm.import_busybox(image);
    eprintln!(
        "{}, network backend {}",
        stdout(&pm.run(&["--version"])).trim(),
        stdout(&pm.run(&["info", "--format", "{{.Host.NetworkBackend}}"])).trim()
    );
    let listed = ok(&pm.run(&["network", "ls", "--format", "{{.Name}}"]));
    assert!(
        listed.lines().any(|l| l == net.name),
        "podman does not list {}: {listed}",
        net.name
    );

    // --- run: podman ADDs the container to the network through libcni
    let cname = format!("{}-c", sb.tag);
    let port_arg = format!("{}:80", net.host_port);
    let out = pm.run(&[
        "run",
        "-d",
        "--name",
        &cname,
        "--network",
        &net.name,
        "-p",
        &port_arg,
        image,
        "sh",
        "-c",
        "while :; do nc -l -p 80 -e echo hello; done",
    ]);
    let cid = ok(&out).trim().to_string();
    assert_eq!(cid.len(), 64, "container id: {cid:?} ({})", stderr(&out));

    // the container has its address on eth0 and the tuning sysctl in its netns
    let addr = ok(&pm.run(&["exec", &cname, "ip", "-4", "-o", "addr", "show", "dev", IFNAME]));
    assert!(
        addr.contains(&format!("inet {}/24 ", net.expect_ip)),
        "container eth0: {addr}"
    );
    let somax = ok(&pm.run(&["exec", &cname, "cat", "/proc/sys/net/core/somaxconn"]));
    assert_eq!(somax.trim(), SOMAXCONN, "tuning sysctl in the container");
    // podman parsed the chain's result
    let inspect = ok(&pm.run(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}",
        &cname,
    ]));
    assert_eq!(
        inspect.trim(),
        format!("{} {}", net.expect_ip, net.gateway),
        "podman inspect"
    );

    // host side: veth and ifb named after this attachment, tbf on both
    let veth = cnichain_stages::kernel::names::host_veth_name(&net.name, &cid, IFNAME);
    let ifb = bandwidth::config::ifb_name(&net.name, &cid);
    let links = host_links(&sb);
    assert!(links.contains(&veth), "host veth {veth} missing: {links:?}");
    assert!(links.contains(&ifb), "ifb {ifb} missing: {links:?}");
    assert!(
        links.iter().any(|l| l == net.bridge),
        "bridge {} missing: {links:?}",
        net.bridge
    );
    let qdiscs = stdout(&sb.sh_in(&sb.host(), "tc qdisc show"));
    for dev in [&veth, &ifb] {
        assert!(
            qdiscs
                .lines()
                .any(|l| l.starts_with("qdisc tbf 1: dev ") && l.contains(&format!(" dev {dev} root"))),
            "no tbf on {dev}: {qdiscs}"
        );
    }
    // host-local's reservation names the container
    let res_file = sb.ipam_dir().join(&net.name).join(&net.expect_ip);
    let res = std::fs::read_to_string(&res_file).unwrap_or_default();
    assert!(res.contains(&cid), "reservation {} = {res:?}", res_file.display());
    // libcni's cache of the attachment (podman writes it with the chain's result)
    let cache = PathBuf::from(format!("/var/lib/cni/results/{}-{cid}-{IFNAME}", net.name));
    assert!(cache.exists(), "no libcni cache {}", cache.display());

    // nft (the layout is stages/src/kernel/nft/layout.rs): while the container runs, the table
    // maps its host port to its address (a DNAT rule or map element naming both) and
    // names its address once more (ipMasq); after rm neither may be left
    let table = nft_table(&sb);
    eprintln!("--- nft list table inet cnichain (running)\n{table}");
    let port = net.host_port.to_string();
    let ip = net.expect_ip.as_str();
    assert!(
        table.lines().any(|l| has_token(l, &port) && has_token(l, ip)),
        "nft maps no port {port} to {ip}:\n{table}"
    );
    assert!(
        table.lines().any(|l| !has_token(l, &port) && has_token(l, ip)),
        "nft has no ipMasq entry for {ip}:\n{table}"
    );
    // the chains whose rules name this container's address or port are its own
    let own_chains: Vec<String> = chains(&table)
        .into_iter()
        .filter(|(_, body)| has_token(body, ip) || has_token(body, &port))
        .map(|(name, _)| name)
        .collect();
    eprintln!("chains of the attachment: {own_chains:?}");

    // the port map works: sandbox host -> gateway:HOSTPORT -> container:80
    let got = fetch(&sb, &net.gateway, net.host_port);
    assert_eq!(got.trim(), "hello", "through {}:{}", net.gateway, net.host_port);

    // --- rm: podman DELs the attachment
    ok(&pm.run(&["rm", "-f", "-t", "0", &cname]));
    let links = host_links(&sb);
    assert!(
        !links.iter().any(|l| l.starts_with("veth") || l.starts_with("bwp")),
        "veth/ifb left in the sandbox host netns: {links:?}"
    );
    assert_eq!(
        stdout(&sb.sh_in(&sb.host(), "ip -o link show type veth | wc -l")).trim(),
        "0",
        "veths left"
    );
    assert_eq!(
        stdout(&sb.sh_in(&sb.host(), "ip -o link show type ifb | wc -l")).trim(),
        "0",
        "ifbs left"
    );
    let left = reservations(&sb);
    assert!(left.is_empty(), "host-local reservations left: {left:?}");
    assert!(!cache.exists(), "libcni cache {} left", cache.display());
    let table = nft_table(&sb);
    eprintln!("--- nft list table inet cnichain (after rm)\n{table}");
    for gone in [&port, &net.expect_ip, &cid] {
        assert!(!has_token(&table, gone), "nft still has {gone}:\n{table}");
    }
    for (name, _) in chains(&table) {
        assert!(!own_chains.contains(&name), "nft still has chain {name}:\n{table}");
    }
    let got = stdout(&sb.sh_in(
        &sb.host(),
        &format!(
            "timeout 2 busybox nc {} {} </dev/null 2>/dev/null",
            net.gateway, net.host_port
        ),
    ));
    assert_ne!(got.trim(), "hello", "the port map still answers after rm");
    eprintln!(
        "podman on {} network: ok in {:.1}s",
        if meta { "meta-plugin" } else { "drop-in" },
        started.elapsed().as_secs_f64()
    );
}

/// bridge, host-local, tuning, portmap and bandwidth are each the cnichain binary
/// (the `cnichain install` symlinks), exec'd by podman's libcni one by one.
#[test]
fn podman_runs_a_container_on_drop_ins() {
    run_container_on(false, "pdrop", 18081, 81);
}

/// One `cnichain` entry carries the chain; podman's portMappings reach the inner portmap.
#[test]
fn podman_runs_a_container_on_the_meta_plugin() {
    run_container_on(true, "pmeta", 18082, 82);
}
