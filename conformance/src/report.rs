//! Output: one line per rule (ID, section, PASS/FAIL/N/A, title); a failure is followed by
//! what the spec required, what was found, and the exact request and response.

use super::runner::{Call, Verdict};
use super::{kinds_text, rules, Opts, RuleResult};
use serde_json::{json, Value};

pub fn rule_table() -> String {
    let mut s = String::from("ID       SECTION                      KINDS           VERSIONS        REQUIRES\n");
    for r in rules::RULES {
        let vers = match r.max {
            Some(m) => format!(">={} <{m}", r.min),
            None if r.each_version => format!(">={} each", r.min),
            None => format!(">={}", r.min),
        };
        s.push_str(&format!(
            "{:<8} {:<28} {:<15} {:<15} {}\n",
            r.id,
            r.section,
            kinds_text(r.kinds),
            vers,
            r.title
        ));
    }
    s
}

fn status(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail { .. } => "FAIL",
        Verdict::Na(_) => "N/A",
    }
}

fn indent(text: &str, pad: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn call_text(c: &Call) -> String {
    let mut s = format!("        request ({}): {} in netns {}\n", c.what, c.program, c.netns);
    for (k, v) in &c.env {
        s.push_str(&format!("          {k}={v}\n"));
    }
    s.push_str("        stdin:\n");
    s.push_str(&indent(&c.stdin, "          "));
    s.push_str(&format!(
        "        exit status: {}{}\n",
        c.status.map_or("none".to_string(), |s| s.to_string()),
        if c.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.note)
        }
    ));
    s.push_str("        stdout:\n");
    s.push_str(&indent(&c.stdout, "          "));
    s.push_str("        stderr:\n");
    s.push_str(&indent(&c.stderr, "          "));
    s
}

pub fn human(o: &Opts, results: &[RuleResult]) -> String {
    let mut s = format!(
        "plugin {} (kind {}), claims [{}], testing [{}]\n",
        o.plugin.display(),
        o.kind.as_str(),
        o.claimed.join(", "),
        o.versions.join(", ")
    );
    for r in results {
        s.push_str(&format!(
            "{:<4} {:<8} {:<28} {}{}\n",
            status(&r.verdict),
            r.rule.id,
            r.rule.section,
            r.rule.title,
            if r.version.is_empty() {
                String::new()
            } else {
                format!(" [{}]", r.version)
            }
        ));
        match &r.verdict {
            Verdict::Fail { required, found, call } => {
                s.push_str(&format!("        required: {required}\n        found: {found}\n"));
                if let Some(c) = call {
                    s.push_str(&call_text(c));
                }
            }
            Verdict::Na(why) => s.push_str(&format!("        ({why})\n")),
            Verdict::Pass => {}
        }
    }
    let (p, f, n) = counts(results);
    s.push_str(&format!("{p} passed, {f} failed, {n} not applicable\n"));
    s
}

fn counts(results: &[RuleResult]) -> (usize, usize, usize) {
    let c = |k: &str| results.iter().filter(|r| status(&r.verdict) == k).count();
    (c("PASS"), c("FAIL"), c("N/A"))
}

pub fn json(o: &Opts, results: &[RuleResult]) -> String {
    let rules: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = json!({
                "id": r.rule.id, "section": r.rule.section, "title": r.rule.title,
                "status": status(&r.verdict).to_lowercase().replace('/', ""), "version": r.version,
            });
            match &r.verdict {
                Verdict::Fail { required, found, call } => {
                    v["required"] = json!(required);
                    v["found"] = json!(found);
                    if let Some(c) = call {
                        v["request"] = json!({
                            "what": c.what, "program": c.program, "netns": c.netns,
                            "env": c.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                            "stdin": c.stdin,
                        });
                        v["stdout"] = json!(c.stdout);
                        v["stderr"] = json!(c.stderr);
                        v["exitStatus"] = json!(c.status);
                        if !c.note.is_empty() {
                            v["note"] = json!(c.note);
                        }
                    }
                }
                Verdict::Na(why) => v["reason"] = json!(why),
                Verdict::Pass => {}
            }
            v
        })
        .collect();
    let (p, f, n) = counts(results);
    let out = json!({
        "plugin": o.plugin.display().to_string(), "kind": o.kind.as_str(),
        "claimedVersions": o.claimed, "testedVersions": o.versions,
        "rules": rules, "summary": { "pass": p, "fail": f, "na": n },
    });
    format!("{}\n", serde_json::to_string_pretty(&out).unwrap_or_default())
}
