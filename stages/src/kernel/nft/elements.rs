//! The nf_tables reads that must stay cheap (does a chain exist, the comments of one
//! chain's rules, one set or map element) and the element messages of a batch, over
//! the [`Nfnl`] socket. Answers are parsed defensively: malformed is an error, never a
//! panic.

use super::netlink::{attr, attrs, c_string, put_attr, put_nested, put_str, BatchMsg, Nfnl};
use super::netlink::{
    NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use std::io;

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// libnftnl's NFTNL_UDATA_RULE_COMMENT (a TLV inside NFTA_RULE_USERDATA).
const UDATA_RULE_COMMENT: u8 = 0;
/// libnftnl's NFTNL_UDATA_SET_ELEM_COMMENT (a TLV inside NFTA_SET_ELEM_USERDATA).
const UDATA_SET_ELEM_COMMENT: u8 = 0;

fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// Whether chain `chain` exists in `inet <table>` (false when the table does not).
pub fn chain_exists(nl: &mut Nfnl, table: &str, chain: &str) -> io::Result<bool> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_CHAIN_TABLE, table);
    put_str(&mut a, NFTA_CHAIN_NAME, chain);
    match nl.request(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETCHAIN,
        NLM_F_REQUEST | NLM_F_ACK,
        NFPROTO_INET,
        &a,
    ) {
        Ok(_) => Ok(true),
        Err(e) if is_enoent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An `inet` dump request: every answer message's attributes; none when what it names
/// (table, chain, set) does not exist.
fn dump(nl: &mut Nfnl, msg: u16, attrs: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    match nl.request(
        NFNL_SUBSYS_NFTABLES,
        msg,
        NLM_F_REQUEST | NLM_F_DUMP,
        NFPROTO_INET,
        attrs,
    ) {
        Err(e) if is_enoent(&e) => Ok(Vec::new()),
        r => r,
    }
}

/// The comments of the rules of one chain, in order (rules without a comment give an
/// empty string). A missing table or chain gives no rules.
pub fn rule_comments(nl: &mut Nfnl, table: &str, chain: &str) -> io::Result<Vec<String>> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_RULE_TABLE, table);
    put_str(&mut a, NFTA_RULE_CHAIN, chain);
    let msgs = dump(nl, NFT_MSG_GETRULE, &a)?;
    let mut out = Vec::new();
    for m in msgs {
        // The dump filters on table and chain names; check anyway.
        let same_chain = attr(&m, NFTA_RULE_CHAIN).map(c_string).as_deref() == Some(chain)
            && attr(&m, NFTA_RULE_TABLE).map(c_string).as_deref() == Some(table);
        if !same_chain {
            continue;
        }
        let comment = attr(&m, NFTA_RULE_USERDATA)
            .and_then(|ud| udata_comment(ud, UDATA_RULE_COMMENT))
            .unwrap_or_default();
        out.push(comment);
    }
    Ok(out)
}

/// One set or map element as the kernel returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElemInfo {
    /// A map element's data value (network order), `None` in a set.
    pub data: Option<Vec<u8>>,
    /// The element's comment ("" when it has none).
    pub comment: String,
}

impl ElemInfo {
    /// The first word of the comment: the owner id in cnichain's layout.
    pub fn owner(&self) -> &str {
        self.comment.split_whitespace().next().unwrap_or("")
    }
}

/// One element of set or map `set` by key (the kernel's key bytes): its data and
/// comment. `None` when the element, the set or the table does not exist. A single
/// lookup in the set, independent of how many elements it holds.
pub fn get_elem(nl: &mut Nfnl, table: &str, set: &str, key: &[u8]) -> io::Result<Option<ElemInfo>> {
    let mut val = Vec::new();
    put_attr(&mut val, NFTA_DATA_VALUE, key);
    let mut k = Vec::new();
    put_nested(&mut k, NFTA_SET_ELEM_KEY, &val);
    let mut el = Vec::new();
    put_nested(&mut el, NFTA_LIST_ELEM, &k);
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut a, NFTA_SET_ELEM_LIST_SET, set);
    put_nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, &el);
    let msgs = match nl.request(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_ACK,
        NFPROTO_INET,
        &a,
    ) {
        Ok(m) => m,
        Err(e) if is_enoent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    for m in msgs {
        let Some(elems) = attr(&m, NFTA_SET_ELEM_LIST_ELEMENTS) else {
            continue;
        };
        if let Some((_, e, _)) = attrs(elems).into_iter().find(|a| a.0 == NFTA_LIST_ELEM) {
            return Ok(Some(elem_info(e)));
        }
    }
    Ok(None)
}

/// Every element of set or map `set` of `inet <table>`: its key bytes and what
/// [`get_elem`] gives. Empty when the table or set does not exist. A dump, so GC only:
/// its cost grows with the set.
pub fn dump_elems(nl: &mut Nfnl, table: &str, set: &str) -> io::Result<Vec<(Vec<u8>, ElemInfo)>> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut a, NFTA_SET_ELEM_LIST_SET, set);
    let mut out = Vec::new();
    for m in dump(nl, NFT_MSG_GETSETELEM, &a)? {
        let Some(elems) = attr(&m, NFTA_SET_ELEM_LIST_ELEMENTS) else {
            continue;
        };
        for (t, e, _) in attrs(elems) {
            if t != NFTA_LIST_ELEM {
                continue;
            }
            let key = attr(e, NFTA_SET_ELEM_KEY)
                .and_then(|k| attr(k, NFTA_DATA_VALUE))
                .map(|v| v.to_vec())
                .unwrap_or_default();
            out.push((key, elem_info(e)));
        }
    }
    Ok(out)
}

/// What one element message of a batch does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemWrite<'a> {
    /// NFT_MSG_NEWSETELEM with NLM_F_CREATE | NLM_F_EXCL: fails with EEXIST when the key
    /// exists, whatever its data. `data` for a map element; `comment` as nft stores it.
    Create {
        key: &'a [u8],
        data: Option<&'a [u8]>,
        comment: &'a str,
    },
    /// NFT_MSG_DELSETELEM: fails with ENOENT when the key does not exist.
    Delete { key: &'a [u8] },
}

/// The batch message writing one element of set or map `set` of `inet <table>`.
pub fn elem_msg(table: &str, set: &str, w: &ElemWrite) -> BatchMsg {
    let (key, data, comment, msg, flags) = match w {
        ElemWrite::Create { key, data, comment } => (
            *key,
            *data,
            Some(*comment),
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE | NLM_F_EXCL,
        ),
        ElemWrite::Delete { key } => (*key, None, None, NFT_MSG_DELSETELEM, 0),
    };
    let mut el = Vec::new();
    let mut v = Vec::new();
    put_attr(&mut v, NFTA_DATA_VALUE, key);
    put_nested(&mut el, NFTA_SET_ELEM_KEY, &v);
    if let Some(d) = data {
        let mut v = Vec::new();
        put_attr(&mut v, NFTA_DATA_VALUE, d);
        put_nested(&mut el, NFTA_SET_ELEM_DATA, &v);
    }
    if let Some(c) = comment.filter(|c| !c.is_empty()) {
        put_attr(&mut el, NFTA_SET_ELEM_USERDATA, &udata_comment_tlv(c));
    }
    let mut list = Vec::new();
    put_nested(&mut list, NFTA_LIST_ELEM, &el);
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut a, NFTA_SET_ELEM_LIST_SET, set);
    put_nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, &list);
    BatchMsg {
        msg,
        flags,
        family: NFPROTO_INET,
        attrs: a,
    }
}

/// libnftnl's element user data holding a comment: the TLV NFTNL_UDATA_SET_ELEM_COMMENT,
/// its length (with the NUL) and the NUL-terminated text. At most 254 bytes of text are
/// kept (the TLV length is one byte; ours stay below 128).
fn udata_comment_tlv(c: &str) -> Vec<u8> {
    let text: Vec<u8> = c.bytes().filter(|b| *b != 0).take(254).collect();
    let mut t = Vec::with_capacity(text.len() + 3);
    t.push(UDATA_SET_ELEM_COMMENT);
    t.push((text.len() + 1) as u8);
    t.extend_from_slice(&text);
    t.push(0);
    t
}

fn elem_info(e: &[u8]) -> ElemInfo {
    let data = attr(e, NFTA_SET_ELEM_DATA)
        .and_then(|d| attr(d, NFTA_DATA_VALUE))
        .map(|v| v.to_vec());
    let mut comment = String::new();
    if let Some(ud) = attr(e, NFTA_SET_ELEM_USERDATA) {
        comment = udata_comment(ud, UDATA_SET_ELEM_COMMENT).unwrap_or_default();
    }
    ElemInfo { data, comment }
}

/// The comment TLV of libnftnl user data (type u8, length u8, NUL-terminated value).
fn udata_comment(ud: &[u8], comment_type: u8) -> Option<String> {
    let mut off = 0usize;
    while off + 2 <= ud.len() {
        let (t, l) = (ud[off], ud[off + 1] as usize);
        let v = ud.get(off + 2..off + 2 + l)?;
        if t == comment_type {
            return Some(c_string(v));
        }
        off += 2 + l;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_round_trip() {
        let mut b = Vec::new();
        put_str(&mut b, 1, "cnichain");
        put_attr(&mut b, 2, &[1, 2, 3]);
        let mut inner = Vec::new();
        put_attr(&mut inner, 7, &[9]);
        put_nested(&mut b, 3, &inner);
        let a = attrs(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(c_string(a[0].1), "cnichain");
        assert_eq!(a[1].1, &[1, 2, 3]);
        assert_eq!(a[2].0, 3);
        assert_eq!(attr(a[2].1, 7), Some(&[9u8][..]));
        // garbage never panics
        assert!(attrs(&[0xff, 0xff, 0, 0, 1]).is_empty());
        assert_eq!(udata_comment(&[0, 4, b'a', b'b', b'c', 0], 0).as_deref(), Some("abc"));
        assert_eq!(udata_comment(&[1, 1, 9, 0, 2, b'x', 0], 0).as_deref(), Some("x"));
        assert_eq!(udata_comment(&[0, 200, 1], 0), None);
        assert_eq!(udata_comment(&[0], 0), None);
        let mut d = Vec::new();
        put_attr(&mut d, NFTA_DATA_VALUE, &[10, 0, 0, 2]);
        let mut e = Vec::new();
        put_nested(&mut e, NFTA_SET_ELEM_DATA, &d);
        put_attr(
            &mut e,
            NFTA_SET_ELEM_USERDATA,
            &[0, 9, b'p', b'1', b' ', b'h', b'i', b'n', b't', b'!', 0],
        );
        let info = elem_info(&e);
        assert_eq!(info.data.as_deref(), Some(&[10u8, 0, 0, 2][..]));
        assert_eq!((info.owner(), info.comment.as_str()), ("p1", "p1 hint!"));
        assert_eq!(elem_info(&[]), ElemInfo::default());
        assert!(attrs(&[4]).is_empty());
        assert_eq!(c_string(b"abc"), "abc");
    }

    /// A map element as nft would send it: `create element inet cnichain pm-port4-to
    /// { tcp . 8080 comment "p1 hint" : 10.88.0.2 }`, byte for byte.
    #[test]
    fn create_element_bytes() {
        let m = elem_msg(
            "cnichain",
            "pm-port4-to",
            &ElemWrite::Create {
                key: &[6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                data: Some(&[10, 88, 0, 2]),
                comment: "p1 hint",
            },
        );
        assert_eq!(
            (m.msg, m.flags, m.family),
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, 1)
        );
        let mut want: Vec<u8> = Vec::new();
        // NFTA_SET_ELEM_LIST_TABLE "cnichain\0" (13 bytes, padded to 16)
        want.extend([13, 0, 1, 0]);
        want.extend(b"cnichain\0\0\0\0");
        // NFTA_SET_ELEM_LIST_SET "pm-port4-to\0"
        want.extend([16, 0, 2, 0]);
        want.extend(b"pm-port4-to\0");
        // NFTA_SET_ELEM_LIST_ELEMENTS (nested) > NFTA_LIST_ELEM (nested)
        want.extend([52, 0, 3, 0x80, 48, 0, 1, 0x80]);
        // NFTA_SET_ELEM_KEY > NFTA_DATA_VALUE: tcp (padded to 4) . 8080 (big endian, padded)
        want.extend([16, 0, 1, 0x80, 12, 0, 1, 0, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        // NFTA_SET_ELEM_DATA > NFTA_DATA_VALUE: 10.88.0.2
        want.extend([12, 0, 2, 0x80, 8, 0, 1, 0, 10, 88, 0, 2]);
        // NFTA_SET_ELEM_USERDATA: TLV comment (type 0, length 8 with the NUL), padded
        want.extend([14, 0, 6, 0, 0, 8]);
        want.extend(b"p1 hint\0\0\0");
        assert_eq!(m.attrs, want);
        // and it reads back as the kernel would return it
        let list = attr(&m.attrs, NFTA_SET_ELEM_LIST_ELEMENTS).and_then(|l| attr(l, NFTA_LIST_ELEM));
        let info = list.map(elem_info).unwrap_or_default();
        assert_eq!(info.data.as_deref(), Some(&[10u8, 88, 0, 2][..]));
        assert_eq!((info.owner(), info.comment.as_str()), ("p1", "p1 hint"));
    }

    #[test]
    fn delete_element_and_set_element_bytes() {
        // a set element (no data) of the records set: "p1" padded to IFNAMSIZ . 0
        let mut key = b"p1".to_vec();
        key.resize(16, 0);
        key.extend([0, 0, 0, 0]);
        let d = elem_msg("cnichain", "records", &ElemWrite::Delete { key: &key });
        assert_eq!((d.msg, d.flags, d.family), (NFT_MSG_DELSETELEM, 0, 1));
        let el = attr(&d.attrs, NFTA_SET_ELEM_LIST_ELEMENTS)
            .and_then(|l| attr(l, NFTA_LIST_ELEM))
            .unwrap_or_default();
        let parts = attrs(el);
        assert_eq!(parts.len(), 1, "a key and nothing else");
        assert_eq!(attr(parts[0].1, NFTA_DATA_VALUE), Some(&key[..]));
        assert_eq!(
            c_string(attr(&d.attrs, NFTA_SET_ELEM_LIST_SET).unwrap_or_default()),
            "records"
        );
        // a set element with a comment: no NFTA_SET_ELEM_DATA
        let c = elem_msg(
            "cnichain",
            "mq-src4",
            &ElemWrite::Create {
                key: &[10, 0, 0, 5],
                data: None,
                comment: "m1 10.0.0.5/24 n/eth0/c",
            },
        );
        let el = attr(&c.attrs, NFTA_SET_ELEM_LIST_ELEMENTS)
            .and_then(|l| attr(l, NFTA_LIST_ELEM))
            .unwrap_or_default();
        assert_eq!(attr(el, NFTA_SET_ELEM_DATA), None);
        assert_eq!(elem_info(el).comment, "m1 10.0.0.5/24 n/eth0/c");
        assert_eq!(udata_comment_tlv("ab"), vec![0, 3, b'a', b'b', 0]);
        assert_eq!(udata_comment_tlv(&"x".repeat(400)).len(), 257);
        assert_eq!(udata_comment_tlv("a\0b"), vec![0, 3, b'a', b'b', 0]);
    }

    #[test]
    fn batch_frame_bytes() {
        let m = elem_msg("t", "s", &ElemWrite::Delete { key: &[1, 2, 3, 4] });
        let alen = m.attrs.len();
        let b = super::super::netlink::encode_batch(NFNL_SUBSYS_NFTABLES, 7, &[m.clone(), m]);
        let one = super::super::netlink::NLMSG_HDR + 4 + alen;
        assert_eq!(b.len(), 20 + 2 * one + 20);
        // BATCH_BEGIN: len 20, type 16, NLM_F_REQUEST, seq 7, pid 0, AF_UNSPEC, v0,
        // res_id NFNL_SUBSYS_NFTABLES big endian
        let mut begin = Vec::new();
        begin.extend(20u32.to_ne_bytes());
        begin.extend(16u16.to_ne_bytes());
        begin.extend(1u16.to_ne_bytes());
        begin.extend(7u32.to_ne_bytes());
        begin.extend(0u32.to_ne_bytes());
        begin.extend([0, 0, 0, 10]);
        assert_eq!(&b[..20], &begin[..]);
        // the messages: nftables subsystem, REQUEST, seq 8 and 9, family inet
        for (i, seq) in [(0usize, 8u32), (1, 9)] {
            let off = 20 + i * one;
            assert_eq!(super::super::netlink::u32_at(&b, off) as usize, one);
            assert_eq!(
                super::super::netlink::u16_at(&b, off + 4),
                (10 << 8) | NFT_MSG_DELSETELEM
            );
            // no ACK asked: only a failing message answers
            assert_eq!(super::super::netlink::u16_at(&b, off + 6), NLM_F_REQUEST);
            assert_eq!(super::super::netlink::u32_at(&b, off + 8), seq);
            assert_eq!(&b[off + 16..off + 20], &[1, 0, 0, 0]);
        }
        // BATCH_END, seq 10
        let end = 20 + 2 * one;
        assert_eq!(super::super::netlink::u16_at(&b, end + 4), 17);
        assert_eq!(super::super::netlink::u32_at(&b, end + 8), 10);
        assert_eq!(&b[end + 16..], &[0, 0, 0, 10]);
    }
}
