//! Traffic between namespaces the test made, from threads of the test itself: a thread
//! `setns`es into the sandbox's host netns or a pod's netns (a path) and uses std's
//! sockets there. The pod side serves a TCP and a UDP "hello", a TCP sink and a TCP
//! source; the host side connects. Every socket wait is bounded; listeners stop when the
//! `PodServer` is dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const HELLO_TCP_PORT: u16 = 8080;
pub const HELLO_UDP_PORT: u16 = 8081;
pub const SINK_PORT: u16 = 9000;
pub const SOURCE_PORT: u16 = 9001;

/// Enter the netns at `path` on this thread only.
fn enter(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Run `f` on a new thread inside the netns at `path`; wait for its answer.
pub fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let p = path.to_string();
    std::thread::spawn(move || enter(&p).map(|_| f()))
        .join()
        .map_err(|_| "netns thread panicked".to_string())?
}

/// Listeners inside one pod's netns.
pub struct PodServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// the sink's measured rates (bits/s), one per measured connection
    pub sink_rates: mpsc::Receiver<Result<f64, String>>,
}

impl PodServer {
    /// Serve in the pod's netns: TCP 8080 and UDP 8081 answer `reply`, TCP 9000 reads and
    /// measures the shaped rate (see [`measure_shaped`]), TCP 9001 writes zeros until the
    /// peer closes.
    pub fn start(netns: &str, reply: &str, target_bps: u64, burst_bytes: u64) -> Result<PodServer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (rate_tx, sink_rates) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let mut threads = Vec::new();
        for kind in 0..4 {
            let stop = stop.clone();
            let netns = netns.to_string();
            let reply = reply.to_string();
            let ready = ready_tx.clone();
            let rate_tx = rate_tx.clone();
            threads.push(std::thread::spawn(move || {
                if let Err(e) = enter(&netns) {
                    let _ = ready.send(Err(e));
                    return;
                }
                match kind {
                    0 => serve_tcp(&stop, HELLO_TCP_PORT, &ready, move |mut s| {
                        let _ = s.write_all(format!("{reply}\n").as_bytes());
                    }),
                    1 => serve_udp(&stop, &reply, &ready),
                    2 => serve_tcp(&stop, SINK_PORT, &ready, move |mut s| {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let r = measure_shaped(&mut s, target_bps, burst_bytes);
                        let _ = rate_tx.send(r);
                    }),
                    _ => serve_tcp(&stop, SOURCE_PORT, &ready, |mut s| {
                        let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
                        let buf = vec![0u8; 64 * 1024];
                        let deadline = Instant::now() + Duration::from_secs(90);
                        while Instant::now() < deadline && s.write_all(&buf).is_ok() {}
                    }),
                }
            }));
        }
        drop(ready_tx);
        let server = PodServer {
            stop,
            threads,
            sink_rates,
        };
        for _ in 0..4 {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(format!("pod listener not ready: {e}")),
            }
        }
        Ok(server)
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(
    stop: &AtomicBool,
    port: u16,
    ready: &mpsc::Sender<Result<(), String>>,
    handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static,
) {
    let l = match TcpListener::bind(("0.0.0.0", port)).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("bind tcp {port}: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let h = handle.clone();
                // each connection on its own thread (sink and source run for seconds)
                conns.push(std::thread::spawn(move || h(s)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn serve_udp(stop: &AtomicBool, reply: &str, ready: &mpsc::Sender<Result<(), String>>) {
    let s = match UdpSocket::bind(("0.0.0.0", HELLO_UDP_PORT))
        .and_then(|s| s.set_read_timeout(Some(Duration::from_millis(50))).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("bind udp: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{reply}\n").as_bytes(), peer);
        }
    }
}

/// Read from `s` until the shaper's steady rate is seen, and return it (bits/s of
/// payload). The token bucket starts full (containerd asks for a 4294967295-bit burst,
/// 512 MiB), so the first `burst_bytes` may arrive at line rate: measuring starts once
/// that much and a margin has arrived, or earlier once three 200 ms windows in a row ran
/// below 4x the target (a smaller bucket), and lasts 2 s.
pub fn measure_shaped(s: &mut impl Read, target_bps: u64, burst_bytes: u64) -> Result<f64, String> {
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    let mut mark = (start, 0u64);
    let mut low = 0;
    let mut phase: Option<(Instant, u64)> = None;
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("read after {total} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {total} bytes"));
        }
        total += n as u64;
        let now = Instant::now();
        if let Some((t0, b0)) = phase {
            let dt = now.duration_since(t0).as_secs_f64();
            if dt >= 2.0 {
                return Ok((total - b0) as f64 * 8.0 / dt);
            }
            continue;
        }
        if total > burst_bytes + (16 << 20) {
            phase = Some((now, total));
            continue;
        }
        let dt = now.duration_since(mark.0).as_secs_f64();
        if dt >= 0.2 {
            let rate = (total - mark.1) as f64 * 8.0 / dt;
            low = if rate < 4.0 * target_bps as f64 { low + 1 } else { 0 };
            mark = (now, total);
            if low >= 3 {
                phase = Some((now, total));
            }
        }
        if now.duration_since(start) > Duration::from_secs(60) {
            return Err(format!("no shaping seen: {total} bytes in 60 s"));
        }
    }
}

/// From the current netns: connect to addr, read one line.
pub fn tcp_hello(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out.trim().to_string())
}

/// From the current netns: send a datagram to addr, wait for one back.
pub fn udp_hello(addr: SocketAddr) -> Result<String, String> {
    let s = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    // a few tries: the first datagram may race the conntrack/NAT setup
    for _ in 0..3 {
        s.send_to(b"ping", addr).map_err(|e| e.to_string())?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    Err("no answer".into())
}

/// From the current netns: write zeros to addr until the peer closes (or 90 s).
pub fn feed(addr: SocketAddr) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        match s.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// From the current netns: connect to addr and measure what arrives.
pub fn drain(addr: SocketAddr, target_bps: u64, burst_bytes: u64) -> Result<f64, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    measure_shaped(&mut s, target_bps, burst_bytes)
}
