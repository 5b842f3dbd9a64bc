//! A TCP proxy between a server under test and its database, that a test
//! can cut (every connection reset, new ones refused), hold (nothing
//! forwarded and nothing closed: a partition as the kernel without netem
//! cannot make one) and restore: a database outage without touching the
//! shared database server.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let open = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(AtomicBool::new(false));
        let (cut2, stop2, open2, held2) = (cut.clone(), stop.clone(), open.clone(), held.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                // While held, new connections wait in the kernel's backlog
                // (their handshake done, no server's word ever coming), as
                // through a blackholed network; none costs a thread here.
                if held2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if cut2.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let (open, held, cut) = (open2.clone(), held2.clone(), cut2.clone());
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(target) else {
                        return;
                    };
                    // Under the lock `cut` drains: a connection made while
                    // the proxy was being cut is dropped, not left working.
                    let mut open = open.lock().unwrap();
                    if cut.load(Ordering::Relaxed) {
                        return;
                    }
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                    pipe(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        held.clone(),
                    );
                    pipe(server, client, held);
                });
            }
        });
        Proxy {
            addr,
            cut,
            held,
            stop,
            open,
        }
    }

    /// Resets every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
    }

    /// Forwards nothing and closes nothing: bytes wait, and new connections
    /// are left waiting in the backlog, until [`Proxy::restore`].
    pub fn hold(&self) {
        self.held.store(true, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
        self.cut();
    }
}

fn wait_while(held: &AtomicBool) {
    while held.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Copies `from` to `to` until either side closes; what arrives while
/// `held` waits until it is not.
fn pipe(mut from: TcpStream, mut to: TcpStream, held: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    wait_while(&held);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// `url` with its `host:port` replaced by `addr`, and that `host:port`.
pub fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let start = url
        .find('@')
        .map(|at| at + 1)
        .unwrap_or_else(|| url.find("://").unwrap() + 3);
    let end = start + url[start..].find('/').unwrap();
    let target = url[start..end].to_socket_addrs().unwrap().next().unwrap();
    (format!("{}{addr}{}", &url[..start], &url[end..]), target)
}
