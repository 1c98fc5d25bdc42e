//! A loopback TCP relay for fault-injection tests: "a connection cut
//! mid-stream by the TCP relay".
//!
//! [`Relay::start`] listens on `127.0.0.1:<free port>` and forwards every
//! accepted connection to `127.0.0.1:<upstream_port>` (PostgreSQL, the S3
//! server, ...). Point the code under test at [`Relay::port`] instead of the
//! real server, then break things:
//!
//! - [`Relay::cut_after_server_bytes`]: after exactly `n` more bytes have been
//!   forwarded server→client (summed over all connections), every open
//!   connection is shut down in both directions, in the middle of whatever
//!   message is in flight. One-shot; new connections work normally afterwards.
//! - [`Relay::cut_now`]: shut down every open connection now.
//! - [`Relay::set_refusing`]: accept-and-close new connections while true.
//!
//! ```ignore
//! let relay = Relay::start(pg.port());
//! relay.cut_after_server_bytes(100_000);
//! let err = dump(relay.port()).unwrap_err();
//! assert_eq!(relay.cuts(), 1);
//! ```
//!
//! Plain std threads: one accept thread (non-blocking accept polled every
//! 10 ms, so it notices `Drop`), and per connection one thread per direction,
//! each with a 64 KiB buffer; nothing is queued beyond that. Every socket is
//! registered (as a `try_clone`) so a cut from any thread can
//! `shutdown(Both)` it, which wakes the pump threads blocked on it. `Drop`
//! stops the listener, shuts down every connection and waits (briefly) for
//! the threads to finish.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Size of each pump's buffer.
const BUF: usize = 64 * 1024;
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Limit for connecting to the upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `Drop` waits for the connection threads to finish.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// A TCP relay on 127.0.0.1 that can cut its connections on demand.
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// State of the server→client byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// No cut armed.
    Off,
    /// Cut once this many more server→client bytes have been forwarded.
    Remaining(u64),
    /// The budget is spent and a cut is under way: forward nothing more.
    Cutting,
}

/// The two sockets of one relayed connection (clones, for shutting down).
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
}

impl Conn {
    fn shutdown(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

struct State {
    conns: HashMap<u64, Conn>,
    next_id: u64,
    budget: Budget,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    refusing: AtomicBool,
    connections: AtomicU64,
    cuts: AtomicU64,
    /// Connection and pump threads still running.
    live: AtomicUsize,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking pump thread must not take the whole relay down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shut down every open connection; `counted` adds one to `cuts`,
    /// `disarm` clears a pending byte budget.
    fn cut_all(&self, counted: bool, disarm: bool) {
        let mut st = self.state();
        // Count and disarm first: a client may look at `cuts()` (or open a
        // new connection) the moment it sees its socket close.
        if counted {
            self.cuts.fetch_add(1, Ordering::SeqCst);
        }
        if disarm {
            st.budget = Budget::Off;
        }
        for (_, conn) in st.conns.drain() {
            conn.shutdown();
        }
    }

    /// Take up to `n` bytes from the server→client budget: how many may be
    /// forwarded, and whether this caller must cut afterwards.
    fn take_budget(&self, n: usize) -> (usize, bool) {
        let mut st = self.state();
        match st.budget {
            Budget::Off => (n, false),
            Budget::Cutting => (0, false),
            Budget::Remaining(rem) => {
                if (n as u64) < rem {
                    st.budget = Budget::Remaining(rem - n as u64);
                    (n, false)
                } else {
                    st.budget = Budget::Cutting;
                    (rem as usize, true)
                }
            }
        }
    }
}

/// Counts a running thread in `Shared::live` for as long as it lives.
struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    fn new(shared: &Arc<Shared>) -> LiveGuard {
        shared.live.fetch_add(1, Ordering::SeqCst);
        LiveGuard(Arc::clone(shared))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    /// Listen on 127.0.0.1:<free port>, forward every accepted connection to
    /// 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("relay: set_nonblocking on listener");
        let port = listener.local_addr().expect("relay: local_addr").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            stop: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            state: Mutex::new(State {
                conns: HashMap::new(),
                next_id: 0,
                budget: Budget::Off,
            }),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("relay-{port}-accept"))
                .spawn(move || accept_loop(listener, shared))
                .expect("relay: spawn accept thread")
        };
        Relay {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The port the relay listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// After `n` more bytes flow server→client on any connection (total,
    /// counted from now), drop every open connection abruptly (shutdown both
    /// sockets) in the middle of whatever message is in flight: exactly `n`
    /// bytes are forwarded, then the cut happens. New connections are
    /// accepted and forwarded normally afterwards (one-shot; call again to
    /// re-arm). Calling again before the cut replaces the budget.
    pub fn cut_after_server_bytes(&self, n: u64) {
        self.shared.state().budget = Budget::Remaining(n);
    }

    /// Drop every open connection now. Does not disarm a pending
    /// [`cut_after_server_bytes`](Self::cut_after_server_bytes).
    pub fn cut_now(&self) {
        self.shared.cut_all(true, false);
    }

    /// Refuse (accept-and-close) new connections while true.
    pub fn set_refusing(&self, refuse: bool) {
        self.shared.refusing.store(refuse, Ordering::SeqCst);
    }

    /// Number of connections accepted so far (refused ones included).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Number of cuts performed so far (by a byte budget or `cut_now`).
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.shared.cut_all(false, true);
        let deadline = Instant::now() + DROP_WAIT;
        while self.shared.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                if shared.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let guard = LiveGuard::new(&shared);
                let spawned = thread::Builder::new()
                    .name("relay-conn".into())
                    .spawn(move || serve(client, guard));
                if spawned.is_err() {
                    // The closure (and the client socket) is dropped: closed.
                    continue;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // E.g. EMFILE or ECONNABORTED: back off and keep listening.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Relay one accepted connection: connect upstream, register both sockets,
/// pump server→client on a new thread and client→server on this one.
fn serve(client: TcpStream, guard: LiveGuard) {
    let shared = Arc::clone(&guard.0);
    // Accepted sockets may inherit non-blocking mode from the listener.
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let upstream = match TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            upstream.try_clone().ok()?,
            client.try_clone().ok()?,
            upstream.try_clone().ok()?,
        ))
    })();
    let Some((reg_client, reg_upstream, s2c_client, s2c_upstream)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    let id = {
        let mut st = shared.state();
        // Checked under the lock: `Drop` sets `stop` before draining, so a
        // connection either gets drained or sees `stop` here.
        if shared.stop.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.conns.insert(
            id,
            Conn {
                client: reg_client,
                upstream: reg_upstream,
            },
        );
        id
    };
    // Whichever pump finishes second unregisters the connection.
    let done = Arc::new(AtomicUsize::new(0));
    let finish = {
        let shared = Arc::clone(&shared);
        move |done: &AtomicUsize| {
            if done.fetch_add(1, Ordering::SeqCst) == 1 {
                shared.state().conns.remove(&id);
            }
        }
    };

    let s2c_guard = LiveGuard::new(&shared);
    let s2c_done = Arc::clone(&done);
    let s2c_finish = finish.clone();
    let spawned = thread::Builder::new()
        .name("relay-s2c".into())
        .spawn(move || {
            let guard = s2c_guard;
            pump_server_to_client(&guard.0, s2c_upstream, s2c_client);
            s2c_finish(&s2c_done);
        });
    if spawned.is_err() {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        shared.state().conns.remove(&id);
        return;
    }
    pump(client, upstream);
    finish(&done);
}

/// Client→server: copy until EOF (then half-close upstream) or an error
/// (then shut both sockets down, so the other side notices).
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Server→client: like [`pump`], but every byte is charged to the relay's
/// budget; the pump that spends the last byte forwards exactly up to it and
/// then cuts every connection.
fn pump_server_to_client(shared: &Shared, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                let (allowed, cut) = shared.take_budget(n);
                if allowed > 0 && to.write_all(&buf[..allowed]).is_err() {
                    if cut {
                        shared.cut_all(true, true);
                    }
                    break;
                }
                if cut {
                    shared.cut_all(true, true);
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1024 * 1024;
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A server on 127.0.0.1 that runs `handle` for every connection.
    fn server(handle: fn(TcpStream)) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                thread::spawn(move || handle(s));
            }
        });
        port
    }

    fn echo(mut s: TcpStream) {
        let mut r = s.try_clone().unwrap();
        let _ = std::io::copy(&mut r, &mut s);
        let _ = s.shutdown(Shutdown::Write);
    }

    /// Sends 1 MiB of a known pattern, then closes.
    fn blaster(mut s: TcpStream) {
        let data: Vec<u8> = (0..MB).map(|i| (i % 251) as u8).collect();
        let _ = s.write_all(&data);
        let _ = s.shutdown(Shutdown::Write);
    }

    fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    /// Read until EOF or a connection error; a timeout fails the test.
    fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("read timed out after {} bytes", out.len())
                }
                Err(_) => return out,
            }
        }
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn bytes_flow_both_ways() {
        let relay = Relay::start(server(echo));
        let mut s = connect(relay.port());
        roundtrip(&mut s, b"hello");

        // More than a few buffers each way, concurrently.
        let data: Vec<u8> = (0..MB).map(|i| (i % 253) as u8).collect();
        let mut w = s.try_clone().unwrap();
        let sent = data.clone();
        let writer = thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_all(&mut s);
        writer.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echoed bytes differ");
        assert_eq!(relay.connections(), 1);
        assert_eq!(relay.cuts(), 0);
    }

    #[test]
    fn cut_after_server_bytes_cuts_mid_stream() {
        let relay = Relay::start(server(blaster));
        relay.cut_after_server_bytes(1000);
        let mut s = connect(relay.port());
        let got = read_all(&mut s);
        assert!(
            (1000..=1000 + BUF).contains(&got.len()),
            "got {} bytes",
            got.len()
        );
        let expected: Vec<u8> = (0..got.len()).map(|i| (i % 251) as u8).collect();
        assert!(got == expected, "bytes before the cut are corrupted");
        assert_eq!(relay.cuts(), 1);

        // One-shot: a new connection gets the whole stream.
        let mut s = connect(relay.port());
        assert_eq!(read_all(&mut s).len(), MB);
        assert_eq!(relay.cuts(), 1);
        assert_eq!(relay.connections(), 2);

        // Re-arming works, and a client that also writes is cut too.
        relay.cut_after_server_bytes(200_000);
        let mut s = connect(relay.port());
        let got = read_all(&mut s);
        assert!(
            (200_000..=200_000 + BUF).contains(&got.len()),
            "got {} bytes",
            got.len()
        );
        assert_eq!(relay.cuts(), 2);
    }

    #[test]
    fn cut_after_server_bytes_counts_all_connections() {
        let relay = Relay::start(server(echo));
        let mut a = connect(relay.port());
        let mut b = connect(relay.port());
        roundtrip(&mut a, b"ping");
        roundtrip(&mut b, b"ping");
        relay.cut_after_server_bytes(10);
        roundtrip(&mut a, b"12345");
        // b's reply crosses the budget: 5 bytes get through, then both die.
        b.write_all(b"abcdefgh").unwrap();
        let got = read_all(&mut b);
        assert_eq!(got, b"abcde");
        assert!(read_all(&mut a).is_empty());
        assert_eq!(relay.cuts(), 1);
    }

    #[test]
    fn cut_now_closes_idle_connections() {
        let relay = Relay::start(server(echo));
        let mut a = connect(relay.port());
        let mut b = connect(relay.port());
        roundtrip(&mut a, b"a");
        roundtrip(&mut b, b"b");
        relay.cut_now();
        assert!(read_all(&mut a).is_empty());
        assert!(read_all(&mut b).is_empty());
        assert_eq!(relay.cuts(), 1);
        wait_for("connections to be unregistered", || {
            relay.shared.state().conns.is_empty()
        });

        let mut c = connect(relay.port());
        roundtrip(&mut c, b"still works");
    }

    #[test]
    fn refusing_closes_new_connections_at_once() {
        let relay = Relay::start(server(echo));
        let mut kept = connect(relay.port());
        roundtrip(&mut kept, b"before");

        relay.set_refusing(true);
        let mut s = connect(relay.port());
        let t = Instant::now();
        assert!(read_all(&mut s).is_empty());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Existing connections are untouched.
        roundtrip(&mut kept, b"during");

        relay.set_refusing(false);
        let mut s = connect(relay.port());
        roundtrip(&mut s, b"after");
        assert_eq!(relay.connections(), 3);
        assert_eq!(relay.cuts(), 0);
    }

    #[test]
    fn dead_upstream_closes_the_client() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let relay = Relay::start(port);
        let mut s = connect(relay.port());
        assert!(read_all(&mut s).is_empty());
    }

    #[test]
    fn drop_stops_every_thread() {
        let relay = Relay::start(server(echo));
        let port = relay.port();
        let mut a = connect(port);
        roundtrip(&mut a, b"x");
        let shared = Arc::clone(&relay.shared);
        assert!(shared.live.load(Ordering::SeqCst) >= 2);
        drop(relay);
        assert_eq!(shared.live.load(Ordering::SeqCst), 0);
        assert!(read_all(&mut a).is_empty());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
