//! `cnichain validate`: argument handling and output around the engine's validator.

use crate::cli::ValidateArgs;
use cnichain_engine::stage::Registry;
use cnichain_engine::validate::{self, diag, Options};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// A plugin's VERSION answer should be instant; a hung binary must not stall CI.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the validator; returns the exit status (0 clean, 1 problems, 2 usage error).
pub fn run(a: &ValidateArgs, registry: &Registry, conf_dir: &Path, plugin_timeout: Option<Duration>) -> i32 {
    if a.list_codes {
        // A closed stdout is an error, not a panic.
        return match crate::cli::write_stdout(&diag::code_table()) {
            Ok(()) => 0,
            Err(e) => {
                crate::cli::write_stderr(&format!("cnichain validate: writing to stdout: {e}\n"));
                2
            }
        };
    }
    let paths = if a.paths.is_empty() {
        vec![conf_dir.to_path_buf()]
    } else {
        a.paths.clone()
    };
    let opts = Options {
        registry,
        resolve: true,
        exec_versions: !a.no_exec,
        version_timeout: Some(plugin_timeout.map_or(VERSION_TIMEOUT, |t| t.min(VERSION_TIMEOUT))),
    };
    let out = match validate::run(&paths, opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cnichain validate: {e}");
            return 2;
        }
    };
    let summary = out.summary();
    let report = if a.format == "json" {
        let v = diag::render_json(&out.diagnostics, summary);
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        diag::render_human(&out.diagnostics)
    };
    // One stream for the whole report, summary included: stdout, or stderr when stdout
    // carries the Graphviz text.
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let report_to: &mut dyn Write = if a.graph.is_some() {
        for (file, dot) in &out.graphs {
            let _ = writeln!(stdout, "// {file}");
            let _ = write!(stdout, "{dot}");
        }
        &mut stderr
    } else {
        &mut stdout
    };
    let _ = write!(report_to, "{report}");
    if a.format != "json" {
        if !report.is_empty() {
            let _ = writeln!(report_to);
        }
        let _ = writeln!(report_to, "{}", summary.line());
    }
    let _ = report_to.flush();
    let _ = stdout.flush();
    if summary.errors > 0 || (a.strict && summary.warnings > 0) {
        1
    } else {
        0
    }
}
