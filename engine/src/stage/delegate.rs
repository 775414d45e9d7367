//! IPAM delegation from inside a stage (libcni's DelegateAdd/Del/Check/GC/Status), with
//! the refusals that keep an `ipam.type` from recursing without end.

use super::contract::{Command, Invocation};
use crate::settings::MAX_DELEGATION_DEPTH;
use crate::spec::error::{CniError, INVALID_CONFIG};
use crate::spec::result::CniResult;
use serde_json::Value;

impl Invocation<'_> {
    /// Delegate `command` to the plugin `type_name` (an IPAM) with delegate semantics:
    /// the same request config and runtime arguments, only the command differs (libcni
    /// DelegateAdd/Del/Check/GC/Status). ADD returns the delegate's result.
    ///
    /// A delegate that cannot be an IPAM (a main or meta stage, the delegating plugin's
    /// own type) or a delegation nested too deep (a cycle through exec'd plugins) is
    /// refused on ADD and CHECK (code 7) and skipped on DEL, GC and STATUS, so such an
    /// attachment can still be deleted: the reference recurses until it runs out of
    /// stack or processes.
    pub fn delegate(&self, type_name: &str, command: Command) -> Result<Option<CniResult>, CniError> {
        let own = self.config.get("type").and_then(Value::as_str).unwrap_or_default();
        let refusal = check_ipam_type(own, type_name)
            .err()
            .or_else(|| self.too_deep(type_name).err());
        if let Some(e) = refusal {
            return match command {
                Command::Add | Command::Check => Err(e),
                _ => {
                    tracing::warn!("skipping the IPAM {}: {e}", command.as_str());
                    Ok(None)
                }
            };
        }
        let stage = self.registry.resolve(type_name)?;
        let _depth = DepthGuard::enter();
        let span = crate::trace::span(|| format!("{} {type_name}", command.as_str()));
        if crate::trace::enabled() {
            span.attr("cni.command", command.as_str());
            span.attr("cni.plugin.type", type_name);
            span.attr("cni.plugin.how", stage.describe());
            span.attr("cni.plugin.exec", !self.registry.is_in_process(type_name));
            span.attr("cni.delegated_by", own);
        }
        let out = stage.run(&self.with_command(command));
        crate::trace::end_with(span, &out);
        out
    }

    /// The preflight of the IPAM `type_name` this (main) stage delegates to: the
    /// refusals of [`Invocation::delegate`] on ADD, the plugin's lookup (an exec'd IPAM
    /// must exist in CNI_PATH), and an in-process IPAM's own preflight.
    pub fn preflight_ipam(&self, type_name: &str) -> Result<(), CniError> {
        let own = self.config.get("type").and_then(Value::as_str).unwrap_or_default();
        check_ipam_type(own, type_name)?;
        self.too_deep(type_name)?;
        let stage = self.registry.resolve(type_name)?;
        let _depth = DepthGuard::enter();
        stage.preflight(&self.with_command(Command::Add))
    }

    fn too_deep(&self, type_name: &str) -> Result<(), CniError> {
        if delegation_depth(self.settings().inherited_depth) >= MAX_DELEGATION_DEPTH {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!(
                    "ipam.type {type_name:?}: IPAM delegation nested more than {MAX_DELEGATION_DEPTH} deep (a cycle)"
                ),
            ));
        }
        Ok(())
    }
}

/// In-process stages that are not IPAM plugins: an `ipam.type` naming one would run it
/// as its own IPAM (the reference execs it with the same config: bridge and ptp recurse
/// without end, loopback "allocates" 127.0.0.1/8 for the pod's interface).
pub const NOT_IPAM: &[&str] = &[
    "bridge",
    "ptp",
    "loopback",
    "tuning",
    "portmap",
    "bandwidth",
    "cnichain",
];

/// Refuse an `ipam.type` that cannot be an IPAM plugin: a main or meta stage, or the
/// delegating plugin's own type (code 7, naming the field).
pub fn check_ipam_type(plugin_type: &str, ipam_type: &str) -> Result<(), CniError> {
    // An IPAM plugin called directly names itself (`{"type":"host-local","ipam":{"type":"host-local"}}`).
    let self_ipam = ["host-local", "static", "dhcp"].contains(&plugin_type);
    if NOT_IPAM.contains(&ipam_type) || (!plugin_type.is_empty() && ipam_type == plugin_type && !self_ipam) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("ipam.type {ipam_type:?} is not an IPAM plugin (it would delegate to itself or run a main plugin as IPAM)"),
        ));
    }
    Ok(())
}

thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// This thread's delegation depth plus `inherited`, the depth a delegating parent
/// process passed down ([`Settings::inherited_depth`](crate::settings::Settings)).
pub fn delegation_depth(inherited: u32) -> u32 {
    inherited.min(MAX_DELEGATION_DEPTH) + DEPTH.with(|d| d.get())
}

struct DepthGuard;

impl DepthGuard {
    fn enter() -> DepthGuard {
        DEPTH.with(|d| d.set(d.get() + 1));
        DepthGuard
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}
