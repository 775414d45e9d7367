//! A small blocking nfnetlink client for the reads that must stay cheap: does one chain
//! exist, the comments of one chain's rules, one set or map element (its data and
//! comment); and the ctnetlink dump/delete used by [`super::conntrack`]. Requests are
//! built by hand (a handful of attributes); answers are parsed defensively: anything
//! malformed is an error, never a panic.
//!
//! The socket lives in the network namespace of the thread that opens it.

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFPROTO_INET: u8 = 1;

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSETELEM: u16 = 13;

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

const RECV_BUF: usize = 256 * 1024;

/// One NETLINK_NETFILTER socket.
pub struct Nfnl {
    sock: Socket,
    seq: u32,
}

impl Nfnl {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Nfnl { sock, seq: 0 })
    }

    /// Send one request and return the attribute bytes (after `nfgenmsg`) of every data
    /// message of the answer. Ends at the ACK (`NLM_F_ACK`) or at NLMSG_DONE (dumps); a
    /// negative errno in the answer is an `io::Error` with that errno.
    pub fn request(&mut self, subsys: u16, msg: u16, flags: u16, family: u8, attrs: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDR + 4 + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((subsys << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version NFNETLINK_V0, res_id (big endian) 0
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(attrs);
        self.sock.send(&m, 0)?;

        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            buf.clear();
            // MSG_TRUNC: the return value is the datagram's real length, so a cut is seen.
            let n = self.sock.recv(&mut buf, libc::MSG_TRUNC)?;
            if n > buf.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink answer truncated"));
            }
            let mut off = 0usize;
            while off + NLMSG_HDR <= n {
                let mlen = u32_at(&buf, off) as usize;
                if mlen < NLMSG_HDR || off + mlen > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message"));
                }
                let mtype = u16_at(&buf, off + 4);
                let mseq = u32_at(&buf, off + 8);
                let body = &buf[off + NLMSG_HDR..off + mlen];
                off += align4(mlen);
                if mseq != seq {
                    continue;
                }
                match mtype {
                    NLMSG_ERROR => {
                        let err = if body.len() >= 4 {
                            i32_at(body, 0)
                        } else {
                            -libc::EINVAL
                        };
                        return if err == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                    NLMSG_DONE => {
                        let err = if body.len() >= 4 { i32_at(body, 0) } else { 0 };
                        return if err < 0 {
                            Err(io::Error::from_raw_os_error(-err))
                        } else {
                            Ok(out)
                        };
                    }
                    _ => {
                        if body.len() >= 4 {
                            out.push(body[4..].to_vec());
                        }
                    }
                }
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}

/// Append one attribute.
pub fn put_attr(buf: &mut Vec<u8>, typ: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// Append a NUL-terminated string attribute.
pub fn put_str(buf: &mut Vec<u8>, typ: u16, s: &str) {
    let mut p = s.as_bytes().to_vec();
    p.push(0);
    put_attr(buf, typ, &p);
}

/// Append a nested attribute.
pub fn put_nested(buf: &mut Vec<u8>, typ: u16, inner: &[u8]) {
    put_attr(buf, typ | NLA_F_NESTED, inner);
}

/// Iterate over attributes: (type without flags, payload, the whole attribute bytes).
pub fn attrs(b: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 4 <= b.len() {
        let len = u16_at(b, off) as usize;
        let typ = u16_at(b, off + 2) & NLA_TYPE_MASK;
        if len < 4 || off + len > b.len() {
            break;
        }
        out.push((typ, &b[off + 4..off + len], &b[off..off + len]));
        off += align4(len);
    }
    out
}

/// The payload of the first attribute of type `typ`.
pub fn attr(b: &[u8], typ: u16) -> Option<&[u8]> {
    attrs(b).into_iter().find(|a| a.0 == typ).map(|a| a.1)
}

fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
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

/// The comments of the rules of one chain, in order (rules without a comment give an
/// empty string). A missing table or chain gives no rules.
pub fn rule_comments(nl: &mut Nfnl, table: &str, chain: &str) -> io::Result<Vec<String>> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_RULE_TABLE, table);
    put_str(&mut a, NFTA_RULE_CHAIN, chain);
    let msgs = match nl.request(
        NFNL_SUBSYS_NFTABLES,
        NFT_MSG_GETRULE,
        NLM_F_REQUEST | NLM_F_DUMP,
        NFPROTO_INET,
        &a,
    ) {
        Ok(m) => m,
        Err(e) if is_enoent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
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
}
