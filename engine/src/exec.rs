//! The exec fallback: run a plugin binary per the spec, the way libcni's invoke package
//! does (environment, stdin, result fix-up, error parsing), plus a per-plugin timeout and
//! a working "text file busy" retry (a new process each try).

use crate::spec::error::{CniError, INTERNAL, TRY_AGAIN_LATER};
use crate::spec::result::CniResult;
use crate::stage::contract::{Command, Invocation, Stage};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Tries for a plugin binary that is still being written (ETXTBSY), 1 s apart, as libcni.
const TXTBSY_TRIES: usize = 6;

pub struct ExecStage {
    pub path: PathBuf,
    pub timeout: Option<Duration>,
}

/// The six CNI_* variables, as libcni's Args.AsEnv sets them (empty ones included).
pub fn cni_env(
    command: Command,
    container_id: &str,
    netns: &str,
    args: &str,
    ifname: &str,
    path: &str,
) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), command.as_str().into()),
        ("CNI_CONTAINERID".into(), container_id.into()),
        ("CNI_NETNS".into(), netns.into()),
        ("CNI_ARGS".into(), args.into()),
        ("CNI_IFNAME".into(), ifname.into()),
        ("CNI_PATH".into(), path.into()),
    ]
}

fn env_for(inv: &Invocation) -> Vec<(String, String)> {
    let path = inv
        .cni_path
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let rt = inv.rt;
    let mut env = match inv.command {
        // libcni passes an empty RuntimeConf to GC and STATUS.
        Command::Gc | Command::Status => cni_env(inv.command, "", "", "", "", &path),
        _ => cni_env(
            inv.command,
            &rt.container_id,
            &rt.netns,
            &crate::spec::args::format_cni_args(&rt.args),
            &rt.ifname,
            &path,
        ),
    };
    // The state dir the entry point chose (a --state-dir flag included) reaches an
    // exec'd cnichain drop-in, whose locks and records must be the same ones.
    env.push((
        crate::settings::STATE_DIR_ENV.into(),
        inv.settings().state_dir.display().to_string(),
    ));
    // An exec'd IPAM delegate learns how deep it is, so a delegation cycle through
    // exec'd plugins ends (see stage::MAX_DELEGATION_DEPTH).
    let depth = crate::stage::delegate::delegation_depth(inv.settings().inherited_depth);
    if depth > 0 {
        env.push((crate::settings::DEPTH_ENV.into(), depth.to_string()));
    }
    env
}

/// What a finished plugin process gave back.
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub success: bool,
    pub status: String,
}

/// A plugin's stdout or stderr beyond this is refused (and the plugin killed) rather
/// than read into memory: the same cap as a config file.
pub const MAX_OUTPUT_BYTES: u64 = crate::load::MAX_CONF_BYTES;

/// What a reader thread saw on one of the plugin's pipes.
enum Stream {
    Out(Vec<u8>),
    Err(Vec<u8>),
    /// More than MAX_OUTPUT_BYTES on stdout (true) or stderr (false).
    TooLong(bool),
}

/// Read `pipe` to its end, up to the cap.
fn read_capped(pipe: Option<impl Read>, is_out: bool, tx: mpsc::Sender<Stream>) {
    let mut b = Vec::new();
    if let Some(p) = pipe {
        let _ = p.take(MAX_OUTPUT_BYTES + 1).read_to_end(&mut b);
    }
    let _ = tx.send(if b.len() as u64 > MAX_OUTPUT_BYTES {
        Stream::TooLong(is_out)
    } else if is_out {
        Stream::Out(b)
    } else {
        Stream::Err(b)
    });
}

/// Wait until the unreaped `child` has exited (without reaping it) or `deadline`
/// passes; true when it exited. pidfd where the kernel has it (5.3), else polling.
fn wait_exit(child: &mut std::process::Child, deadline: Option<Instant>) -> bool {
    // SAFETY: pidfd_open on the pid of our own child, which is not reaped yet (only
    // this function's caller reaps it), so the pid is still this process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as libc::c_int;
    if fd >= 0 {
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as libc::c_int,
            };
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc > 0 {
                return true;
            }
            if rc == 0 {
                return false;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
    }
    // No pidfd: poll with waitid(WNOWAIT), which does not reap either.
    loop {
        // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with WNOWAIT leaves it unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid to read after waitid filled the struct (0 when none).
        if rc != 0 || unsafe { info.si_pid() } != 0 {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Run `path` with `stdin` and the parent environment plus `env` (later values win, so
/// the CNI_* variables override inherited ones: libcni's dedupEnv).
///
/// The plugin leads its own process group. When it outlives `timeout`, or writes more
/// than [`MAX_OUTPUT_BYTES`] to stdout or stderr, the whole group (the plugin and what
/// it started) is killed while the plugin is still unreaped, so its pid (the group's id)
/// cannot have been reused; then it is reaped through its `Child` handle.
pub fn run(path: &Path, stdin: &[u8], env: &[(String, String)], timeout: Option<Duration>) -> Result<Output, CniError> {
    let mut tries = 0;
    let mut child = loop {
        tries += 1;
        let mut cmd = std::process::Command::new(path);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Locks held for this attachment: the plugin may exec cnichain again.
        match crate::lock::held_env() {
            Some(v) => cmd.env(crate::lock::HELD_ENV, v),
            None => cmd.env_remove(crate::lock::HELD_ENV),
        };
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < TXTBSY_TRIES => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(CniError::new(
                    INTERNAL,
                    format!("failed to execute plugin {}: {e}", path.display()),
                ))
            }
        }
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut sin = child.stdin.take();
    let data = stdin.to_vec();
    // Writer thread: a plugin that never reads stdin must not block us. Not joined: a
    // process the plugin left behind may hold its stdin.
    std::thread::spawn(move || {
        if let Some(s) = sin.as_mut() {
            let _ = s.write_all(&data);
        }
        drop(sin);
    });
    let (tx, rx) = mpsc::channel();
    let (sout, serr) = (child.stdout.take(), child.stderr.take());
    let tx2 = tx.clone();
    std::thread::spawn(move || read_capped(sout, true, tx));
    std::thread::spawn(move || read_capped(serr, false, tx2));
    let (mut stdout, mut stderr) = (None, None);
    let mut failure = None;
    while stdout.is_none() || stderr.is_none() {
        let got = match deadline {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match got {
            Ok(Stream::Out(b)) => stdout = Some(b),
            Ok(Stream::Err(b)) => stderr = Some(b),
            Ok(Stream::TooLong(is_out)) => {
                failure = Some(CniError::new(
                    INTERNAL,
                    format!(
                        "plugin {} wrote more than {MAX_OUTPUT_BYTES} bytes to {} and was killed",
                        path.display(),
                        if is_out { "stdout" } else { "stderr" }
                    ),
                ));
                break;
            }
            Err(_) => break,
        }
    }
    // Both pipes closed: the plugin has exited or is about to (or closed them early).
    let exited = failure.is_none() && stdout.is_some() && stderr.is_some() && wait_exit(&mut child, deadline);
    if !exited {
        // Still unreaped (nothing has waited for it): its pid is its group's id and ours.
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        return Err(failure.unwrap_or_else(|| {
            CniError::new(
                TRY_AGAIN_LATER,
                format!(
                    "plugin {} timed out after {:?} and was killed",
                    path.display(),
                    timeout.unwrap_or_default()
                ),
            )
        }));
    }
    let status = child
        .wait()
        .map_err(|e| CniError::internal(format!("waiting for plugin {}: {e}", path.display())))?;
    Ok(Output {
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
        success: status.success(),
        status: status.to_string(),
    })
}

/// libcni's pluginErr: the plugin's error object, or a message carrying its stderr.
pub fn plugin_error(out: &Output) -> CniError {
    if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
        if out.stderr.is_empty() {
            return CniError::new(
                INTERNAL,
                format!("netplugin failed with no error message: {}", out.status),
            );
        }
        let text = String::from_utf8_lossy(&out.stderr);
        return CniError::new(
            INTERNAL,
            format!("netplugin failed: {:?}: {}", text.trim_end(), out.status),
        );
    }
    match serde_json::from_slice::<CniError>(&out.stdout) {
        Ok(mut e) => {
            e.cni_version.clear();
            e
        }
        Err(pe) => CniError::new(
            INTERNAL,
            format!(
                "netplugin failed but error parsing its diagnostic message {:?}: {pe}",
                String::from_utf8_lossy(&out.stdout)
            ),
        ),
    }
}

/// Run once with a request; plugin errors become CNI errors, stderr of a successful run
/// goes to ours (libcni copies it to the caller).
pub fn invoke(
    path: &Path,
    stdin: &[u8],
    env: &[(String, String)],
    timeout: Option<Duration>,
) -> Result<Vec<u8>, CniError> {
    let out = run(path, stdin, env, timeout)?;
    if !out.success {
        return Err(plugin_error(&out));
    }
    if !out.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    Ok(out.stdout)
}

/// libcni's fixupResultVersion + create: a result without cniVersion gets the config's;
/// `null` is an empty result.
pub fn parse_result(stdout: &[u8], conf_version: &str) -> Result<CniResult, CniError> {
    let v: Value =
        serde_json::from_slice(stdout).map_err(|e| CniError::decode(format!("failed to unmarshal raw result: {e}")))?;
    let v = match v {
        Value::Null => Value::Object(Default::default()),
        other => other,
    };
    CniResult::from_value(&v, conf_version)
}

impl ExecStage {
    fn call(&self, inv: &Invocation) -> Result<Vec<u8>, CniError> {
        let stdin = serde_json::to_vec(inv.config).map_err(|e| CniError::internal(e.to_string()))?;
        invoke(&self.path, &stdin, &env_for(inv), self.timeout)
    }
}

impl Stage for ExecStage {
    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError> {
        let out = self.call(inv)?;
        parse_result(&out, inv.version)
    }
    fn del(&self, inv: &Invocation) -> Result<(), CniError> {
        self.call(inv).map(|_| ())
    }
    fn check(&self, inv: &Invocation) -> Result<(), CniError> {
        self.call(inv).map(|_| ())
    }
    fn gc(&self, inv: &Invocation) -> Result<(), CniError> {
        self.call(inv).map(|_| ())
    }
    fn status(&self, inv: &Invocation) -> Result<(), CniError> {
        self.call(inv).map(|_| ())
    }
    fn supported_versions(&self) -> Vec<String> {
        version_info(&self.path, self.timeout).unwrap_or_default()
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A plugin's VERSION answer as libcni reads it (GetVersionInfo + PluginDecoder).
pub fn version_info(path: &Path, timeout: Option<Duration>) -> Result<Vec<String>, CniError> {
    let env = cni_env(Command::Version, "", "dummy", "", "dummy", "dummy");
    let stdin = format!("{{\"cniVersion\":\"{}\"}}", crate::spec::version::CURRENT);
    let out = run(path, stdin.as_bytes(), &env, timeout)?;
    if !out.success {
        let e = plugin_error(&out);
        if e.msg == "unknown CNI_COMMAND: VERSION" {
            return Ok(vec!["0.1.0".into()]);
        }
        return Err(e);
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| CniError::decode(format!("decoding version info: {e}")))?;
    let cni_version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    if cni_version.is_empty() {
        return Err(CniError::decode("decoding version info: missing field cniVersion"));
    }
    match v.get("supportedVersions") {
        Some(Value::Array(a)) => Ok(a.iter().filter_map(|x| x.as_str().map(String::from)).collect()),
        None if cni_version == "0.2.0" => Ok(vec!["0.1.0".into(), "0.2.0".into()]),
        _ => Err(CniError::decode(
            "decoding version info: missing field supportedVersions",
        )),
    }
}
