//! What a stage is: the verbs, the [`Invocation`] one call receives, and the [`Stage`]
//! trait with its verb dispatch. Depends on nothing else in the engine but the wire
//! types and [`Settings`], so the exec fallback and the registry can both build on it.

use crate::settings::Settings;
use crate::spec::args::RuntimeConf;
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// A CNI verb (CNI_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    /// The CNI_COMMAND spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
    /// A CNI_COMMAND value; None for anything else.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
    /// libcni's word for a verb in wrapped errors ("plugin ... failed (add)").
    pub fn verb(self) -> &'static str {
        match self {
            Command::Add => "add",
            Command::Del => "delete",
            Command::Check => "check",
            Command::Gc => "gc",
            Command::Status => "status",
            Command::Version => "version",
        }
    }
}

/// How a stage reaches other plugins (its IPAM): implemented by the registry
/// (`stage::registry`). A trait so that this module, and the exec
/// fallback built on it, need not know the registry.
pub trait Resolve: Send + Sync {
    /// The stage for a plugin type: in-process unless forced, else exec'd from CNI_PATH.
    fn resolve(&self, type_name: &str) -> Result<Arc<dyn Stage>, CniError>;
    /// Whether `type_name` would run in-process under the current exec policy.
    fn is_in_process(&self, type_name: &str) -> bool;
    /// The settings the entry point built.
    fn settings(&self) -> &Settings;
}

/// Everything one plugin invocation receives: the derived request config (exactly the
/// JSON an exec'd plugin would read on stdin) and the runtime arguments (its env).
pub struct Invocation<'a> {
    pub command: Command,
    pub config: &'a Map<String, Value>,
    /// Already converted to `version`.
    pub prev_result: Option<&'a CniResult>,
    pub rt: &'a RuntimeConf,
    /// The selected spec version.
    pub version: &'a str,
    pub cni_path: &'a [PathBuf],
    /// For delegation: a main stage reaches its IPAM through the registry (in-process
    /// when the IPAM type has a stage, else exec'd from CNI_PATH).
    pub registry: &'a dyn Resolve,
}

impl Invocation<'_> {
    /// The entry point's settings (state dir, timeouts, ...).
    pub fn settings(&self) -> &Settings {
        self.registry.settings()
    }

    /// The same call with another verb.
    pub fn with_command(&self, command: Command) -> Invocation<'_> {
        Invocation {
            command,
            config: self.config,
            prev_result: self.prev_result,
            rt: self.rt,
            version: self.version,
            cni_path: self.cni_path,
            registry: self.registry,
        }
    }
}

/// One link of a chain. Each stage shows the CNI triad; gc and status default to
/// success for stages that keep no state.
pub trait Stage: Send + Sync {
    fn add(&self, inv: &Invocation) -> Result<CniResult, CniError>;
    fn del(&self, inv: &Invocation) -> Result<(), CniError>;
    fn check(&self, inv: &Invocation) -> Result<(), CniError>;
    fn gc(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
    /// ADD's checks that change nothing, run for every in-process stage of a chain
    /// before its first stage's ADD: the config, capability arguments and CNI_ARGS as
    /// `add` reads them first (and the stage's in-process IPAM's), so that a bad value
    /// in the last plugin refuses the ADD before anything is created. Checks that need
    /// prevResult are left to `add`. Exec'd plugins cannot be asked: Ok.
    fn preflight(&self, _inv: &Invocation) -> Result<(), CniError> {
        Ok(())
    }
    /// The config keys this stage reads, which its loader and `cnichain validate` share;
    /// None for a stage whose keys are not declared (an exec'd plugin).
    fn schema(&self) -> Option<&'static crate::validate::schema::Schema> {
        None
    }
    /// `cnichain reconcile`: re-create what this stage's records (the cached config,
    /// runtimeConfig and result in `inv`) say a live attachment has and the kernel no
    /// longer has; one line per thing restored (with `dry_run`, what would be). Only
    /// called for attachments cnichain made. Stages that keep no kernel state: nothing.
    fn reconcile(&self, _inv: &Invocation, _dry_run: bool) -> Result<Vec<String>, CniError> {
        Ok(Vec::new())
    }
    /// Spec versions this stage accepts (VERSION, validation).
    fn supported_versions(&self) -> Vec<String> {
        crate::spec::version::SUPPORTED.iter().map(|s| s.to_string()).collect()
    }
    /// "in-process" or the exec'd binary's path, for --timings and errors.
    fn describe(&self) -> String;

    /// Run `inv.command`: ADD's result, None for the other verbs (VERSION does nothing
    /// here; the caller answers it).
    fn run(&self, inv: &Invocation) -> Result<Option<CniResult>, CniError> {
        match inv.command {
            Command::Add => self.add(inv).map(Some),
            Command::Del => self.del(inv).map(|_| None),
            Command::Check => self.check(inv).map(|_| None),
            Command::Gc => self.gc(inv).map(|_| None),
            Command::Status => self.status(inv).map(|_| None),
            Command::Version => Ok(None),
        }
    }
}
