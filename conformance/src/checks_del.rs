//! CHECK, DEL (idempotent, best-effort, leaves nothing), GC and STATUS.

use super::checks_env::expect_error;
use super::runner::{added, fail, lenient_json, require, Att, Call, Ctx, Snap, Step, Verdict, IFNAME};
use super::sandbox;
use super::Kind;
use serde_json::Value;

fn succeeds(call: &Call, what: &str) -> Step {
    require(
        call.ok(),
        &format!("{what} succeeds (exit status 0)"),
        || format!("exit status {:?} {}", call.status, call.note),
        Some(call),
    )
}

/// Succeeds and prints nothing (any DEL, also of what is already gone).
fn succeeds_quietly(call: &Call, what: &str) -> Step {
    succeeds(call, what)?;
    quiet(call, what)
}

fn quiet(call: &Call, what: &str) -> Step {
    require(
        call.stdout.trim().is_empty(),
        &format!("{what} prints nothing on stdout on success"),
        || format!("stdout: {:?}", call.stdout),
        Some(call),
    )
}

pub fn check_ok(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    succeeds(&c.check(&att), "CHECK right after ADD")
}

pub fn check_quiet(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let call = c.check(&att);
    if !call.ok() {
        return Err(Verdict::Na("CHECK failed (see CHK-01)".into()));
    }
    quiet(&call, "CHECK")
}

pub fn check_refused_old(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let call = c.check(&att);
    expect_error(
        &call,
        &format!("CHECK with a {} config (CHECK exists from 0.4.0)", c.v),
        None,
    )
}

pub fn check_after_ifname_gone(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let links = sandbox::links(&c.sb.pod_path()).map_err(|e| fail("the harness can read the pod netns", e, None))?;
    if !links.iter().any(|l| l.name == IFNAME) {
        return Err(Verdict::Na(format!(
            "the ADD made no {IFNAME} in the container (see ADD-05)"
        )));
    }
    c.sb.sh_pod(&format!("ip link del {IFNAME}"))
        .map_err(|e| fail("the harness can remove the container interface", e, None))?;
    let call = c.check(&att);
    expect_error(
        &call,
        &format!("CHECK after {IFNAME} was removed from the container"),
        None,
    )
}

pub fn del_ok(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    succeeds(&c.teardown(&att), "DEL after ADD")
}

pub fn del_quiet(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let call = c.teardown(&att);
    if !call.ok() {
        return Err(Verdict::Na("DEL failed (see DEL-01)".into()));
    }
    quiet(&call, "DEL")
}

pub fn del_twice(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let _ = c.del(&att);
    succeeds_quietly(
        &c.del(&att),
        "a second DEL of the same attachment (\"multiple DELs MUST succeed\")",
    )
}

pub fn del_netns_gone(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    c.sb.remove_pod()
        .map_err(|e| fail("the harness can remove the pod netns", e, None))?;
    succeeds_quietly(&c.del(&att), "DEL after the container's netns is gone (best effort)")
}

pub fn del_no_netns(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let mut env = c.env("DEL", &att.cid, &att.ifname);
    env.retain(|(k, _)| k != "CNI_NETNS");
    let call = c.call_json("DEL", env, &c.later_conf(&att));
    succeeds_quietly(&call, "DEL without CNI_NETNS (not required for DEL)")
}

pub fn del_no_prev(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let mut conf = c.later_conf(&att);
    if let Some(o) = conf.as_object_mut() {
        o.remove("prevResult");
    }
    let call = c.call_json("DEL", c.env("DEL", &att.cid, &att.ifname), &conf);
    succeeds_quietly(&call, "DEL without prevResult (\"plugins should still succeed\")")
}

pub fn del_no_runtime_config(c: &mut Ctx) -> Step {
    if !c.conf()["runtimeConfig"].is_object() {
        return Err(Verdict::Na("the config has no runtimeConfig".into()));
    }
    let att = c.attach()?;
    let mut conf = c.later_conf(&att);
    if let Some(o) = conf.as_object_mut() {
        o.remove("runtimeConfig");
    }
    let call = c.call_json("DEL", c.env("DEL", &att.cid, &att.ifname), &conf);
    succeeds_quietly(&call, "DEL without the ADD's runtimeConfig")
}

pub fn del_unknown(c: &mut Ctx) -> Step {
    let cid = c.new_cid();
    let call = c.call_json("DEL", c.env("DEL", &cid, IFNAME), &c.conf());
    succeeds_quietly(
        &call,
        "DEL of an attachment that was never added (resources missing: best effort)",
    )
}

pub fn del_removes_ifname(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let call = c.teardown(&att);
    let left = sandbox::links(&c.sb.pod_path()).map_err(|e| fail("the harness can read the pod netns", e, None))?;
    require(
        !left.iter().any(|l| l.name == IFNAME),
        &format!("DEL removes the container interface {IFNAME:?} it created"),
        || format!("{IFNAME} is still in {}", c.sb.pod_path()),
        Some(&call),
    )
}

/// What a teardown left compared with the baseline, by category.
fn leftovers(c: &Ctx, before: &Snap, after: &Snap, att: &Att, part: &str) -> Vec<String> {
    let needles = Ctx::needles(att);
    // The meta plugin's bridge is the harness's; its state is not held against the plugin.
    let bridge_ifs: Vec<String> = att
        .prev
        .iter()
        .flat_map(|p| p["interfaces"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    let bridge_dir = c.sb.dir.join("ipam-bridge");
    // What a plugin may keep for all attachments is a host link its result names (a
    // bridge, with its gateway address and subnet route); anything else the fresh host
    // netns did not have is a leak even when the baseline's ADD+DEL left it too (a leak of
    // the same name every time). A result before 0.3.0 names no interfaces: bridges then.
    // In a list, what any of its plugins' results named.
    let pristine = c.pristine.clone().unwrap_or_default();
    let results: Vec<Value> = std::iter::once(att.result.clone())
        .chain(att.stages.iter().filter_map(|s| lenient_json(&s.stdout)))
        .collect();
    let host_ifs: Vec<String> = results
        .iter()
        .flat_map(|r| r["interfaces"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["sandbox"].as_str().unwrap_or_default().is_empty())
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    let named: Vec<String> = match att.result["interfaces"].as_array() {
        Some(_) => host_ifs,
        None => after
            .links
            .iter()
            .filter(|l| l.kind == "bridge")
            .map(|l| l.name.clone())
            .collect(),
    };
    let bridges: Vec<&str> = named.iter().map(String::as_str).collect();
    match part {
        // By name: a bridge's MAC follows its ports, it is not a new link.
        "links" => after
            .links
            .iter()
            .filter(|l| {
                let new = !before.links.iter().any(|b| b.name == l.name);
                let kept = !bridges.contains(&l.name.as_str()) && !pristine.links.iter().any(|p| p.name == l.name);
                new || kept
            })
            .filter(|l| !bridge_ifs.contains(&l.name))
            .map(|l| {
                format!(
                    "link {} ({})",
                    l.name,
                    if l.kind.is_empty() { "device" } else { &l.kind }
                )
            })
            .collect(),
        "addrs" => {
            let off_bridge = |dev: &str| !bridges.contains(&dev) && !bridge_ifs.iter().any(|b| b == dev);
            let mut v: Vec<String> = after
                .addrs
                .iter()
                .filter(|x| !before.addrs.contains(x) || (!pristine.addrs.contains(x) && off_bridge(&x.0)))
                .map(|(d, a)| format!("address {a} on {d}"))
                .collect();
            v.extend(
                after
                    .routes
                    .iter()
                    .filter(|r| !before.routes.contains(r) || (!pristine.routes.contains(r) && off_bridge(&r.dev)))
                    .map(|r| format!("route {r}")),
            );
            v
        }
        "data" => after
            .data
            .keys()
            .filter(|p| !before.data.contains_key(*p) && !p.starts_with(&bridge_dir))
            .map(|p| format!("file {}", p.display()))
            .collect(),
        // The sandbox's host netns is the plugin's alone: any rule, chain or set element
        // that was not there after the baseline's ADD+DEL is this attachment's.
        "fw" => added(&before.fw, &after.fw),
        _ => sandbox::new_files_mentioning(&before.shared, &after.shared, &needles)
            .into_iter()
            .filter(|p| !p.starts_with(&c.sb.dir.display().to_string()))
            .collect(),
    }
}

/// What `att`'s teardown left of `parts` compared with `before`. The kernel destroys a
/// removed netns (and the veth ends in it) asynchronously: what is already on its way
/// out gets a moment before it is called a leak.
pub fn left_behind(c: &Ctx, before: &Snap, att: &Att, parts: &[&str]) -> Result<Vec<String>, Verdict> {
    let now = |c: &Ctx| -> Result<Vec<String>, Verdict> {
        let after = c.snapshot()?;
        Ok(parts
            .iter()
            .flat_map(|p| leftovers(c, before, &after, att, p))
            .collect())
    };
    let mut left = now(c)?;
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = now(c)?;
    }
    Ok(left)
}

/// Baseline, then ADD + DEL of a second attachment (after `between`), then compare.
fn leaves_nothing(c: &mut Ctx, part: &str, what: &str, between: fn(&mut Ctx) -> Step) -> Step {
    let before = c.baseline()?;
    let att = c.attach()?;
    between(c)?;
    let call = c.teardown(&att);
    let left = left_behind(c, &before, &att, &[part])?;
    require(
        left.is_empty(),
        &format!("DEL removes {what} its ADD made (compared with the state after an earlier ADD+DEL)"),
        || format!("left after DEL: {}", left.join("; ")),
        Some(&call),
    )
}

fn nothing(_: &mut Ctx) -> Step {
    Ok(())
}

pub fn no_host_links(c: &mut Ctx) -> Step {
    leaves_nothing(c, "links", "the host-side links", nothing)
}
pub fn no_host_addrs(c: &mut Ctx) -> Step {
    leaves_nothing(c, "addrs", "the host-side addresses and routes", nothing)
}
pub fn no_data_files(c: &mut Ctx) -> Step {
    leaves_nothing(
        c,
        "data",
        "the files (reservations, records) in its dataDir/state dirs",
        nothing,
    )
}
pub fn no_fw_rules(c: &mut Ctx) -> Step {
    leaves_nothing(
        c,
        "fw",
        "the nftables/iptables rules naming the container ID or address",
        nothing,
    )
}
pub fn no_shared_files(c: &mut Ctx) -> Step {
    leaves_nothing(
        c,
        "shared",
        "the files under /var/lib/cni and /run naming the container",
        nothing,
    )
}

fn drop_pod(c: &mut Ctx) -> Step {
    c.sb.remove_pod()
        .map_err(|e| fail("the harness can remove the pod netns", e, None))
}

pub fn netns_gone_no_links(c: &mut Ctx) -> Step {
    leaves_nothing(
        c,
        "links",
        "(with the netns gone before DEL) the host-side links",
        drop_pod,
    )
}
pub fn netns_gone_no_data(c: &mut Ctx) -> Step {
    leaves_nothing(
        c,
        "data",
        "(with the netns gone before DEL) the files in its dataDir",
        drop_pod,
    )
}

pub fn gc_quiet(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let call = c.gc(&[&att]);
    succeeds(&call, "GC")?;
    quiet(&call, "GC")
}

pub fn gc_keeps_valid(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    let before = c.snapshot()?;
    let call = c.gc(&[&att]);
    if !call.ok() {
        return Err(Verdict::Na("GC failed (see GC-01)".into()));
    }
    let after = c.snapshot()?;
    let gone: Vec<String> = before
        .data
        .keys()
        .filter(|p| !after.data.contains_key(*p))
        .map(|p| format!("file {}", p.display()))
        .chain(
            before
                .links
                .iter()
                .filter(|b| !after.links.iter().any(|l| l.name == b.name))
                .map(|l| format!("link {}", l.name)),
        )
        .collect();
    require(
        gone.is_empty(),
        "GC keeps what a valid attachment (listed in cni.dev/valid-attachments) uses",
        || format!("removed: {}", gone.join("; ")),
        Some(&call),
    )?;
    let chk = c.check(&att);
    require(
        chk.ok() || c.o.kind == Kind::Ipam && !c.at_least("0.4.0"),
        "CHECK of a valid attachment still succeeds after GC",
        || format!("CHECK exit status {:?}", chk.status),
        Some(&chk),
    )
}

pub fn gc_removes_stale(c: &mut Ctx) -> Step {
    let before = c.baseline()?;
    let att = c.attach()?;
    let call = c.gc(&[]);
    if !call.ok() {
        return Err(Verdict::Na("GC failed (see GC-01)".into()));
    }
    let after = c.snapshot()?;
    let mut left = Vec::new();
    for part in ["links", "data", "fw"] {
        left.extend(leftovers(c, &before, &after, &att, part));
    }
    // A meta plugin's bridge is not GCed by the harness: its veth is not the plugin's.
    require(
        left.is_empty(),
        "GC with an empty cni.dev/valid-attachments removes what the stale attachment left",
        || format!("still there: {}", left.join("; ")),
        Some(&call),
    )
}

pub fn status_ok(c: &mut Ctx) -> Step {
    let call = c.call_json("STATUS", c.env("STATUS", "", ""), &c.conf());
    succeeds(&call, "STATUS of a plugin that can serve ADD")?;
    quiet(&call, "STATUS")
}
