//! The cnichain binary: the CLI, and (under the name `cnitool`) a cnitool stand-in.
//! No protocol logic lives here; it parses arguments and calls the engine.

mod cli;
mod cnitool;
mod inspect;
mod install;
mod output;
mod plugin;
mod reconcile_cmd;
mod runtime;
mod validate_cmd;

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let command_set = std::env::var_os("CNI_COMMAND").is_some_and(|c| !c.is_empty());
    let stage = install::STAGE_NAMES.contains(&name.as_str());
    let code = if name == "cnitool" {
        cnitool::main()
    } else if stage && command_set {
        plugin::main(Some(&name))
    } else if stage {
        plugin::about(&name)
    } else if command_set {
        // Run by a runtime as `type: cnichain`: the meta-plugin.
        plugin::main(None)
    } else {
        cli::main()
    };
    std::process::exit(code);
}
