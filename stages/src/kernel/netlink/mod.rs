//! A blocking rtnetlink client (netavark style): one `netlink_sys::Socket` per netns,
//! netlink-packet-route messages (built with rtnetlink's typed builders where they exist),
//! sequence numbers checked, every request acknowledged, dumps read to NLMSG_DONE (and
//! retried when the kernel flags them interrupted). Kernel errors keep their errno (see
//! [`errno_of`]) and name the operation, the object and the netns.
//!
//! - `link`: links (bridge, veth, ifb), their flags, MTU, MAC, master, hairpin
//! - `addr`: addresses
//! - `route`: routes
//! - `tc`: qdiscs and filters for the bandwidth stage; `tbf` builds the tbf options

mod addr;
pub mod htb;
mod link;
mod route;
pub mod tbf;
mod tc;

pub use addr::{Addr, IFA_F_NODAD, IFA_F_NOPREFIXROUTE};
pub use link::{BridgeOptions, Link};
pub use route::RouteSpec;
pub use route::TABLE_MAIN;
pub use tbf::TbfParams;
pub use tc::{Filter, Mirred, Qdisc, INGRESS_HANDLE, TBF_HANDLE, TC_H_INGRESS, TC_H_ROOT};

use crate::kernel::netns::{self, NetNs};
use anyhow::{anyhow, Result};
use cnichain_engine::trace;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt;
use std::os::fd::AsRawFd;
use std::time::Instant;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const HEADER_LEN: usize = 16;
/// How often a dump the kernel flags as interrupted (NLM_F_DUMP_INTR) is retried.
const DUMP_RETRIES: usize = 5;

/// A kernel (or socket) error for one netlink operation. Displays as
/// `<operation>: <strerror> (os error N)[: <kernel extended ack message>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// What was attempted, with the object and the netns, e.g.
    /// `add veth veth1 (peer eth0 in /run/netns/x) in /run/netns/h`.
    pub op: String,
    /// The positive errno (EEXIST, ENODEV, ...).
    pub errno: i32,
    /// The kernel's extended ack message, when it sent one.
    pub kernel_msg: Option<String>,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = &self.kernel_msg {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {}

/// The errno behind an error, if any: a [`NetlinkError`] or an `std::io::Error` anywhere in
/// the chain (so ENOENT from opening a netns counts too). Context added on top does not
/// hide it.
pub fn errno_of(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| {
        if let Some(n) = c.downcast_ref::<NetlinkError>() {
            Some(n.errno)
        } else {
            c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error())
        }
    })
}

fn os_error(op: &str, e: std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(errno) => anyhow::Error::new(NetlinkError {
            op: op.to_string(),
            errno,
            kernel_msg: None,
        }),
        None => anyhow::Error::new(e).context(op.to_string()),
    }
}

/// A blocking rtnetlink socket, bound to the netns it was created in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The netns, for messages: its path, or "the current netns".
    ns_label: String,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .field("ns", &self.ns_label)
            .finish()
    }
}

impl Netlink {
    /// A socket in the calling thread's netns.
    pub fn new() -> Result<Netlink> {
        Netlink::open("the current netns".to_string())
    }

    /// A socket created inside `ns` (on a short-lived thread), usable from any thread.
    pub fn new_in(ns: &NetNs) -> Result<Netlink> {
        let label = ns.path().display().to_string();
        netns::run_in(ns, move || Netlink::open(label))
    }

    fn open(ns_label: String) -> Result<Netlink> {
        let op = format!("open a netlink socket in {ns_label}");
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| os_error(&op, e))?;
        sock.bind_auto().map_err(|e| os_error(&op, e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| os_error(&op, e))?;
        // Both are optional refinements: error text from the kernel, and short ACKs.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 32 * 1024],
            ns_label,
        })
    }

    /// The netns this socket lives in, as given when it was made (for messages).
    pub fn ns_label(&self) -> &str {
        &self.ns_label
    }

    /// `<what> in <netns>`, the operation text used in errors.
    pub(crate) fn op(&self, what: impl fmt::Display) -> String {
        format!("{what} in {}", self.ns_label)
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        let n = loop {
            match self.sock.send(&out, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(os_error(op, e)),
            }
        };
        if n != out.len() {
            return Err(anyhow!("{op}: short netlink send ({n} of {} bytes)", out.len()));
        }
        Ok(self.seq)
    }

    /// Receive one datagram into `self.buf`, growing it to the datagram's size.
    fn recv_datagram(&mut self, op: &str) -> Result<usize> {
        let fd = self.sock.as_raw_fd();
        // Peek with MSG_TRUNC to learn the datagram's full length.
        let want = loop {
            // SAFETY: a zero-length receive into a valid pointer.
            let r = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
            if r >= 0 {
                break r as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(os_error(op, e));
            }
        };
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        loop {
            // SAFETY: receive into our own buffer, bounded by its length.
            let r = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if r >= 0 {
                return Ok((r as usize).min(self.buf.len()));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(os_error(op, e));
            }
        }
    }

    /// Read replies to `seq` until its ACK (or, for a dump, NLMSG_DONE). Returns the inner
    /// messages and whether the kernel flagged the dump as interrupted. Always reads up to
    /// the terminator, so that nothing of this request is left in the socket.
    fn recv_replies(&mut self, seq: u32, dump: bool, op: &str) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        let mut out = Vec::new();
        let mut first_err: Option<anyhow::Error> = None;
        let mut intr = false;
        loop {
            let n = self.recv_datagram(op)?;
            let mut off = 0usize;
            let mut done: Option<Result<()>> = None;
            while off + HEADER_LEN <= n {
                let data = &self.buf[off..n];
                let hdr = match NetlinkBuffer::new_checked(data) {
                    Ok(h) => h,
                    Err(e) => {
                        first_err.get_or_insert_with(|| anyhow!("{op}: malformed netlink reply: {e}"));
                        // Without a length nothing further in this datagram can be read.
                        break;
                    }
                };
                let len = hdr.length() as usize;
                let (mtype, flags, mseq) = (hdr.message_type(), hdr.flags(), hdr.sequence_number());
                let msg = &data[..len];
                off += (len + 3) & !3;
                if mseq != seq {
                    // A late reply to an earlier request that ended early.
                    continue;
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    intr = true;
                }
                match mtype {
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => {
                        first_err.get_or_insert_with(|| anyhow!("{op}: netlink overrun"));
                    }
                    NLMSG_DONE if dump => {
                        let code = msg
                            .get(HEADER_LEN..HEADER_LEN + 4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(0);
                        done = Some(if code < 0 {
                            Err(anyhow::Error::new(NetlinkError {
                                op: op.to_string(),
                                errno: -code,
                                kernel_msg: None,
                            }))
                        } else {
                            Ok(())
                        });
                    }
                    NLMSG_DONE => {}
                    NLMSG_ERROR => {
                        let code = msg
                            .get(HEADER_LEN..HEADER_LEN + 4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(-libc::EPROTO);
                        if code == 0 {
                            // An ACK. A dump is only over at NLMSG_DONE.
                            if !dump {
                                done = Some(Ok(()));
                            }
                        } else {
                            done = Some(Err(anyhow::Error::new(NetlinkError {
                                op: op.to_string(),
                                errno: code.unsigned_abs() as i32,
                                kernel_msg: ext_ack_message(flags, msg),
                            })));
                        }
                    }
                    _ => match NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg) {
                        Ok(m) => {
                            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                                out.push(inner);
                            }
                        }
                        Err(e) => {
                            first_err.get_or_insert_with(|| anyhow!("{op}: cannot decode a kernel reply: {e}"));
                        }
                    },
                }
                if done.is_some() {
                    break;
                }
            }
            if let Some(result) = done {
                result?;
                return match first_err {
                    Some(e) => Err(e),
                    None => Ok((out, intr)),
                };
            }
        }
    }

    /// Send a request that changes something and wait for its ACK. `flags` is added to
    /// NLM_F_REQUEST | NLM_F_ACK.
    pub(crate) fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<()> {
        let started = Instant::now();
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags, op)?;
        let out = self.recv_replies(seq, false, op).map(|_| ());
        trace::kernel_step(started, || format!("netlink: {op}"));
        out
    }

    /// Send a GET for one object and return what the kernel sent back.
    pub(crate) fn get(&mut self, msg: RouteNetlinkMessage, op: &str) -> Result<Vec<RouteNetlinkMessage>> {
        let started = Instant::now();
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK, op)?;
        let out = self.recv_replies(seq, false, op).map(|(m, _)| m);
        trace::kernel_step(started, || format!("netlink: {op}"));
        out
    }

    /// A dump, retried while the kernel flags it as interrupted.
    pub(crate) fn dump(&mut self, msg: RouteNetlinkMessage, op: &str) -> Result<Vec<RouteNetlinkMessage>> {
        let mut attempt = 0;
        let started = Instant::now();
        let _step = StepGuard(started, op);
        loop {
            let seq = self.send(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, op)?;
            let (msgs, intr) = self.recv_replies(seq, true, op)?;
            attempt += 1;
            if !intr || attempt >= DUMP_RETRIES {
                if intr {
                    tracing::warn!("{op}: dump still inconsistent after {attempt} attempts");
                }
                return Ok(msgs);
            }
        }
    }
}

/// The kernel's extended ack text (NLMSGERR_ATTR_MSG) from an NLMSG_ERROR message.
fn ext_ack_message(outer_flags: u16, msg: &[u8]) -> Option<String> {
    if outer_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // payload: i32 error, then the request's header (capped) or the whole request.
    let inner = msg.get(HEADER_LEN + 4..)?;
    let inner_len = if outer_flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        let l = u32::from_ne_bytes(inner.get(0..4)?.try_into().ok()?) as usize;
        (l + 3) & !3
    };
    let tlvs = inner.get(inner_len..)?;
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            let s = String::from_utf8_lossy(&v[..end]).trim().to_string();
            return (!s.is_empty()).then_some(s);
        }
    }
    None
}

/// A 6-byte MAC from an attribute value, if it is one.
pub(crate) fn mac6(v: &[u8]) -> Option<[u8; 6]> {
    v.try_into().ok()
}

/// aa:bb:cc:dd:ee:ff
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Attributes `(type, payload)` as the kernel lays them out (4-byte aligned), for tests
/// that decode what the kernel would send.
#[cfg(test)]
pub(crate) fn test_nla_bytes(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in attrs {
        out.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&t.to_ne_bytes());
        out.extend_from_slice(v);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_survives_context() {
        let e = anyhow::Error::new(NetlinkError {
            op: "delete link 7 in /run/netns/x".into(),
            errno: libc::ENODEV,
            kernel_msg: None,
        });
        let e = e.context("failed to delete eth0");
        assert_eq!(errno_of(&e), Some(libc::ENODEV));
        let s = format!("{:#}", e);
        assert!(
            s.contains("failed to delete eth0: delete link 7 in /run/netns/x: No such device"),
            "{s}"
        );
        let io = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT)).context("open");
        assert_eq!(errno_of(&io), Some(libc::ENOENT));
        assert_eq!(errno_of(&anyhow!("plain")), None);
    }

    #[test]
    fn ext_ack_text() {
        // NLMSG_ERROR, flags CAPPED|ACK_TLVS, error -22, capped request header, MSG tlv.
        let mut m = Vec::new();
        let text = b"Invalid MTU\0";
        let tlv_len = 4 + text.len();
        let total = 16 + 4 + 16 + ((tlv_len + 3) & !3);
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-22i32).to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m.extend_from_slice(&(tlv_len as u16).to_ne_bytes());
        m.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        m.extend_from_slice(text);
        while m.len() < total {
            m.push(0);
        }
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &m).as_deref(),
            Some("Invalid MTU")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &m), None);
        // truncated input never panics
        for cut in 0..m.len() {
            let _ = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &m[..cut]);
            let _ = ext_ack_message(NLM_F_ACK_TLVS, &m[..cut]);
        }
    }

    #[test]
    fn macs() {
        assert_eq!(format_mac(&[2, 0x42, 10, 0x58, 0, 2]), "02:42:0a:58:00:02");
        assert_eq!(mac6(&[1, 2, 3]), None);
    }
}

/// Records a dump as a kernel step (a trace event when slow) on every way out.
struct StepGuard<'a>(Instant, &'a str);

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        trace::kernel_step(self.0, || format!("netlink: {}", self.1));
    }
}
