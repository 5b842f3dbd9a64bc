//! An HTTP receiver on 127.0.0.1 for webhooks and purges: it records every
//! request (method, path, headers, body, when) and answers as the test
//! decides, per request: a status, a hang past the sender's timeout, or
//! nothing at all (the port closed until [`Receiver::start_on`]). One
//! thread per connection, `Connection: close` on every answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// The status it was answered with (`None`: hung up on).
    pub status: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// How to answer one request.
pub enum Answer {
    Status(u16),
    Json(u16, serde_json::Value),
    /// Hold the connection this long, then close it without an answer.
    Hang(Duration),
}

type Decide = dyn Fn(&Received, usize) -> Answer + Send + Sync;

pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// A receiver on a free port; `decide` gets each request and how many
    /// came before it.
    pub fn start(decide: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static) -> Receiver {
        Receiver::serve(TcpListener::bind("127.0.0.1:0").unwrap(), Arc::new(decide))
    }

    /// A receiver that answers 200 to everything.
    pub fn ok() -> Receiver {
        Receiver::start(|_, _| Answer::Status(200))
    }

    /// A receiver on `port` (one that refused connections until now).
    pub fn start_on(
        port: u16,
        decide: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::serve(
            TcpListener::bind(("127.0.0.1", port)).unwrap(),
            Arc::new(decide),
        )
    }

    fn serve(listener: TcpListener, decide: Arc<Decide>) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true).unwrap();
        let (log, stopping) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (log, decide) = (log.clone(), decide.clone());
                        std::thread::spawn(move || answer(stream, &log, &*decide));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            addr,
            received,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A port on 127.0.0.1 where nothing listens (yet).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn answer(stream: TcpStream, log: &Mutex<Vec<Received>>, decide: &Decide) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut request = Received {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        status: None,
    };
    let nth = log.lock().unwrap().len();
    let decision = decide(&request, nth);
    let mut stream = stream;
    let (status, body) = match decision {
        Answer::Hang(hold) => {
            log.lock().unwrap().push(request);
            std::thread::sleep(hold);
            return;
        }
        Answer::Status(status) => (status, String::new()),
        Answer::Json(status, body) => (status, body.to_string()),
    };
    request.status = Some(status);
    log.lock().unwrap().push(request);
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}
