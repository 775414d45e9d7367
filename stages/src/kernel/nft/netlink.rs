//! A small blocking nfnetlink client: the socket, batch framing and the attribute
//! helpers used by [`super::elements`] (nf_tables reads and element writes) and
//! [`super::conntrack`] (ctnetlink dump/delete). Requests are built by hand (a handful
//! of attributes); answers are parsed defensively: anything malformed is an error,
//! never a panic.
//!
//! The socket lives in the network namespace of the thread that opens it.

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;

pub(super) const NLMSG_HDR: usize = 16;
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

/// NLMSG_MIN_TYPE and NLMSG_MIN_TYPE + 1: the frame of an nfnetlink batch.
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

const RECV_BUF: usize = 256 * 1024;
/// Receive buffer room per batch message: one error answer (36 bytes with
/// NETLINK_CAP_ACK) costs about 768 bytes of buffer in the kernel's accounting.
const ERROR_ANSWER_ROOM: usize = 1024;
/// The receive buffer is never asked to grow past this (the kernel allows up to
/// INT_MAX / 2); memory is only used if the answers come.
const MAX_RECV_BUF: usize = 128 * 1024 * 1024;
/// SOL_NETLINK's NETLINK_CAP_ACK: an error answer carries the failed message's header,
/// not the whole message (an element message is ~250 bytes).
const NETLINK_CAP_ACK: libc::c_int = 10;
/// How long a read waits for the kernel before giving up (it answers in microseconds;
/// this only keeps a lost answer from hanging a runtime's call forever).
const RECV_TIMEOUT_SECS: libc::time_t = 10;

/// One NETLINK_NETFILTER socket.
pub struct Nfnl {
    sock: Socket,
    seq: u32,
    /// A batch was sent: closing the socket now would wait (see [`Drop`]).
    wrote: bool,
}

/// Sockets that sent a batch, kept open a while after their owner is done with them.
///
/// Closing a NETLINK_NETFILTER socket makes the kernel flush nf_tables' pending
/// transaction cleanup (`nft_rcv_nl_event`), which waits for an RCU grace period after a
/// commit that removed anything, and it waits holding the nf_tables commit mutex. The
/// netdevice notifier that every link deletion runs takes that mutex too: a DEL whose
/// element transaction is closed right away stalls its own veth and ifb deletions behind
/// that grace period (~10-15 ms measured). A parked socket is closed later, by a later
/// park (the oldest goes first) or at process exit, when the cleanup has long finished.
static PARKED: std::sync::Mutex<Vec<std::os::fd::OwnedFd>> = std::sync::Mutex::new(Vec::new());
const PARKED_MAX: usize = 8;

impl Drop for Nfnl {
    fn drop(&mut self) {
        if !self.wrote {
            return;
        }
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // A second descriptor of the same socket: the socket is released only when it,
        // the last one, is closed.
        // SAFETY: fcntl on a descriptor we own; the result is a new descriptor we own.
        let fd = unsafe { libc::fcntl(self.sock.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return;
        }
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        let kept = unsafe { OwnedFd::from_raw_fd(fd) };
        let evicted = {
            let mut parked = PARKED.lock().unwrap_or_else(|p| p.into_inner());
            parked.push(kept);
            if parked.len() > PARKED_MAX {
                Some(parked.remove(0))
            } else {
                None
            }
        };
        drop(evicted);
    }
}

impl Nfnl {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(&sock)?;
        {
            use std::os::unix::io::AsRawFd;
            // Best effort (kernels before 4.3 lack it): errors echo only headers.
            let _ = sockopt_set(sock.as_raw_fd(), libc::SOL_NETLINK, NETLINK_CAP_ACK, 1);
        }
        Ok(Nfnl {
            sock,
            seq: 0,
            wrote: false,
        })
    }

    /// Send `msgs` as one nfnetlink batch of subsystem `subsys` (BATCH_BEGIN, the
    /// messages, BATCH_END) in one `send`: one kernel transaction, committed only if every
    /// message succeeds. Returns each message's answer (0 or a negative errno), in order.
    /// An error for the batch as a whole (the frame refused, the commit failed, answers
    /// lost) is the `io::Error`.
    ///
    /// The kernel takes a batch only whole, in one datagram (a batch cut over several
    /// sends is aborted at the first one's end), and refuses a datagram longer than the
    /// socket's send buffer less 32 bytes (EMSGSIZE; 212,992 bytes by default, about 800
    /// element messages). So the send buffer is grown to the batch first, with
    /// SO_SNDBUFFORCE as nft and libmnl do (CAP_NET_ADMIN, which writing nftables needs
    /// anyway), SO_SNDBUF up to `net.core.wmem_max` otherwise.
    ///
    /// The messages ask for no ACK: the kernel answers only the ones that fail (and the
    /// BEGIN header when the commit fails), all before `send` returns, since a netlink
    /// socket of the kernel handles a datagram in the sender's call. So the answers are
    /// read without waiting until none is left (as nft does), and the receive buffer,
    /// which must hold them all at once, is sized for one (capped) error per message; a
    /// lost answer (ENOBUFS) can only have been an error, so the batch did not commit.
    pub fn batch(&mut self, subsys: u16, msgs: &[BatchMsg]) -> io::Result<Vec<i32>> {
        let started = std::time::Instant::now();
        let out = self.batch_untimed(subsys, msgs);
        cnichain_engine::trace::kernel_step(started, || format!("nftables: batch of {} messages", msgs.len()));
        out
    }

    fn batch_untimed(&mut self, subsys: u16, msgs: &[BatchMsg]) -> io::Result<Vec<i32>> {
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(msgs.len() as u32 + 2);
        let buf = encode_batch(subsys, first, msgs);
        self.size_buffers(
            buf.len(),
            msgs.len().saturating_add(2).saturating_mul(ERROR_ANSWER_ROOM),
        )?;
        self.wrote = true;
        let total = buf.len();
        let sent = self.sock.send(&buf, 0)?;
        drop(buf);
        if sent != total {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "netlink batch sent in part"));
        }
        let mut answers: Vec<i32> = vec![0; msgs.len()];
        let mut failed = false;
        let mut lost = false;
        let mut rbuf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        loop {
            rbuf.clear();
            let n = match self.sock.recv(&mut rbuf, libc::MSG_TRUNC | libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n > rbuf.len() {
                // An answer cut short: it was an error (only errors answer).
                lost = true;
                continue;
            }
            let mut off = 0usize;
            while off + NLMSG_HDR <= n {
                let mlen = u32_at(&rbuf, off) as usize;
                if mlen < NLMSG_HDR || off + mlen > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message"));
                }
                let mtype = u16_at(&rbuf, off + 4);
                let mseq = u32_at(&rbuf, off + 8);
                let body = &rbuf[off + NLMSG_HDR..off + mlen];
                off += align4(mlen);
                if mtype != NLMSG_ERROR {
                    continue;
                }
                let err = if body.len() >= 4 {
                    i32_at(body, 0)
                } else {
                    -libc::EINVAL
                };
                let idx = mseq.wrapping_sub(first) as usize;
                if idx == 0 || idx == msgs.len() + 1 {
                    // About the frame (BEGIN or END): the batch as a whole failed.
                    if err != 0 {
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    continue;
                }
                if let Some(slot) = answers.get_mut(idx - 1) {
                    *slot = err;
                    failed |= err != 0;
                }
            }
        }
        if lost && !failed {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!(
                    "the kernel's answers to a batch of {} messages overflowed the receive buffer \
                     (ENOBUFS); the batch was refused",
                    msgs.len()
                ),
            ));
        }
        Ok(answers)
    }

    /// Grow the send buffer so that a datagram of `send` bytes fits, and the receive
    /// buffer to at least `recv` bytes. Buffers already large enough are left alone.
    fn size_buffers(&mut self, send: usize, recv: usize) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let fd = self.sock.as_raw_fd();
        // The kernel refuses a datagram longer than sk_sndbuf - 32; it stores twice
        // the value given, so asking for `send` + 32 is plenty.
        let want_send = send.saturating_add(64);
        if sockopt_get(fd, libc::SO_SNDBUF)? < want_send {
            grow(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, want_send);
            let have = sockopt_get(fd, libc::SO_SNDBUF)?;
            if have < want_send {
                return Err(io::Error::new(
                    io::ErrorKind::Other,
                    format!(
                        "an nfnetlink batch of {send} bytes does not fit the socket's send buffer ({have} bytes): \
                         growing it past net.core.wmem_max needs CAP_NET_ADMIN"
                    ),
                ));
            }
        }
        let want_recv = recv.min(MAX_RECV_BUF);
        if sockopt_get(fd, libc::SO_RCVBUF)? < want_recv {
            // Best effort: a smaller buffer only matters if many messages fail, and then
            // ENOBUFS says so.
            grow(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, want_recv);
        }
        Ok(())
    }

    /// Send one request and return the attribute bytes (after `nfgenmsg`) of every data
    /// message of the answer. Ends at the ACK (`NLM_F_ACK`) or at NLMSG_DONE (dumps); a
    /// negative errno in the answer is an `io::Error` with that errno.
    pub fn request(&mut self, subsys: u16, msg: u16, flags: u16, family: u8, attrs: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.request_each(subsys, msg, flags, family, attrs, |m| out.push(m.to_vec()))?;
        Ok(out)
    }

    /// [`Nfnl::request`] handing each data message's attributes to `each` as it is read:
    /// a dump is never held whole in memory.
    pub fn request_each(
        &mut self,
        subsys: u16,
        msg: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
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
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                    NLMSG_DONE => {
                        let err = if body.len() >= 4 { i32_at(body, 0) } else { 0 };
                        return if err < 0 {
                            Err(io::Error::from_raw_os_error(-err))
                        } else {
                            Ok(())
                        };
                    }
                    _ => {
                        if body.len() >= 4 {
                            each(&body[4..]);
                        }
                    }
                }
            }
        }
    }
}

/// One message of a batch: its type within the subsystem, its flags besides
/// NLM_F_REQUEST and NLM_F_ACK, the nfgenmsg family and the attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMsg {
    pub msg: u16,
    pub flags: u16,
    pub family: u8,
    pub attrs: Vec<u8>,
}

/// One netlink message: header, nfgenmsg, attributes.
fn put_msg(buf: &mut Vec<u8>, typ: u16, flags: u16, seq: u32, nfgen: [u8; 4], attrs: &[u8]) {
    let len = NLMSG_HDR + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&nfgen);
    buf.extend_from_slice(attrs);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// The bytes of a whole batch: BEGIN (seq `first`, res_id = the subsystem, big endian),
/// the messages (seq `first + 1 …`), END.
pub(super) fn encode_batch(subsys: u16, first: u32, msgs: &[BatchMsg]) -> Vec<u8> {
    let mut buf = Vec::new();
    let frame = |buf: &mut Vec<u8>, typ: u16, seq: u32| {
        let res = subsys.to_be_bytes();
        put_msg(
            buf,
            typ,
            NLM_F_REQUEST,
            seq,
            [libc::AF_UNSPEC as u8, 0, res[0], res[1]],
            &[],
        );
    };
    frame(&mut buf, NFNL_MSG_BATCH_BEGIN, first);
    let mut seq = first;
    for m in msgs {
        seq = seq.wrapping_add(1);
        put_msg(
            &mut buf,
            (subsys << 8) | m.msg,
            NLM_F_REQUEST | m.flags,
            seq,
            [m.family, 0, 0, 0],
            &m.attrs,
        );
    }
    frame(&mut buf, NFNL_MSG_BATCH_END, seq.wrapping_add(1));
    buf
}

fn set_recv_timeout(sock: &Socket) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: a valid socket descriptor and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockopt_set(fd: libc::c_int, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid descriptor and an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket buffer size (what the kernel holds: twice what was set).
fn sockopt_get(fd: libc::c_int, opt: libc::c_int) -> io::Result<usize> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid descriptor, an int and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(val).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set a socket buffer to `size` with the privileged option `force` (past the sysctl
/// maximum), or with `plain` (capped at it) when that is not permitted.
fn grow(fd: libc::c_int, force: libc::c_int, plain: libc::c_int, size: usize) {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX / 2);
    if sockopt_set(fd, libc::SOL_SOCKET, force, v).is_err() {
        let _ = sockopt_set(fd, libc::SOL_SOCKET, plain, v);
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(super) fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
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

/// A C string attribute's text, up to its NUL.
pub(super) fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
