//! A TCP proxy between one device and the server, on a fixed loopback port for the whole
//! scenario: the device always connects to it, the proxy connects to the server's current port
//! (which changes when the server restarts). Cutting the link shuts down every connection
//! through it (both directions); new ones are held unanswered until the link is restored (then
//! connected) or for 10 s (then closed), as over a dead link. No root needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

#[derive(Default)]
struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    stalled: AtomicBool,
    stop: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn drop_connections(&self) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for stream in connections.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The proxy; stops (and drops every connection) when dropped.
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `host` (a free port), forwarding to `upstream`.
    pub fn start(host: &str, upstream: SocketAddr) -> Result<Proxy> {
        Proxy::start_on(TcpListener::bind((host, 0))?, upstream)
    }

    /// Accepts on `listener` (one made inside a network namespace, say), forwarding to
    /// `upstream`.
    pub fn start_on(listener: TcpListener, upstream: SocketAddr) -> Result<Proxy> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        *shared.upstream.lock().unwrap_or_else(|e| e.into_inner()) = Some(upstream);
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(&listener, &accept_shared));
        Ok(Proxy {
            address,
            shared,
            accept: Some(accept),
        })
    }

    /// Where devices connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the proxy connects from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(upstream);
    }

    /// Drops every connection; new ones are held unanswered until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.drop_connections();
    }

    /// Stops forwarding bytes but keeps every connection open: a silent link, which only
    /// heartbeats can notice.
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Lets connections and bytes through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.shared.stalled.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.drop_connections();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let shared = shared.clone();
                std::thread::spawn(move || connect(client, &shared));
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Connects a new client to the server once the link is up and the server reachable. Until
/// then the client is held, unanswered, as over a dead link (its first bytes wait in the
/// kernel, like a retransmitted segment); after 10 s it is closed gracefully. Never a reset:
/// some classic libraries die of a reset during their login.
fn connect(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let mut server = None;
    for _ in 0..200 {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let upstream = *shared.upstream.lock().unwrap_or_else(|e| e.into_inner());
        if !shared.cut.load(Ordering::SeqCst)
            && let Some(upstream) = upstream
            && let Ok(stream) = TcpStream::connect_timeout(&upstream, Duration::from_millis(500))
        {
            server = Some(stream);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(server) = server else {
        close_gracefully(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    );
    let (Ok(client_read), Ok(server_write), Ok(client_keep), Ok(server_keep)) = clones else {
        close_gracefully(client);
        return;
    };
    {
        let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.push(client_keep);
        connections.push(server_keep);
        // A cut while connecting: shut down like the others.
        if shared.cut.load(Ordering::SeqCst) {
            for stream in connections.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
    let (up, down) = (shared.clone(), shared.clone());
    std::thread::spawn(move || pump(client_read, server_write, &up));
    std::thread::spawn(move || pump(server, client, &down));
}

/// Sends FIN, then reads (and drops) what the peer still sends, for at most 1 s, so that the
/// close is not a reset.
fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = [0u8; 1024];
    for _ in 0..10 {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

/// Copies until either side ends, then shuts both down; holds bytes back while stalled.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buffer = [0u8; 4096];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                wait_while_stalled(shared);
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // A silent link carries no FIN either: the other side learns of the end only later.
    wait_while_stalled(shared);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Returns when the stall is lifted, the link is cut, the proxy stops, or after 10 minutes.
fn wait_while_stalled(shared: &Shared) {
    for _ in 0..30_000 {
        if !shared.stalled.load(Ordering::SeqCst)
            || shared.cut.load(Ordering::SeqCst)
            || shared.stop.load(Ordering::SeqCst)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
