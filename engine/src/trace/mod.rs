//! Trace context and cnichain's own spans (cni#1173). When the runtime passes
//! `TRACEPARENT` and a trace file is named (`CNICHAIN_TRACE_FILE` or `--trace`), cnichain
//! records one span per verb, one per plugin call (in-process or exec'd, with its type
//! and outcome, delegated IPAM calls nested under their main plugin) and an event for
//! each kernel step that took over 1 ms, parented on the incoming traceparent, and
//! appends them to the file as one OTLP/JSON line per verb.
//!
//! Off (no file named), every call here is one relaxed atomic load: nothing is
//! recorded and nothing is slower. The recorder is process-wide because the kernel
//! steps it times are deep in the stages, far from any value the engine passes down.
//!
//! The opentelemetry crates are not used: the SDK exports through a span processor and
//! an exporter, and none of its exporters writes OTLP/JSON to a file (the OTLP one
//! speaks HTTP or gRPC and wants an async runtime); the JSON shape is small and fixed,
//! so it is written here with serde.

pub mod context;
pub mod otlp;

use context::{new_span_id, TraceContext};
use otlp::{AttrValue, EventData, SpanData};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kernel steps shorter than this are not worth an event.
pub const KERNEL_STEP_MIN: Duration = Duration::from_millis(1);

/// The environment variable naming the trace file.
pub const TRACE_FILE_ENV: &str = "CNICHAIN_TRACE_FILE";

static ENABLED: AtomicBool = AtomicBool::new(false);
static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

struct Recorder {
    ctx: TraceContext,
    file: PathBuf,
    /// Spans begun and not yet ended, innermost last.
    open: Vec<SpanData>,
    done: Vec<SpanData>,
}

/// Start recording into `file`, parented on `ctx`. Spans end up in the file when the
/// outermost open span ends.
pub fn start(file: PathBuf, ctx: TraceContext) {
    if let Ok(mut r) = RECORDER.lock() {
        *r = Some(Recorder {
            ctx,
            file,
            open: Vec::new(),
            done: Vec::new(),
        });
        ENABLED.store(true, Ordering::Release);
    }
}

/// Start recording when `file` is named, with the context from the environment
/// variables `TRACEPARENT`/`TRACESTATE` as the runtime passed them.
pub fn start_from_env(file: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>) {
    let Some(file) = file.filter(|f| !f.as_os_str().is_empty()) else {
        return;
    };
    let ctx = TraceContext::from_headers(env("TRACEPARENT").as_deref(), env("TRACESTATE").as_deref());
    start(file, ctx);
}

/// Stop recording (spans still open are dropped).
pub fn stop() {
    ENABLED.store(false, Ordering::Release);
    if let Ok(mut r) = RECORDER.lock() {
        *r = None;
    }
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// An open span; it ends when [`Span::end`] is called or it is dropped (status unset).
pub struct Span {
    id: Option<[u8; 8]>,
}

/// Begin a span as a child of the innermost open span (or of the incoming context).
pub fn span(name: impl FnOnce() -> String) -> Span {
    if !enabled() {
        return Span { id: None };
    }
    let Ok(mut guard) = RECORDER.lock() else {
        return Span { id: None };
    };
    let Some(r) = guard.as_mut() else {
        return Span { id: None };
    };
    let id = new_span_id();
    let parent = r.open.last().map(|s| s.span_id).or(r.ctx.parent_span_id);
    r.open.push(SpanData {
        trace_id: r.ctx.trace_id,
        span_id: id,
        parent_span_id: parent,
        trace_state: r.ctx.trace_state.clone(),
        name: name(),
        start_unix_nano: now_nanos(),
        end_unix_nano: 0,
        attributes: Vec::new(),
        events: Vec::new(),
        status: None,
    });
    Span { id: Some(id) }
}

/// Begin a verb's span: only when recording and no span is open yet, so a verb that
/// runs another (ADD's rollback DEL, the meta-plugin inside plugin mode) stays one span.
pub fn root_span(name: impl FnOnce() -> String) -> Option<Span> {
    if !enabled() {
        return None;
    }
    let open = RECORDER.lock().ok()?.as_ref().map(|r| r.open.len())?;
    (open == 0).then(|| span(name))
}

/// End `span` with the outcome of the call it timed: an error's code and message.
pub fn end_with<T>(span: Span, out: &Result<T, crate::CniError>) {
    match out {
        Ok(_) => span.end(Ok(())),
        Err(e) => {
            span.attr("cni.error.code", i64::from(e.code));
            span.end(Err(e.msg.clone()));
        }
    }
}

impl Span {
    fn with<T>(&self, f: impl FnOnce(&mut SpanData) -> T) -> Option<T> {
        let id = self.id?;
        let mut guard = RECORDER.lock().ok()?;
        let s = guard.as_mut()?.open.iter_mut().rev().find(|s| s.span_id == id)?;
        Some(f(s))
    }

    pub fn attr(&self, key: &str, value: impl Into<AttrValue>) {
        if self.id.is_some() {
            let value = value.into();
            self.with(|s| s.attributes.push((key.to_string(), value)));
        }
    }

    /// End with an outcome: Ok, or the error's message.
    pub fn end(mut self, outcome: Result<(), String>) {
        self.finish(Some(outcome));
    }

    fn finish(&mut self, status: Option<Result<(), String>>) {
        let Some(id) = self.id.take() else { return };
        let Ok(mut guard) = RECORDER.lock() else { return };
        let Some(r) = guard.as_mut() else { return };
        let Some(pos) = r.open.iter().rposition(|s| s.span_id == id) else {
            return;
        };
        let mut s = r.open.remove(pos);
        s.end_unix_nano = now_nanos();
        s.status = status;
        r.done.push(s);
        if r.open.is_empty() {
            let mut spans = std::mem::take(&mut r.done);
            spans.sort_by_key(|s| s.start_unix_nano);
            let file = r.file.clone();
            drop(guard);
            if let Err(e) = append_line(&file, &otlp::encode(&spans)) {
                tracing::warn!("trace file {}: {e}", file.display());
            }
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// Record a kernel step that began at `started` as an event on the innermost open span,
/// when it took longer than [`KERNEL_STEP_MIN`].
pub fn kernel_step(started: Instant, what: impl FnOnce() -> String) {
    if !enabled() {
        return;
    }
    let took = started.elapsed();
    if took < KERNEL_STEP_MIN {
        return;
    }
    let Ok(mut guard) = RECORDER.lock() else { return };
    let Some(s) = guard.as_mut().and_then(|r| r.open.last_mut()) else {
        return;
    };
    s.events.push(EventData {
        time_unix_nano: now_nanos(),
        name: what(),
        attributes: vec![("duration_ms".into(), AttrValue::Int(took.as_millis() as i64))],
    });
}

/// Append one line. O_APPEND keeps concurrent cnichain processes' lines whole;
/// O_NOFOLLOW refuses a symlink planted at the path.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    f.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test for the process-wide recorder, so no other test in this binary races it.
    #[test]
    fn spans_nest_and_land_in_the_file_in_order() {
        let dir = std::env::temp_dir().join(format!("cnichain-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("trace.jsonl");
        let env = |k: &str| match k {
            "TRACEPARENT" => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()),
            _ => None,
        };
        start_from_env(Some(file.clone()), &env);
        let verb = span(|| "cnichain ADD".into());
        let a = span(|| "ADD bridge".into());
        a.attr("cni.plugin.type", "bridge");
        let ipam = span(|| "ADD host-local".into());
        kernel_step(Instant::now() - Duration::from_millis(5), || "slow step".into());
        kernel_step(Instant::now(), || "fast step".into());
        ipam.end(Ok(()));
        a.end(Ok(()));
        let b = span(|| "ADD portmap".into());
        b.end(Err("boom".into()));
        verb.end(Err("boom".into()));
        stop();
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["cnichain ADD", "ADD bridge", "ADD host-local", "ADD portmap"]);
        assert!(spans.iter().all(|s| s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(spans[0]["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(spans[1]["parentSpanId"], spans[0]["spanId"]);
        assert_eq!(spans[2]["parentSpanId"], spans[1]["spanId"]);
        assert_eq!(spans[3]["parentSpanId"], spans[0]["spanId"]);
        assert_eq!(spans[2]["events"].as_array().unwrap().len(), 1);
        assert_eq!(spans[2]["events"][0]["name"], "slow step");
        assert_eq!(spans[3]["status"]["code"], 2);
        assert_eq!(spans[3]["status"]["message"], "boom");
        assert_eq!(spans[1]["status"]["code"], 1);
        assert_eq!(spans[1]["attributes"][0]["value"]["stringValue"], "bridge");
        // Off again: nothing more is written.
        let s = span(|| "x".into());
        assert!(s.id.is_none());
    }
}
