//! A TCP proxy between a server under test and its database, that a test
//! can cut (every connection reset, new ones refused), hold (nothing
//! forwarded and nothing closed: a partition as the kernel without netem
//! cannot make one) and restore: a database outage without touching the
//! shared database server. A hold can also be set to begin at a given
//! moment of the conversation: when bytes carrying given markers have
//! passed, in order, each in its direction (a claim's answer naming ids, an
//! ack sending them). The markers are only seen in the clear: a test using
//! them connects without TLS.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the server under test to the database: statements.
    ToDatabase,
    /// From the database back: answers.
    FromDatabase,
}

/// A hold armed to begin when the last of these markers passes its
/// direction, the others having passed theirs before, in order.
type Trigger = Arc<Mutex<std::collections::VecDeque<(Direction, Vec<u8>)>>>;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
    trigger: Trigger,
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
        let trigger = Trigger::default();
        let (cut2, stop2, open2, held2) = (cut.clone(), stop.clone(), open.clone(), held.clone());
        let trigger2 = trigger.clone();
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
                let trigger = trigger2.clone();
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
                    let to_database = Pipe {
                        direction: Direction::ToDatabase,
                        held: held.clone(),
                        trigger: trigger.clone(),
                    };
                    to_database.run(client.try_clone().unwrap(), server.try_clone().unwrap());
                    let from_database = Pipe {
                        direction: Direction::FromDatabase,
                        held,
                        trigger,
                    };
                    from_database.run(server, client);
                });
            }
        });
        Proxy {
            addr,
            cut,
            held,
            trigger,
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

    /// Holds (as [`Proxy::hold`]) from the moment bytes containing the
    /// last of `steps`' markers go its direction, those bytes included,
    /// once bytes with each earlier marker went theirs, in order (on any of
    /// the proxied connections). An empty marker is any bytes. Once.
    pub fn hold_when(&self, steps: &[(Direction, &[u8])]) {
        *self.trigger.lock().unwrap() = steps
            .iter()
            .map(|(direction, marker)| (*direction, marker.to_vec()))
            .collect();
    }

    /// Whether a hold set by [`Proxy::hold_when`] has begun.
    pub fn holding(&self) -> bool {
        self.held.load(Ordering::Relaxed)
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

/// One direction of a proxied connection.
struct Pipe {
    direction: Direction,
    held: Arc<AtomicBool>,
    trigger: Trigger,
}

impl Pipe {
    /// Copies `from` to `to` until either side closes; what arrives while
    /// held waits until it is not. Bytes carrying an armed trigger's marker
    /// begin the hold before they go (the marker is looked for across
    /// reads too).
    fn run(self, mut from: TcpStream, mut to: TcpStream) {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut tail: Vec<u8> = Vec::new();
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tail.extend_from_slice(&buf[..n]);
                        self.fire(&tail);
                        tail.drain(..tail.len().saturating_sub(64));
                        wait_while(&self.held);
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

    /// Takes the armed trigger's next step if `bytes` go its way and carry
    /// its marker; the last step begins the hold.
    fn fire(&self, bytes: &[u8]) {
        let mut steps = self.trigger.lock().unwrap();
        let passes = steps.front().is_some_and(|(direction, marker)| {
            *direction == self.direction
                && (marker.is_empty() || bytes.windows(marker.len()).any(|w| w == marker))
        });
        if passes {
            steps.pop_front();
            if steps.is_empty() {
                self.held.store(true, Ordering::Relaxed);
            }
        }
    }
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
