//! Chain-level checks (`--conflist`): what holds between the plugins of a list, which no
//! single plugin's rule sees; and between two pods' attachments.

use super::chain;
use super::checks_add::prev_lost;
use super::checks_del::left_behind;
use super::checks_env::expect_error;
use super::runner::{exec, fail, lenient_json, require, Att, Ctx, Step, Verdict, IFNAME};
use super::sandbox;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

fn list_only<'a>(c: &Ctx<'a>) -> Result<&'a chain::Chain, Verdict> {
    c.o.chain
        .as_ref()
        .ok_or_else(|| Verdict::Na("a chain-level rule (--conflist)".into()))
}

/// libcni's ValidateNetworkList: each plugin's VERSION claims the list's cniVersion.
pub fn versions_claimed(c: &mut Ctx) -> Step {
    let ch = list_only(c)?;
    let dirs = c.plugin_dirs();
    for t in ch.types() {
        let Some(bin) = ch.binary(&t, &dirs) else {
            return Err(fail(
                "every plugin of the list is in CNI_PATH",
                format!("no {t:?}"),
                None,
            ));
        };
        let env = vec![
            ("CNI_COMMAND".to_string(), "VERSION".to_string()),
            ("PATH".to_string(), "/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ];
        let stdin = json!({ "cniVersion": c.v }).to_string();
        let call = exec(
            &format!("VERSION ({t})"),
            &bin,
            &c.sb.host_path(),
            env,
            stdin.as_bytes(),
            c.o.timeout,
        );
        let claims: Vec<String> = call
            .json()
            .ok()
            .and_then(|v| v["supportedVersions"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        require(
            call.ok() && claims.contains(&c.v),
            &format!(
                "plugin {t:?} claims the list's cniVersion {} in its VERSION answer",
                c.v
            ),
            || format!("supportedVersions {claims:?}"),
            Some(&call),
        )?;
    }
    Ok(())
}

/// Each plugin after the first keeps `part` of the prevResult it was given.
fn stages_keep(c: &mut Ctx, part: &str) -> Step {
    list_only(c)?;
    let att = c.attach()?;
    let mut seen = false;
    for call in att.stages.iter().skip(1) {
        let stdin: Value = serde_json::from_str(&call.stdin).unwrap_or_default();
        let prev = &stdin["prevResult"];
        let Some(out) = lenient_json(&call.stdout) else {
            continue;
        };
        let has = match part {
            "dns" => prev["dns"]
                .as_object()
                .is_some_and(|d| d.values().any(|v| !v.is_null())),
            _ => prev[part].as_array().is_some_and(|a| !a.is_empty()),
        };
        seen |= has;
        let lost = prev_lost(prev, &out, part);
        require(
            lost.is_empty(),
            &format!(
                "each plugin of the list passes its prevResult's {part} on (§2 ADD: \"passed through or modified\")"
            ),
            || format!("lost: {}", lost.join(", ")),
            Some(call),
        )?;
    }
    if !seen {
        return Err(Verdict::Na(format!(
            "no plugin after the first got a prevResult with {part}"
        )));
    }
    Ok(())
}

pub fn stages_keep_interfaces(c: &mut Ctx) -> Step {
    stages_keep(c, "interfaces")
}
pub fn stages_keep_ips(c: &mut Ctx) -> Step {
    stages_keep(c, "ips")
}
pub fn stages_keep_routes(c: &mut Ctx) -> Step {
    stages_keep(c, "routes")
}
pub fn stages_keep_dns(c: &mut Ctx) -> Step {
    stages_keep(c, "dns")
}

/// A harness plugin that fails ADD and accepts everything else.
const FAILING: &str = r#"#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"code":11,"msg":"injected failure: the conformance harness fails the last plugin of the list"}\n'
  exit 1
fi
exit 0
"#;

/// ADD fails in the last plugin, then the runtime DELs the list with no cached result
/// (libcni caches none for a failed ADD): nothing of the earlier plugins may stay.
pub fn failed_add_cleaned(c: &mut Ctx) -> Step {
    list_only(c)?;
    let bin = c.sb.dir.join("bin").join("cncf-fail");
    std::fs::write(&bin, FAILING)
        .and_then(|_| std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| fail("the harness can write its failing plugin", e.to_string(), None))?;
    let before = c.baseline()?;
    let cid = c.new_cid();
    let refused = c.attach_as(&cid, IFNAME, |l| {
        if let Some(ps) = l["plugins"].as_array_mut() {
            ps.push(json!({ "type": "cncf-fail" }));
        }
    });
    match refused {
        Ok(_) => {
            return Err(fail(
                "the list's ADD fails when its last plugin fails (harness prerequisite)",
                "it succeeded",
                None,
            ))
        }
        Err(Verdict::Fail { .. }) => {}
        Err(other) => return Err(other),
    }
    // The partial result the earlier plugins gave: the names their state may carry.
    let partial = c
        .stages
        .borrow()
        .iter()
        .filter(|s| s.ok())
        .filter_map(|s| lenient_json(&s.stdout))
        .next_back()
        .unwrap_or_default();
    let Some(att) = c.live_att(&cid, IFNAME) else {
        return Err(fail("the harness keeps the failed attachment", "it did not", None));
    };
    // att.result is null: the DEL gets no prevResult.
    let call = c.teardown(&att);
    require(
        call.ok(),
        "DEL of a list whose ADD failed in a later plugin succeeds (no prevResult: none was cached)",
        || format!("exit status {:?} {}", call.status, call.note),
        Some(&call),
    )?;
    let mut named = att;
    named.result = partial;
    let left = left_behind(c, &before, &named, &["links", "addrs", "data", "fw", "shared"])?;
    require(
        left.is_empty(),
        "DEL after an ADD that failed in a later plugin removes what the earlier plugins made",
        || format!("left: {}", left.join("; ")),
        Some(&call),
    )
}

/// Every plugin refuses a config of a version it cannot know with the spec's error.
pub fn each_refuses_version(c: &mut Ctx) -> Step {
    list_only(c)?;
    let att = c.attach()?;
    let dirs = c.plugin_dirs();
    let ch = list_only(c)?;
    for (i, stage) in att.stages.iter().enumerate() {
        let mut conf: Value = serde_json::from_str(&stage.stdin).unwrap_or_default();
        conf["cniVersion"] = json!("99.99.99");
        let t = conf["type"].as_str().unwrap_or_default().to_string();
        let Some(bin) = ch.binary(&t, &dirs) else {
            continue;
        };
        let cid = c.new_cid();
        let env = c.env("ADD", &cid, &format!("cncf{i}"));
        let call = exec(
            &format!("ADD (plugin {}, {t}) with cniVersion 99.99.99", i + 1),
            &bin,
            &c.sb.host_path(),
            env,
            conf.to_string().as_bytes(),
            c.o.timeout,
        );
        expect_error(
            &call,
            &format!("plugin {t:?} of the list, given cniVersion \"99.99.99\","),
            Some(1),
        )?;
    }
    Ok(())
}

/// What the node shows of attachment `b`: its interfaces where the result puts them, its
/// addresses, the firewall rules and sandbox files that name it.
fn footprint(c: &Ctx, b: &Att) -> Result<Vec<String>, Verdict> {
    let err = |e: String| fail("the harness can read the sandbox's kernel state", e, None);
    let needles = Ctx::needles(b);
    let ips: Vec<&String> = needles.iter().skip(1).collect();
    let names: Vec<String> = b.result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .chain([b.ifname.clone()])
        .collect();
    let mut out = Vec::new();
    for (ns, label) in [(c.sb.host_path(), "host"), (b.netns.clone(), "pod")] {
        for l in sandbox::links(&ns).map_err(err)? {
            if names.contains(&l.name) {
                out.push(format!("{label} link {}", l.name));
            }
        }
        for (dev, a) in sandbox::addrs(&ns).map_err(err)? {
            if ips.iter().any(|ip| a.split('/').next() == Some(ip.as_str())) {
                out.push(format!("{label} address {a} on {dev}"));
            }
        }
    }
    // Rules and set elements, one each: an nft set prints several elements on a line,
    // which changes when another attachment's element goes.
    for line in sandbox::firewall(&c.sb.host_path()) {
        let body = line.split_once(": ").map_or(line.as_str(), |(_tool, b)| b);
        out.extend(
            body.split([',', '{', '}'])
                .map(str::trim)
                .filter(|a| needles.iter().any(|n| a.contains(n.as_str())))
                .map(|a| format!("firewall: {a}")),
        );
    }
    for p in sandbox::files(&c.sb.dir).into_keys() {
        if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(b.cid.as_str())) {
            out.push(format!("file {}", p.display()));
        }
    }
    Ok(out)
}

/// Two pods' attachments (of the plugin, or of the list); DEL of one leaves the other
/// whole. Not judged by the other's CHECK: the reference bridge without isGateway lets
/// the bridge's MAC follow its lowest port, so a pod's cached bridge MAC goes stale when
/// another pod leaves, in about half the runs (README, findings).
pub fn del_leaves_other(c: &mut Ctx) -> Step {
    let a = c.attach()?;
    // Another pod: its own host port, as a runtime would give it.
    let b = c.attach_other_pod(|l| {
        if let Some(m) = l.pointer_mut("/runtimeConfig/portMappings/0") {
            m["hostPort"] = json!(18081);
        }
    })?;
    let before = footprint(c, &b)?;
    if before.is_empty() {
        return Err(Verdict::Na(
            "the second attachment shows nothing on the node to compare".into(),
        ));
    }
    let del = c.teardown(&a);
    if !del.ok() {
        return Err(Verdict::Na("DEL failed (see DEL-01)".into()));
    }
    let after = footprint(c, &b)?;
    let gone: Vec<&String> = before.iter().filter(|x| !after.contains(x)).collect();
    require(
        gone.is_empty(),
        "DEL of one attachment leaves what another pod's attachment has (interfaces, addresses, rules, files)",
        || format!("gone with the other's DEL: {gone:?}"),
        Some(&del),
    )
}
