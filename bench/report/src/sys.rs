//! Throwaway network namespaces and timed child processes.
//!
//! Every namespace made here carries the run's tag and is removed on drop (and by
//! scripts/bench's trap if the driver dies). A child runs inside a "host" netns made here
//! (setns in the child before exec), never in the root netns, and is reaped with wait4 so
//! its wall time, CPU time and peak RSS (ru_maxrss: the largest of the child and the
//! descendants it waited for) are its own.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names of the namespaces this run made and has not removed yet.
static MADE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A named netns (/run/netns/NAME), removed on drop.
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        MADE.lock().unwrap().push(name.to_string());
        let file = File::open(format!("/run/netns/{name}")).context("opening the new netns")?;
        let ns = Netns {
            name: name.to_string(),
            file,
        };
        ns.run_quiet(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Run a command inside this netns (untimed), failing on a non-zero exit.
    pub fn run_quiet(&self, argv: &[&str]) -> Result<String> {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        let r = self.run(&mut c, None)?;
        if !r.ok {
            bail!("{}: {}{}", argv.join(" "), r.stdout.trim(), r.stderr.trim());
        }
        Ok(r.stdout)
    }

    /// Run `cmd` inside this netns and time it.
    pub fn run(&self, cmd: &mut Command, stdin: Option<&Path>) -> Result<Run> {
        let fd = self.file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run_timed(cmd, stdin)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        MADE.lock().unwrap().retain(|n| n != &self.name);
    }
}

/// Remove whatever namespaces are still recorded (called on error paths).
pub fn remove_all() {
    let names: Vec<String> = MADE.lock().unwrap().drain(..).collect();
    for n in names {
        let _ = ip(&["netns", "del", &n]);
    }
}

/// One finished child.
#[derive(Debug, Clone)]
pub struct Run {
    pub wall: Duration,
    pub cpu: Duration,
    pub maxrss_kb: i64,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn run_timed(cmd: &mut Command, stdin: Option<&Path>) -> Result<Run> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match stdin {
        Some(p) => cmd.stdin(File::open(p)?),
        None => cmd.stdin(Stdio::null()),
    };
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    // stderr on its own thread so neither pipe can fill up and stall the child.
    let errt = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut so = Vec::new();
    let _ = out.read_to_end(&mut so);
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall on our own child; `ru` is a valid out-pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = t0.elapsed();
    // The child is reaped: std must not wait for it again.
    std::mem::forget(child);
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let se = errt.join().unwrap_or_default();
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok(Run {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_kb: ru.ru_maxrss,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout: String::from_utf8_lossy(&so).into_owned(),
        stderr: String::from_utf8_lossy(&se).into_owned(),
    })
}

/// Tools and directories of this run.
pub struct Env {
    pub tag: String,
    pub tmp: PathBuf,
    pub cnichain: PathBuf,
    pub cnitool: PathBuf,
    pub ref_dir: PathBuf,
    pub dropin_dir: PathBuf,
    pub quick: bool,
}

impl Env {
    /// A fresh pod netns name (unique in this run).
    pub fn pod_name(&self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        format!("{}-p{}", self.tag, N.fetch_add(1, Ordering::Relaxed))
    }
}

/// Environment variables for a child (nothing inherited that could steer a plugin).
pub fn envs(cmd: &mut Command, vars: &BTreeMap<&str, String>) {
    cmd.env_clear();
    cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in vars {
        cmd.env(k, v);
    }
}
