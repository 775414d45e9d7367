//! The cnichain binary: the CLI, and (under the name `cnitool`) a cnitool stand-in.
//! No protocol logic lives here; it parses arguments and calls the engine.

mod cli;
mod cnitool;
mod runtime;

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = if name == "cnitool" {
        cnitool::main()
    } else {
        cli::main()
    };
    std::process::exit(code);
}
