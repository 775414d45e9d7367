//! What a stage's GC gets from the runtime: the network and its valid attachments
//! (`cni.dev/valid-attachments`, or the older `cni.dev/attachments`). Everything of
//! this network a stage finds on the node that is not in the set is stale, whether or
//! not a cached result remains for it: the set is authoritative. Without either key
//! (libcni's GC with nil arguments) the valid set is unknown and stages remove nothing.

use crate::conf::{as_array, as_object, field, string_field};
use crate::kernel::netlink::{errno_of, Netlink};
use cnichain_engine::spec::error::CniError;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub struct ValidSet {
    pub network: String,
    /// (containerID, ifname) pairs.
    pub attachments: Vec<(String, String)>,
    /// The same, hashed: GC looks thousands of attachments up.
    set: HashSet<(String, String)>,
}

impl ValidSet {
    /// The set from a GC request config; None when it carries neither key.
    pub fn from_config(config: &Map<String, Value>) -> Result<Option<ValidSet>, CniError> {
        let Some(attachments) = valid_attachments(config)? else {
            return Ok(None);
        };
        let network = config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let set = attachments.iter().cloned().collect();
        Ok(Some(ValidSet {
            network,
            attachments,
            set,
        }))
    }

    pub fn contains(&self, container_id: &str, ifname: &str) -> bool {
        self.set.contains(&(container_id.to_string(), ifname.to_string()))
    }

    /// `key(network, containerID, ifname)` of every valid attachment.
    pub fn keys<T>(&self, key: impl Fn(&str, &str, &str) -> T) -> Vec<T> {
        self.attachments.iter().map(|(c, i)| key(&self.network, c, i)).collect()
    }
}

/// The attachments listed under either key; `None` when neither is present, empty for
/// `null`.
pub fn valid_attachments(config: &Map<String, Value>) -> Result<Option<Vec<(String, String)>>, CniError> {
    let (key, v) = match field(config, "cni.dev/valid-attachments") {
        Some(v) => ("cni.dev/valid-attachments", v),
        None => match field(config, "cni.dev/attachments") {
            Some(v) => ("cni.dev/attachments", v),
            None => return Ok(None),
        },
    };
    if v.is_null() {
        return Ok(Some(Vec::new()));
    }
    let mut out = Vec::new();
    for (i, a) in as_array(v, key)?.iter().enumerate() {
        let path = format!("{key}[{i}]");
        let m = as_object(a, &path)?;
        let cid = string_field(m, "containerID", &path)?.unwrap_or_default();
        let ifname = string_field(m, "ifname", &path)?.unwrap_or_default();
        out.push((cid, ifname));
    }
    Ok(Some(out))
}

/// Delete the host's links of kind `link_kind` whose alias says stage `stage` made them
/// for an attachment of the network that is not valid (see [`crate::kernel::names::owner_alias`]): a
/// veth's host end whose pod netns outlived its attachment, an ifb. Links without such
/// an alias (made by the reference plugins, or by another network) are not touched.
pub fn links(valid: &ValidSet, link_kind: &str, stage: &str) -> Result<(), CniError> {
    let mut host = Netlink::new().map_err(CniError::from)?;
    let stale: Vec<_> = host
        .links()
        .map_err(CniError::from)?
        .into_iter()
        .filter(|l| l.kind.as_deref() == Some(link_kind))
        .filter(|l| {
            crate::kernel::names::alias_owner(&l.alias, stage, &valid.network)
                .is_some_and(|(c, i)| !valid.contains(c, i))
        })
        .collect();
    each_stale(stale, |l| {
        tracing::debug!(network = %valid.network, link = %l.name, alias = %l.alias, "gc: deleting stale link");
        match host.del_link(l.index) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(CniError::from(e.context(format!("{stage} gc: delete {}", l.name)))),
        }
    })
}

/// Run `f` on each stale item, going on past failures; the failures joined.
pub fn each_stale<T>(
    stale: impl IntoIterator<Item = T>,
    mut f: impl FnMut(T) -> Result<(), CniError>,
) -> Result<(), CniError> {
    join(stale.into_iter().filter_map(|item| f(item).err()).collect())
}

/// All of `errors` as one (the first one's code), or Ok when there are none.
pub fn join(errors: Vec<CniError>) -> Result<(), CniError> {
    match errors.len() {
        0 => Ok(()),
        _ => {
            let code = errors[0].code;
            let msg = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
            Err(CniError::new(code, msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_sets() {
        let c = |v: Value| v.as_object().cloned().unwrap();
        assert!(ValidSet::from_config(&c(json!({"name": "n"}))).unwrap().is_none());
        let s = ValidSet::from_config(&c(json!({"name": "n", "cni.dev/attachments": [
            {"containerID": "a", "ifname": "eth0"}]})))
        .unwrap()
        .unwrap();
        assert!(s.contains("a", "eth0") && !s.contains("a", "eth1"));
        assert_eq!(s.keys(|n, c, i| format!("{n}/{c}/{i}")), vec!["n/a/eth0"]);
        let none = ValidSet::from_config(&c(json!({"name": "n", "cni.dev/valid-attachments": null}))).unwrap();
        assert!(none.unwrap().attachments.is_empty());
        let bad = ValidSet::from_config(&c(
            json!({"name": "n", "cni.dev/valid-attachments": [{"containerID": 5}]}),
        ));
        assert!(bad.is_err_and(|e| e.msg.contains("cni.dev/valid-attachments[0]")));
        let mut n = 0;
        let r = each_stale([1, 2, 3], |i| {
            n += 1;
            if i == 2 {
                Err(CniError::internal("two"))
            } else {
                Ok(())
            }
        });
        assert_eq!((n, r.unwrap_err().msg), (3, "two".to_string()));
    }
}
