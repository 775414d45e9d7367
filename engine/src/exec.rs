//! The exec fallback: run a plugin binary per the spec, the way libcni's invoke package
//! does (environment, stdin, result fix-up, error parsing), plus a per-plugin timeout and
//! a working "text file busy" retry (a new process each try).

use crate::spec::error::{CniError, INTERNAL, TRY_AGAIN_LATER};
use crate::spec::result::CniResult;
use crate::stage::{Command, Invocation, Stage};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

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
    // An exec'd IPAM delegate learns how deep it is, so a delegation cycle through
    // exec'd plugins ends (see stage::MAX_DELEGATION_DEPTH).
    let depth = crate::stage::delegation_depth();
    if depth > 0 {
        env.push((crate::stage::DEPTH_ENV.into(), depth.to_string()));
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

/// Run `path` with `stdin` and the parent environment plus `env` (later values win, so
/// the CNI_* variables override inherited ones: libcni's dedupEnv).
pub fn run(path: &Path, stdin: &[u8], env: &[(String, String)], timeout: Option<Duration>) -> Result<Output, CniError> {
    let mut tries = 0;
    let mut child = loop {
        tries += 1;
        let mut cmd = std::process::Command::new(path);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
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
    let mut sin = child.stdin.take();
    let data = stdin.to_vec();
    // Writer thread: a plugin that never reads stdin must not block us.
    let writer = std::thread::spawn(move || {
        if let Some(s) = sin.as_mut() {
            let _ = s.write_all(&data);
        }
        drop(sin);
    });
    let mut sout = child.stdout.take();
    let mut serr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = serr.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = sout.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        let st = child.wait();
        let _ = tx.send(());
        (b, st)
    });
    let mut timed_out = false;
    if let Some(t) = timeout {
        if rx.recv_timeout(t).is_err() {
            timed_out = true;
            // The child is not reaped until the waiter's wait() returns, so the pid is
            // still ours to kill.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    if timed_out {
        // Give the reaper a moment; a grandchild holding the pipes open must not hang
        // us, so the threads are left behind rather than joined if it does not finish.
        let _ = rx.recv_timeout(Duration::from_secs(2));
        return Err(CniError::new(
            TRY_AGAIN_LATER,
            format!(
                "plugin {} timed out after {:?} and was killed",
                path.display(),
                timeout.unwrap_or_default()
            ),
        ));
    }
    let (stdout, status) = waiter
        .join()
        .map_err(|_| CniError::internal("plugin waiter thread panicked"))?;
    let stderr = err_reader.join().unwrap_or_default();
    let _ = writer.join();
    let status = status.map_err(|e| CniError::internal(format!("waiting for plugin {}: {e}", path.display())))?;
    Ok(Output {
        stdout,
        stderr,
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
