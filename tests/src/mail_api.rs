//! A stand-in mail API on a free loopback port, for handlers that call other services:
//! it keeps every request (path, `Idempotency-Key`, body) and answers by path:
//! `/send` 200, `/slow` 200 after 2 s, `/wait` 200 after 100 ms (counting how many
//! wait at once), `/slow-once` 200 after 5 s the first time and at once after, `/big` 200 with a 2 MiB body, `/fail` 503,
//! `/redirect?to=URL` 307 to URL; anything else 404.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Its path and query.
    pub path: String,
    /// Its `Idempotency-Key`, empty without one.
    pub key: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// The server, listening while it lives.
pub struct MailApi {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    waiting: Arc<Waiting>,
}

/// Requests to `/wait` in progress, and the most there were at once.
#[derive(Default)]
struct Waiting {
    now: AtomicUsize,
    most: AtomicUsize,
    /// Whether `/slow-once` was slow already.
    slowed: AtomicBool,
}

impl MailApi {
    /// Listen on a free loopback port.
    pub fn start() -> MailApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let waiting = Arc::new(Waiting::default());
        let (kept, counted) = (received.clone(), waiting.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, counted) = (kept.clone(), counted.clone());
                std::thread::spawn(move || serve(stream, &kept, &counted));
            }
        });
        MailApi {
            url: format!("http://127.0.0.1:{port}"),
            port,
            received,
            waiting,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The most requests to `/wait` in progress at once so far.
    pub fn most_waiting(&self) -> usize {
        self.waiting.most.load(Ordering::SeqCst)
    }

    /// The distinct idempotency keys received so far.
    pub fn keys(&self) -> BTreeSet<String> {
        self.received().into_iter().map(|r| r.key).collect()
    }
}

/// Answer the requests of one connection.
fn serve(stream: TcpStream, received: &Mutex<Vec<Received>>, waiting: &Waiting) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut length, mut key) = (0, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                } else if name.eq_ignore_ascii_case("idempotency-key") {
                    key = value.trim().to_owned();
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        received.lock().unwrap().push(Received {
            path: path.clone(),
            key,
            body,
        });
        let (status, extra, body) = match path.split('?').next().unwrap_or("") {
            "/send" => ("200 OK", String::new(), b"{\"queued\":true}".to_vec()),
            "/slow" => {
                std::thread::sleep(Duration::from_secs(2));
                ("200 OK", String::new(), b"{}".to_vec())
            }
            "/slow-once" => {
                if waiting.slowed.swap(true, Ordering::SeqCst) {
                    ("200 OK", String::new(), b"{}".to_vec())
                } else {
                    std::thread::sleep(Duration::from_secs(5));
                    ("200 OK", String::new(), b"{}".to_vec())
                }
            }
            "/wait" => {
                let now = waiting.now.fetch_add(1, Ordering::SeqCst) + 1;
                waiting.most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                waiting.now.fetch_sub(1, Ordering::SeqCst);
                ("200 OK", String::new(), b"{}".to_vec())
            }
            "/big" => ("200 OK", String::new(), vec![b'x'; 2 << 20]),
            "/fail" => ("503 Service Unavailable", String::new(), b"{}".to_vec()),
            "/redirect" => {
                let to = path.split_once("?to=").map_or("", |(_, to)| to);
                (
                    "307 Temporary Redirect",
                    format!("location: {to}\r\n"),
                    Vec::new(),
                )
            }
            _ => ("404 Not Found", String::new(), b"{}".to_vec()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}
