//! `cnichain validate`: argument handling and output around the engine's validator.

use crate::cli::ValidateArgs;
use cnichain_engine::stage::Registry;
use cnichain_engine::validate::{self, diag, Options};
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
            crate::cli::write_stderr(&format!("cnichain validate: {e}\n"));
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
    let mut text = report;
    if a.format != "json" {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&summary.line());
        text.push('\n');
    }
    // A report nobody received is not a clean run: a closed stdout is exit 2.
    let written = if a.graph.is_some() {
        let dots: String = out
            .graphs
            .iter()
            .map(|(file, dot)| format!("// {file}\n{dot}"))
            .collect();
        crate::cli::write_stderr(&text);
        crate::cli::write_stdout(&dots)
    } else {
        crate::cli::write_stdout(&text)
    };
    if let Err(e) = written {
        crate::cli::write_stderr(&format!("cnichain validate: writing to stdout: {e}\n"));
        return 2;
    }
    if summary.errors > 0 || (a.strict && summary.warnings > 0) {
        1
    } else {
        0
    }
}
