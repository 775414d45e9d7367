//! One plugin execution, as a runtime makes it: the program under `nsenter --net=` with
//! exactly the given environment and stdin, a deadline, and everything that came back.

use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One plugin execution: the exact request and what came back.
#[derive(Debug, Clone)]
pub struct Call {
    pub what: String,
    pub program: String,
    pub netns: String,
    pub env: Vec<(String, String)>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    /// Exit status; None when killed (timeout) or not started (`note` says why).
    pub status: Option<i32>,
    pub note: String,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
    /// stdout as exactly one JSON value (surrounding whitespace allowed).
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout).map_err(|e| format!("stdout is not one JSON value: {e}"))
    }
}

/// Run `program` in the netns file `netns` with exactly `env` (nothing inherited) and `stdin`.
pub fn exec(
    what: &str,
    program: &std::path::Path,
    netns: &str,
    env: Vec<(String, String)>,
    stdin: &[u8],
    timeout: Duration,
) -> Call {
    let mut call = Call {
        what: what.into(),
        program: program.display().to_string(),
        netns: netns.into(),
        env,
        stdin: String::from_utf8_lossy(stdin).into_owned(),
        stdout: String::new(),
        stderr: String::new(),
        status: None,
        note: String::new(),
    };
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={netns}"))
        .arg("--")
        .arg(program)
        .env_clear()
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            call.note = format!("could not start: {e}");
            return call;
        }
    };
    let data = stdin.to_vec();
    let mut sin = child.stdin.take();
    std::thread::spawn(move || {
        if let Some(s) = sin.as_mut() {
            let _ = s.write_all(&data);
        }
    });
    let reader = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(p) = p {
                let _ = p.take(4 << 20).read_to_end(&mut b);
            }
            b
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                call.note = format!("killed after {timeout:?} without exiting");
                break None;
            }
        }
    };
    // A child the plugin left behind may hold the pipes: do not wait for them forever.
    if status.is_some() {
        call.stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
        call.stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    }
    call.status = status.and_then(|s| s.code());
    if let Some(s) = status.filter(|s| s.code().is_none()) {
        call.note = format!("terminated: {s}");
    }
    call
}

/// stdout as JSON, else the JSON object starting at its first `{`.
pub fn lenient_json(stdout: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(stdout) {
        return v.is_object().then_some(v);
    }
    let i = stdout.find('{')?;
    let mut de = serde_json::Deserializer::from_str(&stdout[i..]).into_iter::<Value>();
    de.next()?.ok().filter(Value::is_object)
}
