//! VERSION, the required environment, error objects, and robustness to what a plugin
//! does not know.

use super::runner::{require, Call, Ctx, Step, Verdict, IFNAME};
use super::schema;
use super::Kind;
use cnichain_engine::spec::version;
use serde_json::{json, Value};

fn version_call(c: &Ctx, stdin_version: &str, libcni_env: bool) -> Call {
    let mut env = vec![("CNI_COMMAND".to_string(), "VERSION".to_string())];
    if libcni_env {
        // What libcni's GetVersionInfo sets.
        for (k, v) in [("CNI_NETNS", "dummy"), ("CNI_IFNAME", "dummy"), ("CNI_PATH", "dummy")] {
            env.push((k.into(), v.into()));
        }
    }
    env.extend(c.base_env());
    c.call(
        "VERSION",
        env,
        json!({ "cniVersion": stdin_version }).to_string().as_bytes(),
    )
}

/// The VERSION answer's problems.
fn version_problems(call: &Call) -> Vec<String> {
    if !call.ok() {
        return vec![format!("exit status {:?}", call.status)];
    }
    let v = match call.json() {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let mut p = Vec::new();
    if v["cniVersion"].as_str().is_none_or(|s| s.is_empty()) {
        p.push("cniVersion (a non-empty string) is missing".to_string());
    }
    match v["supportedVersions"].as_array() {
        Some(a) if !a.is_empty() && a.iter().all(Value::is_string) => {}
        _ => p.push("supportedVersions (a non-empty array of strings) is missing".to_string()),
    }
    p
}

pub fn version_answers(c: &mut Ctx) -> Step {
    let call = version_call(c, version::CURRENT, true);
    let p = version_problems(&call);
    require(
        p.is_empty(),
        "VERSION exits 0 and prints {\"cniVersion\": ..., \"supportedVersions\": [...]} on stdout",
        || p.join("; "),
        Some(&call),
    )
}

pub fn version_only_command(c: &mut Ctx) -> Step {
    let call = version_call(c, version::CURRENT, false);
    let p = version_problems(&call);
    require(
        p.is_empty(),
        "VERSION needs only CNI_COMMAND in the environment",
        || p.join("; "),
        Some(&call),
    )
}

pub fn version_each_claimed(c: &mut Ctx) -> Step {
    if c.o.claimed.is_empty() {
        return Err(Verdict::Na("VERSION claimed no versions (see VER-01)".into()));
    }
    for v in c.o.claimed.clone() {
        let call = version_call(c, &v, true);
        let p = version_problems(&call);
        require(
            p.is_empty(),
            "VERSION answers for every version it claims, the request's cniVersion being that version",
            || format!("with cniVersion {v:?}: {}", p.join("; ")),
            Some(&call),
        )?;
        let got: Vec<String> = call
            .json()
            .ok()
            .and_then(|j| serde_json::from_value(j["supportedVersions"].clone()).ok())
            .unwrap_or_default();
        require(
            got == c.o.claimed,
            "the same supportedVersions whatever version the request is in",
            || {
                format!(
                    "with cniVersion {v:?}: {got:?}, with {}: {:?}",
                    version::CURRENT,
                    c.o.claimed
                )
            },
            Some(&call),
        )?;
    }
    Ok(())
}

pub fn version_list_wellformed(c: &mut Ctx) -> Step {
    let call = version_call(c, version::CURRENT, true);
    let list: Vec<Value> = call
        .json()
        .ok()
        .and_then(|v| v["supportedVersions"].as_array().cloned())
        .unwrap_or_default();
    if list.is_empty() {
        return Err(Verdict::Na("no supportedVersions to check (see VER-01)".into()));
    }
    let mut seen = Vec::new();
    for x in &list {
        let s = x.as_str().unwrap_or_default();
        require(
            version::parse(s).is_ok() && s.split('.').count() == 3,
            "supportedVersions holds semantic versions (MAJOR.MINOR.PATCH)",
            || format!("{x} is not one"),
            Some(&call),
        )?;
        require(
            !seen.contains(&s),
            "no version listed twice",
            || format!("{s} is listed twice"),
            Some(&call),
        )?;
        seen.push(s);
    }
    Ok(())
}

/// How a rule breaks the environment.
#[derive(Clone, Copy)]
pub enum EnvMod {
    Unset(&'static str),
    Set(&'static str, &'static str),
}

/// `cmd` with one variable missing or malformed: error code 4 on stdout, exit status 1;
/// a missing variable is named in the message.
pub fn env_rule(c: &mut Ctx, cmd: &str, m: EnvMod) -> Step {
    let att = if cmd == "ADD" { None } else { Some(c.attach()?) };
    let cid = c.new_cid();
    let conf = match &att {
        Some(a) => c.later_conf(a),
        None => c.add_conf(&cid, IFNAME)?.0,
    };
    let mut env = c.env(cmd, att.as_ref().map_or(cid.as_str(), |a| a.cid.as_str()), IFNAME);
    match m {
        EnvMod::Unset(k) => env.retain(|(n, _)| n != k),
        EnvMod::Set(k, v) => {
            for e in env.iter_mut().filter(|(n, _)| n == k) {
                e.1 = v.into();
            }
        }
    }
    let call = c.call_json(cmd, env, &conf);
    let (what, name) = match m {
        EnvMod::Unset(k) => (format!("{cmd} without {k}"), Some(k)),
        EnvMod::Set(k, v) => (format!("{cmd} with {k}={v:?}"), None),
    };
    expect_error(&call, &what, Some(4))?;
    if let Some(k) = name {
        let msg = schema::error_msg(&call.stdout);
        require(
            msg.contains(k),
            "the error message names the invalid variable (§5 Error, code 4)",
            || format!("msg {msg:?} does not name {k}"),
            Some(&call),
        )?;
    }
    Ok(())
}

/// `call` failed as the spec says: exit status 1, an error object on stdout, with `code`.
pub fn expect_error(call: &Call, what: &str, code: Option<u64>) -> Step {
    require(
        call.status.is_some_and(|s| s != 0),
        &format!("{what} fails (non-zero exit status)"),
        || format!("exit status {:?}", call.status),
        Some(call),
    )?;
    let p = schema::error_problems(&call.stdout);
    require(
        p.is_empty(),
        &format!("{what} prints an error object {{code, msg}} on stdout"),
        || p.join("; "),
        Some(call),
    )?;
    if let Some(want) = code {
        let got = schema::error_code(&call.stdout);
        require(
            got == Some(want),
            &format!("{what} fails with error code {want}"),
            || format!("code {got:?}"),
            Some(call),
        )?;
    }
    Ok(())
}

/// An ADD whose stdin is not JSON.
fn garbage_add(c: &mut Ctx) -> Call {
    let cid = c.new_cid();
    c.call("ADD", c.env("ADD", &cid, IFNAME), b"this is not JSON {")
}

pub fn error_shape(c: &mut Ctx) -> Step {
    let call = garbage_add(c);
    let p = schema::error_problems(&call.stdout);
    require(
        p.is_empty(),
        "a failure prints {\"code\": uint, \"msg\": string, \"details\"?: string} on stdout",
        || p.join("; "),
        Some(&call),
    )
}

pub fn error_exit_one(c: &mut Ctx) -> Step {
    let call = garbage_add(c);
    require(
        call.status == Some(1),
        "a failing plugin exits with status 1 (non-zero; libcni's skel and runtimes use 1)",
        || format!("exit status {:?} {}", call.status, call.note),
        Some(&call),
    )
}

pub fn error_decode_code(c: &mut Ctx) -> Step {
    let call = garbage_add(c);
    expect_error(&call, "ADD with a config that is not JSON", Some(6))
}

pub fn error_reserved_codes(c: &mut Ctx) -> Step {
    let mut calls = vec![garbage_add(c)];
    let cid = c.new_cid();
    let mut env = c.env("ADD", &cid, IFNAME);
    env.retain(|(k, _)| k != "CNI_IFNAME");
    calls.push(c.call_json("ADD", env, &c.conf()));
    let mut env = c.env("FROBNICATE", &cid, IFNAME);
    env.retain(|(k, _)| k != "CNI_NETNS");
    calls.push(c.call_json("FROBNICATE", env, &c.conf()));
    // Real failures too: a config of a version it cannot know, and for a plugin that
    // makes the container interface, an ADD over an existing one and (from 0.4.0) a
    // CHECK once it is gone.
    let cid = c.new_cid();
    let (mut conf, _) = c.add_conf(&cid, IFNAME)?;
    conf["cniVersion"] = json!("99.99.99");
    calls.push(c.call_json("ADD", c.env("ADD", &cid, IFNAME), &conf));
    let _ = c.call_json("DEL", c.env("DEL", &cid, IFNAME), &conf);
    if matches!(c.o.kind, Kind::Main | Kind::Chain) {
        let att = c.attach()?;
        let cid = c.new_cid();
        let (conf, _) = c.add_conf(&cid, IFNAME)?;
        calls.push(c.call_json("ADD", c.env("ADD", &cid, IFNAME), &conf));
        let _ = c.call_json("DEL", c.env("DEL", &cid, IFNAME), &conf);
        if c.at_least("0.4.0") {
            // (The DEL above may have taken it already: a DEL of an unknown container
            // with the same ifname removes it.)
            let _ = c.sb.sh_pod(&format!("ip link del {IFNAME}"));
            calls.push(c.check(&att));
        }
    }
    const SPEC: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 11, 50, 51];
    for call in &calls {
        if let Some(code) = schema::error_code(&call.stdout) {
            require(
                SPEC.contains(&code) || code >= 100,
                "codes 0-99 are reserved for the spec's errors (1-7, 11, 50, 51); a plugin's own codes are >= 100",
                || format!("code {code}"),
                Some(call),
            )?;
        }
    }
    Ok(())
}

pub fn del_bad_config(c: &mut Ctx) -> Step {
    let cid = c.new_cid();
    let call = c.call("DEL", c.env("DEL", &cid, IFNAME), b"{\"cniVersion\": ");
    expect_error(&call, "DEL with a config that is not JSON", None)
}

pub fn stdout_only_json(c: &mut Ctx) -> Step {
    let att = c.attach()?;
    // A list: every plugin's ADD (libcni parses each one's stdout).
    let calls = if att.stages.is_empty() {
        std::slice::from_ref(&att.add)
    } else {
        &att.stages[..]
    };
    for call in calls {
        require(
            serde_json::from_str::<Value>(&call.stdout).is_ok_and(|v| v.is_object()),
            "a successful ADD prints the result and nothing else on stdout (logs go to stderr)",
            || "stdout is not exactly one JSON object".into(),
            Some(call),
        )?;
    }
    Ok(())
}

/// ADD with `edit` applied to the config succeeds with a result.
fn add_with(c: &mut Ctx, what: &str, edit: impl FnOnce(&mut Value)) -> Step {
    let cid = c.new_cid();
    match c.attach_as(&cid, IFNAME, edit) {
        Ok(_) => Ok(()),
        Err(Verdict::Fail { found, call, .. }) => Err(Verdict::Fail {
            required: format!("ADD succeeds {what}"),
            found,
            call,
        }),
        Err(other) => Err(other),
    }
}

pub fn unknown_key(c: &mut Ctx) -> Step {
    add_with(c, "with an unknown top-level config key (ignored)", |conf| {
        conf["cncfUnknownKey"] = json!({ "nested": [1, "two"] });
    })
}

pub fn unknown_ipam_key(c: &mut Ctx) -> Step {
    if !c.conf()["ipam"].is_object() {
        return Err(Verdict::Na("the config has no ipam object".into()));
    }
    add_with(c, "with an unknown key in ipam (ignored)", |conf| {
        conf["ipam"]["cncfUnknownKey"] = json!(true);
    })
}

pub fn unknown_args(c: &mut Ctx) -> Step {
    add_with(
        c,
        "with unknown `args.cni` keys (ignored if not understood, CONVENTIONS)",
        |conf| {
            conf["args"] = json!({ "cni": { "cncfLabel": "x" } });
        },
    )
}

pub fn unknown_runtime_config(c: &mut Ctx) -> Step {
    add_with(c, "with an unknown runtimeConfig key (ignored)", |conf| {
        if !conf["runtimeConfig"].is_object() {
            conf["runtimeConfig"] = json!({});
        }
        conf["runtimeConfig"]["cncfUnknownCapability"] = json!({ "x": 1 });
    })
}

pub fn cni_args_ignore_unknown(c: &mut Ctx) -> Step {
    let cid = c.new_cid();
    let (conf, _) = c.add_conf(&cid, IFNAME)?;
    let mut env = c.env("ADD", &cid, IFNAME);
    for e in env.iter_mut().filter(|(k, _)| k == "CNI_ARGS") {
        e.1 = "IgnoreUnknown=1;CNCF_UNKNOWN=x".into();
    }
    let call = c.call_json("ADD", env, &conf);
    require(
        call.ok(),
        "ADD succeeds with CNI_ARGS=IgnoreUnknown=1;<unknown key> (CONVENTIONS)",
        || format!("exit status {:?}", call.status),
        Some(&call),
    )?;
    // Torn down by DEL so nothing stays (the sandbox goes anyway).
    let _ = c.call_json("DEL", c.env("DEL", &cid, IFNAME), &conf);
    Ok(())
}

fn refuse_version(c: &mut Ctx, v: &str) -> Step {
    let cid = c.new_cid();
    let (mut conf, _) = c.add_conf(&cid, IFNAME)?;
    conf["cniVersion"] = json!(v);
    let call = c.call_json("ADD", c.env("ADD", &cid, IFNAME), &conf);
    let r = expect_error(
        &call,
        &format!("ADD with cniVersion {v:?}, a version it does not support"),
        Some(1),
    );
    let _ = c.call_json("DEL", c.env("DEL", &cid, IFNAME), &conf);
    r
}

pub fn unsupported_version(c: &mut Ctx) -> Step {
    refuse_version(c, "99.99.99")
}

pub fn unclaimed_version(c: &mut Ctx) -> Step {
    if c.o.claimed.is_empty() {
        return Err(Verdict::Na("VERSION claimed no versions".into()));
    }
    let newest =
        c.o.claimed
            .iter()
            .max_by(|a, b| version::compare(a, b).unwrap_or(std::cmp::Ordering::Equal));
    // A real spec version above everything it claims.
    let Some(v) = version::SUPPORTED
        .iter()
        .find(|s| newest.is_some_and(|n| version::compare(s, n).is_ok_and(|o| o.is_gt())))
    else {
        return Err(Verdict::Na("it claims the newest spec version".into()));
    };
    refuse_version(c, v)
}

pub fn unknown_command(c: &mut Ctx) -> Step {
    let cid = c.new_cid();
    let call = c.call_json("FROBNICATE", c.env("FROBNICATE", &cid, IFNAME), &c.conf());
    expect_error(&call, "CNI_COMMAND=FROBNICATE", Some(4))
}
