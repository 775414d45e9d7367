//! Writing to stdout and stderr without panicking, and the log set-up: shared by every
//! entry point of the binary.

use std::io::Write;

/// Write `text` to stdout and flush. println! panics when stdout is closed or full;
/// here the caller gets the error (a result printed after ADD committed, say).
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Write `text` to stderr, ignoring a closed stderr (eprintln! would panic).
pub fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Logs go to stderr, filtered by `CNICHAIN_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CNICHAIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .without_time()
        .try_init();
}
