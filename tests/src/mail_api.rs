//! A stand-in mail API on a free loopback port, for handlers that call other services:
//! it keeps every request (path, `Idempotency-Key`, body) and answers by path:
//! `/send` 200, `/slow` 200 after 2 s, `/wait` 200 after 100 ms (counting how many
//! wait at once), `/slow-once` 200 after 5 s the first time and at once after, `/big` 200 with a 2 MiB body, `/fail` 503,
//! `/redirect?to=URL` 307 to URL; anything else 404.

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::served;

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
    /// Connections accepted.
    connections: AtomicUsize,
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
                counted.connections.fetch_add(1, Ordering::SeqCst);
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

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.waiting.connections.load(Ordering::SeqCst)
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
    while let Some(request) = served::next(&mut reader) {
        let path = request.path.clone();
        received.lock().unwrap().push(Received {
            path: path.clone(),
            key: request
                .header("idempotency-key")
                .unwrap_or_default()
                .to_owned(),
            body: request.body,
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
        let mut answer = format!(
            "HTTP/1.1 {status}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}
