//! Who owns an element of the layout, and what each attachment wrote.
//!
//! * An attachment (portmap or ipMasq for one network, container and interface) has an
//!   owner id: a letter (`p` portmap, `m` ipMasq) and 14 hex digits of a hash of the
//!   three, 15 bytes, so that it fits an `ifname` key field.
//! * Every element an attachment adds carries a comment starting with its id. Before
//!   deleting an element the attachment reads it back over nfnetlink (one lookup by key)
//!   and deletes it only if the id is its own: a re-used address or port held by another
//!   attachment is never removed.
//! * Its records are elements `"<id>" . 0`, `"<id>" . 1`, … of `set records`, one record
//!   (a line of text of our own making) in each comment. DEL reads them by key until the
//!   first missing index: no portMappings or addresses are needed, and nothing of another
//!   attachment is listed. Records are written and removed with the elements they
//!   describe, in the same transaction, so they are always contiguous.
//! * Record 0 names the network (`net <tag>`, see [`network_record`]): the owner id is a
//!   one-way hash, and GC must find the attachments of its own network that are not in
//!   the runtime's valid set without touching any other network's.

use super::layout::{self, Elem, Field};
use super::netlink::Nfnl;
use super::Batch;
use std::io;

/// The owner id of an attachment: `prefix` and 14 hex digits of
/// sha512(salt, network, container, ifname).
pub fn owner_id(prefix: char, salt: &str, network: &str, container_id: &str, ifname: &str) -> String {
    let h = crate::kernel::names::hash_hex(&[salt, "\0", network, "\0", container_id, "\0", ifname]);
    format!("{prefix}{}", &h[..14])
}

/// The comment of an element owned by `id`: the id, then a readable hint.
pub fn comment(id: &str, hint: &str) -> String {
    layout::clip(&format!("{id} {hint}"))
}

/// Record number `n` of `id`.
pub fn elem(id: &str, n: u16) -> Elem {
    Elem::new(layout::SET_RECORDS, vec![Field::Name(id.to_string()), Field::Port(n)])
}

/// The records of `id`, in order (none when the table does not exist).
pub fn read(nl: &mut Nfnl, id: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for n in 0..=u16::MAX {
        match elem(id, n).get(nl)? {
            Some(info) => out.push(info.comment),
            None => break,
        }
    }
    Ok(out)
}

/// The record that says which network an attachment belongs to: `net` and 32 hex
/// digits of a hash of the name (names may be longer than a comment).
pub fn network_record(network: &str) -> String {
    let h = crate::kernel::names::hash_hex(&["cnichain-network", "\0", network]);
    format!("net {}", &h[..32])
}

/// Add the network record and `records` as the records of `id` (their old ones must be
/// removed in the same batch first). Each record is at most [`layout::MAX_COMMENT`]
/// bytes of our own text.
pub fn write(b: &mut Batch, id: &str, network: &str, records: &[String]) -> Result<(), String> {
    if records.len() >= usize::from(u16::MAX) {
        return Err(format!("too many records ({})", records.len()));
    }
    let all = std::iter::once(network_record(network)).chain(records.iter().cloned());
    for (n, r) in (0..=u16::MAX).zip(all) {
        if r.len() > layout::MAX_COMMENT {
            return Err(format!("record too long: {r}"));
        }
        b.create_elem(&elem(id, n), None, &r);
    }
    Ok(())
}

/// Delete the first `count` records of `id` (as many as [`read`] returned).
pub fn remove(b: &mut Batch, id: &str, count: usize) {
    for n in (0..=u16::MAX).take(count) {
        b.delete_elem(&elem(id, n));
    }
}

/// The owner ids starting with `prefix` whose network record is `network`'s: one dump
/// of the records set (GC only). Attachments written before records named their network
/// are not listed: they cannot be told apart from another network's.
pub fn owners_of(nl: &mut Nfnl, prefix: char, network: &str) -> io::Result<Vec<String>> {
    let want = network_record(network);
    let mut out = Vec::new();
    for (key, info) in super::elements::dump_elems(nl, layout::TABLE, layout::SET_RECORDS)? {
        // The key is the id as an ifname (16 bytes, NUL padded), then the index.
        let name = key.get(..16).unwrap_or_default();
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let Ok(id) = std::str::from_utf8(&name[..end]) else {
            continue;
        };
        if info.comment == want && id.starts_with(prefix) && !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// Whether element `e` exists and carries `id` as its owner.
pub fn owned_by(nl: &mut Nfnl, e: &Elem, id: &str) -> io::Result<bool> {
    Ok(e.get(nl)?.is_some_and(|i| i.owner() == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_comments() {
        let a = owner_id('p', "portmap", "net", "cid", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with('p') && layout::is_plain_name(&a));
        assert_ne!(a, owner_id('p', "portmap", "net", "cid", "eth1"));
        assert_ne!(a[1..], owner_id('m', "ipmasq", "net", "cid", "eth0")[1..]);
        assert_eq!(comment("p1", "n/eth0/c"), "p1 n/eth0/c");
        assert!(comment("p1", &"x".repeat(300)).len() <= layout::MAX_COMMENT);
    }

    #[test]
    fn batches() {
        let mut b = Batch::new();
        write(&mut b, "p1", "net1", &["a".to_string(), "b".to_string()]).unwrap();
        remove(&mut b, "p1", 3);
        let v = b.to_json();
        let made = |i: usize| v["nftables"][i]["create"]["element"]["elem"][0]["elem"].clone();
        assert_eq!(made(0)["comment"], network_record("net1"));
        assert_eq!(made(2)["comment"], "b");
        assert_eq!(made(2)["val"]["concat"][1], 2);
        assert_eq!(v["nftables"][5]["delete"]["element"]["name"], layout::SET_RECORDS);
        assert!(write(&mut b, "p1", "net1", &["x".repeat(200)]).is_err());
        let r = network_record(&"n".repeat(300));
        assert!(r.len() < layout::MAX_COMMENT && r != network_record("net1"));
    }
}
