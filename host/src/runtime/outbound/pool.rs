//! A plugin's idle HTTP/1.1 connections, by origin, kept for its next requests (a new
//! connection per request costs a TCP, and maybe a TLS, handshake: most of a loopback
//! request's time). Only a connection whose response was read whole is kept; one idle for
//! longer than [`IDLE_FOR`] is dropped (before most servers close theirs), as is one the
//! server closed. A connection is reused only by the plugin that opened it: its resolved
//! address was checked against that plugin's grants.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime_wasi_http::WasiBody;

use super::grants::Scheme;

/// How long a connection is kept idle.
const IDLE_FOR: Duration = Duration::from_secs(2);
/// How many idle connections are kept per origin.
const IDLE_PER_ORIGIN: usize = 16;

/// Sends requests on one connection.
pub(super) type Sender = hyper::client::conn::http1::SendRequest<WasiBody>;

/// Where a connection goes: scheme, host (lowercase) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Origin(pub(super) Scheme, pub(super) String, pub(super) u16);

/// The idle connections of one plugin.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<Origin, Vec<(Sender, Instant)>>>,
}

impl Pool {
    /// An idle connection to `origin`, if one is still open.
    pub(super) fn take(&self, origin: &Origin) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("no panic holds the pool");
        let kept = idle.get_mut(origin)?;
        while let Some((sender, since)) = kept.pop() {
            if since.elapsed() < IDLE_FOR && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keep `sender`'s connection to `origin` for a next request.
    pub(super) fn keep(&self, origin: Origin, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("no panic holds the pool");
        let kept = idle.entry(origin).or_default();
        kept.retain(|(sender, since)| since.elapsed() < IDLE_FOR && !sender.is_closed());
        if kept.len() < IDLE_PER_ORIGIN {
            kept.push((sender, Instant::now()));
        }
    }
}
