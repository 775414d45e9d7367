//! `cnichain validate`: argument handling and output around the engine's validator.

use crate::output::{write_stderr, write_stdout};
use clap::Args;
use cnichain_engine::stage::Registry;
use cnichain_engine::validate::{self, diag, Options};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A plugin's VERSION answer should be instant; a hung binary must not stall CI.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// `cnichain validate [FILE|DIR]...`; exit 0 clean, 1 problems found, 2 usage error.
#[derive(Args)]
pub struct ValidateArgs {
    /// Conflist files (.conflist, .conf, .json) or directories [default: --conf-dir]
    pub paths: Vec<PathBuf>,
    /// Output: compiler-style text, or JSON for machines
    #[arg(long, value_parser = ["human", "json"], default_value = "human")]
    pub format: String,
    /// Print each chain's dataflow graph (Graphviz DOT) on stdout; diagnostics go to stderr
    #[arg(long, value_name = "FORMAT", value_parser = ["dot"])]
    pub graph: Option<String>,
    /// Fail on warnings too
    #[arg(long)]
    pub strict: bool,
    /// Do not run external plugins' VERSION command (types are still looked up in CNI_PATH)
    #[arg(long)]
    pub no_exec: bool,
    /// Print the diagnostic codes and exit
    #[arg(long)]
    pub list_codes: bool,
}

/// Runs the validator; returns the exit status (0 clean, 1 problems, 2 usage error).
pub fn run(a: &ValidateArgs, registry: &Registry, conf_dir: &Path, plugin_timeout: Option<Duration>) -> i32 {
    if a.list_codes {
        // A closed stdout is an error, not a panic.
        return match write_stdout(&diag::code_table()) {
            Ok(()) => 0,
            Err(e) => {
                write_stderr(&format!("cnichain validate: writing to stdout: {e}\n"));
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
            write_stderr(&format!("cnichain validate: {e}\n"));
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
        write_stderr(&text);
        write_stdout(&dots)
    } else {
        write_stdout(&text)
    };
    if let Err(e) = written {
        write_stderr(&format!("cnichain validate: writing to stdout: {e}\n"));
        return 2;
    }
    if summary.errors > 0 || (a.strict && summary.warnings > 0) {
        1
    } else {
        0
    }
}
