//! W3C trace context (`traceparent`, `tracestate`): parsing the runtime's incoming
//! context and making new IDs. cni#1173 has runtimes pass these to plugins in the
//! environment; cnichain parents its own spans on them and leaves the variables as they
//! are for the plugins it execs.

/// The incoming context: the trace to join and the span to parent ours on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The caller's span; None when we start the trace ourselves.
    pub parent_span_id: Option<[u8; 8]>,
    pub flags: u8,
    /// `tracestate`, carried unchanged into each span's `traceState`.
    pub trace_state: Option<String>,
}

impl TraceContext {
    /// The context from `TRACEPARENT`/`TRACESTATE` values. A malformed traceparent is
    /// ignored, as the W3C recommendation says (a new trace is started instead): a
    /// tracing header must never fail a pod's network setup.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> TraceContext {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                parent_span_id: Some(parent),
                flags,
                trace_state: tracestate.map(str::trim).filter(|s| !s.is_empty()).map(String::from),
            },
            // tracestate belongs to the traceparent it came with: dropped with it.
            None => TraceContext {
                trace_id: new_trace_id(),
                parent_span_id: None,
                flags: 1,
                trace_state: None,
            },
        }
    }
}

/// `version-traceid-parentid-flags`, lower-case hex. Version ff is invalid; a higher
/// version than 00 is read by its first four fields (what W3C asks of a version-00
/// parser); all-zero IDs are invalid.
fn parse_traceparent(s: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let s = s.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let version = hex_array::<1>(version)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    if version == 0 && s.len() != 55 {
        return None;
    }
    let trace_id = hex_array::<16>(trace)?;
    let parent_id = hex_array::<8>(parent)?;
    let flags = hex_array::<1>(flags)?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    while id == [0; 16] {
        fill_random(&mut id);
    }
    id
}

pub fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        fill_random(&mut id);
    }
    id
}

/// getrandom(2); should it ever fail, the clock and a counter still give IDs that are
/// unique within this process, which is all a span ID needs here.
fn fill_random(buf: &mut [u8]) {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mix = nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(17);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (mix.rotate_left((i as u32 * 8) % 64) & 0xff) as u8 ^ (i as u8).wrapping_mul(151);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_traceparent() {
        let c = TraceContext::from_headers(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("congo=t61rcWkgMzE"),
        );
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.parent_span_id.map(|p| hex(&p)).as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(c.flags, 1);
        assert_eq!(c.trace_state.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let c = TraceContext::from_headers(Some(bad), Some("a=b"));
            assert_eq!(c.parent_span_id, None, "{bad:?}");
            assert_eq!(c.trace_state, None, "{bad:?}");
            assert_ne!(c.trace_id, [0; 16]);
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let c = TraceContext::from_headers(
            Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"),
            None,
        );
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn new_ids_differ() {
        assert_ne!(new_span_id(), new_span_id());
        assert_ne!(new_trace_id(), new_trace_id());
    }
}
