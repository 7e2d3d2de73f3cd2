//! What a call's requests did (method, where to, status or why none, how long), kept with
//! the attempt when it fails: a retry's or a trap's reason says which service answered
//! what, or did not answer in time. Only the scheme, host and port are kept of a URL (its
//! path or query may hold what a log should not).

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many requests an attempt's reason lists.
const LISTED: usize = 5;

/// The requests of one call so far, shared with the requests in flight.
#[derive(Clone, Default)]
pub(in crate::runtime) struct Audit(Arc<Mutex<Vec<Entry>>>);

struct Entry {
    method: http::Method,
    /// `scheme://host:port`.
    origin: String,
    started: Instant,
    /// The status (or `refused`, `timeout`, `error`) and when it came.
    ended: Option<(String, Duration)>,
}

impl Audit {
    /// A request to `uri` began; its entry's index.
    pub(super) fn begin(&self, method: &http::Method, uri: &http::Uri) -> usize {
        let origin = match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            },
            _ => "(no host)".to_owned(),
        };
        let mut entries = self.0.lock().expect("no panic holds the audit");
        entries.push(Entry {
            method: method.clone(),
            origin,
            started: Instant::now(),
            ended: None,
        });
        entries.len() - 1
    }

    /// Request `entry` ended with `status`.
    pub(super) fn end(&self, entry: usize, status: &str) {
        let mut entries = self.0.lock().expect("no panic holds the audit");
        if let Some(e) = entries.get_mut(entry) {
            e.ended = Some((status.to_owned(), e.started.elapsed()));
        }
    }

    /// `requests: POST https://api.example.com 503 in 12 ms; ...`, or `None` for a call
    /// that made none.
    pub(in crate::runtime) fn describe(&self) -> Option<String> {
        let entries = self.0.lock().expect("no panic holds the audit");
        if entries.is_empty() {
            return None;
        }
        let mut text = String::from("requests:");
        for (i, e) in entries.iter().take(LISTED).enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            let _ = match &e.ended {
                Some((status, took)) => write!(
                    text,
                    "{sep}{} {} {status} in {} ms",
                    e.method,
                    e.origin,
                    took.as_millis()
                ),
                None => write!(
                    text,
                    "{sep}{} {} no answer after {} ms",
                    e.method,
                    e.origin,
                    e.started.elapsed().as_millis()
                ),
            };
        }
        if entries.len() > LISTED {
            let _ = write!(text, "; and {} more", entries.len() - LISTED);
        }
        Some(text)
    }
}
