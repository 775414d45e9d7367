//! A real containerd (Debian's 1.6, CRI plugin, runc v2 shims) for tests, isolated in a
//! sandbox: it runs inside the sandbox's "host" netns (so bridges, veths and nftables
//! never touch the machine's root netns) with its own config, root, state, sockets, runc
//! root, netns mount dir (`netns_mounts_under_state_dir`), native snapshotter and CNI
//! `bin_dir`/`conf_dir`, all under the sandbox dir. Its sandbox ("pause") image is built
//! here (busybox-static, an OCI layout) and imported with `ctr`: nothing is pulled.
//!
//! Drop (before the sandbox: declare it after) kills containerd, its shims and their
//! containers, unmounts what they left mounted under the dir, removes the shim sockets
//! (containerd 1.6 puts them in /run/containerd/s whatever its state dir), the sandboxes'
//! cgroups and libcni's cache files of the tracked sandboxes.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PAUSE_IMAGE: &str = "localhost/cnichain-pause:1";
/// containerd's CRI namespace.
pub const K8S_NS: &str = "k8s.io";
/// Where containerd 1.6 puts shim sockets, whatever its own state dir.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

pub fn containerd_installed() -> bool {
    Command::new("containerd")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub struct Containerd {
    pub dir: PathBuf,
    /// the sandbox's host netns (name under /run/netns)
    pub host: String,
    pub sock: PathBuf,
    /// the pods' cgroup parent (absolute, cgroupfs): removed on drop
    pub cgroup_parent: String,
    /// extra environment for containerd (and so for the CNI plugins it execs)
    env: Vec<(String, String)>,
    child: Option<Child>,
    made_run_containerd: bool,
    /// sandbox ids whose libcni cache files drop removes (if the test did not)
    ids: Mutex<BTreeSet<String>>,
}

impl Containerd {
    /// Write the config (CNI bin_dir and conf_dir as given), start containerd in the
    /// sandbox's host netns with `env` and import the pause image.
    pub fn start(sb: &Sandbox, bin_dir: &Path, conf_dir: &Path, env: &[(&str, String)]) -> Containerd {
        require_root("containerd, netns");
        let dir = sb.dir.join("ctd");
        for sub in ["root", "state", "runc", "image"] {
            std::fs::create_dir_all(dir.join(sub)).expect("containerd dirs");
        }
        let mut cd = Containerd {
            sock: dir.join("c.sock"),
            dir,
            host: sb.host(),
            cgroup_parent: format!("/{}", sb.tag),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            child: None,
            made_run_containerd: !Path::new("/run/containerd").exists(),
            ids: Mutex::new(BTreeSet::new()),
        };
        std::fs::write(cd.dir.join("config.toml"), cd.config(bin_dir, conf_dir)).expect("config.toml");
        cd.spawn();
        cd.import_pause();
        cd
    }

    fn config(&self, bin_dir: &Path, conf_dir: &Path) -> String {
        let d = self.dir.display();
        // Only what the CRI path needs: no other snapshotters (native works on any
        // filesystem), no tracing, no /opt/containerd.
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.internal.v1.opt"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "info"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    disable_apparmor = true
    # this machine refuses a lower oom_score_adj even to root (runc then fails with
    # "can't get final child's PID from pipe"): keep containerd's own, as on a node
    # where the kubelet runs in a user namespace
    restrict_oom_score_adj = true
    disable_cgroup = false
    systemd_cgroup = false
    # pod netns files under state/io.containerd.grpc.v1.cri/netns, not /var/run/netns
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "native"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "{d}/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{bin}"
      conf_dir = "{conf}"
      max_conf_num = 1
"#,
            sock = self.sock.display(),
            bin = bin_dir.display(),
            conf = conf_dir.display(),
        )
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "containerd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("containerd log");
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host))
            .arg("--")
            .arg("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env_remove("CNI_PATH")
            .env_remove("NETCONFPATH")
            .env_remove("CNICHAIN_FAULT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // nsenter execs containerd: the child's pid is containerd's (SIGKILL hits it)
        self.child = Some(c.spawn().expect("start containerd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("containerd exited ({st}) before serving:\n{}", self.log_tail(40));
            }
            assert!(
                Instant::now() < deadline,
                "containerd not serving after 30 s:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL containerd (its shims and pods keep running, as on a node).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start containerd again on the same root and state.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Remember a sandbox id: drop removes libcni's cache files that name it.
    pub fn track(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(id.to_string());
        }
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.sock)
            .args(["-n", K8S_NS])
            .args(args)
            .output()
            .expect("run ctr")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where this containerd mounts the pods' netns files.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("state/io.containerd.grpc.v1.cri/netns")
    }

    pub fn netns_files(&self) -> Vec<String> {
        std::fs::read_dir(self.netns_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Build the pause image (an OCI image layout: one uncompressed layer with
    /// busybox-static, entrypoint `sleep`) and import it for the CRI plugin.
    fn import_pause(&self) {
        let img = self.dir.join("image");
        let rootfs = img.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox (busybox-static) is not installed");
        std::fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
        }
        let layer = img.join("layer.tar");
        ok(&Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--owner=0", "--group=0", "-cf"])
            .arg(&layer)
            .arg(".")
            .output()
            .expect("tar"));
        let layout = img.join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
        let put = |bytes: &[u8]| -> (String, usize) {
            let digest = format!("{:x}", Sha256::digest(bytes));
            std::fs::write(layout.join("blobs/sha256").join(&digest), bytes).expect("blob");
            (format!("sha256:{digest}"), bytes.len())
        };
        let (layer_digest, layer_size) = put(&std::fs::read(&layer).expect("layer"));
        let config = serde_json::json!({
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "os": "linux",
            "config": { "Entrypoint": ["/bin/sleep", "1000000"] },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest.clone()] },
        });
        let (config_digest, config_size) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": config_digest, "size": config_size },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                         "digest": layer_digest, "size": layer_size }],
        });
        let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": manifest_digest, "size": manifest_size,
                            "annotations": { "io.containerd.image.name": PAUSE_IMAGE,
                                             "org.opencontainers.image.ref.name": "1" } }],
        });
        std::fs::write(layout.join("index.json"), index.to_string()).expect("index.json");
        std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let archive = img.join("pause.tar");
        ok(&Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"])
            .output()
            .expect("tar"));
        let o = self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            &archive.display().to_string(),
        ]);
        assert!(o.status.success(), "ctr images import: {}", stderr(&o));
        let listed = stdout(&self.ctr(&["images", "ls", "-q"]));
        assert!(
            listed.lines().any(|l| l == PAUSE_IMAGE),
            "pause image not listed: {listed}"
        );
    }

    /// Processes whose command line names this containerd's socket (its shims).
    fn shim_pids(&self) -> Vec<i32> {
        let sock = self.sock.display().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|a| a.contains("containerd-shim")) && args.iter().any(|a| *a == sock) {
                out.push(pid);
            }
        }
        out
    }

    /// Every pid whose parent chain reaches `root` (children before parents).
    fn descendants(root: i32) -> Vec<i32> {
        let mut parent = std::collections::HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) {
                    parent.insert(pid, ppid);
                }
            }
        }
        let mut out = Vec::new();
        for &pid in parent.keys() {
            let mut p = pid;
            let mut hops = 0;
            while let Some(&pp) = parent.get(&p) {
                if pp == root {
                    out.push(pid);
                    break;
                }
                p = pp;
                hops += 1;
                if hops > 64 {
                    break;
                }
            }
        }
        out
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill9();
        // the containers through runc (kills their processes, removes their cgroups)
        let runc_root = self.dir.join("runc");
        for ns in std::fs::read_dir(&runc_root).into_iter().flatten().flatten() {
            let root = ns.path();
            let listed = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output();
            for id in listed.map(|o| stdout(&o)).unwrap_or_default().lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-f", id])
                    .output();
            }
        }
        // the shims' sockets (named in each task bundle's `address`), then the shims and
        // anything still under them
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task").join(K8S_NS);
        for b in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            if let Ok(addr) = std::fs::read_to_string(b.path().join("address")) {
                if let Some(p) = addr.trim().strip_prefix("unix://") {
                    if p.starts_with(SHIM_SOCKET_DIR) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
        }
        for _ in 0..3 {
            let shims = self.shim_pids();
            if shims.is_empty() {
                break;
            }
            for s in &shims {
                for d in Self::descendants(*s) {
                    unsafe { libc::kill(d, libc::SIGKILL) };
                }
                unsafe { libc::kill(*s, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // mounts left under the dir (netns bind mounts, /dev/shm tmpfs, rootfs), deepest first
        let prefix = format!("{}/", self.dir.display());
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort();
        mounts.dedup();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        // the pods' cgroups (cgroupfs: one dir per controller hierarchy)
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            if h.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                continue;
            }
            let parent = h.path().join(self.cgroup_parent.trim_start_matches('/'));
            for c in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if c.path().is_dir() {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
        // libcni's cache (go-cni writes it in the fixed /var/lib/cni) of the tracked ids
        let ids = self.ids.lock().map(|i| i.clone()).unwrap_or_default();
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if ids.iter().any(|id| name.contains(&format!("-{id}-"))) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if self.made_run_containerd {
            let _ = std::fs::remove_dir(SHIM_SOCKET_DIR);
            let _ = std::fs::remove_dir("/run/containerd");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
