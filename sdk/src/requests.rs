//! What a handler asks of its host besides its verdict, shared by the WIT imports
//! (`host`) and the native test host (`testing`): the severity of a log line, where a
//! published message goes, and an HTTP exchange (made by [`crate::http`]).

use std::fmt;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the handler coped with.
    Warn,
    /// A failure.
    Error,
}

/// Where a published message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An inbox queue.
    Queue(String),
    /// An AMQP exchange with a routing key.
    Exchange {
        /// Exchange name.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// A Kafka topic (the message's key is the record's key).
    Topic(String),
}

/// An HTTP request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

/// A response, read whole (within the host's `max_http_response_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a request got no response: refused by the host (not granted, a limit), or the
/// connection failed or timed out. A handler's `?` turns it into a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// A URL cut into what `wasi:http` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path_and_query: &'a str,
}

impl<'a> Url<'a> {
    pub(crate) fn parse(url: &'a str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError(format!("{url:?} is not an http(s) URL: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let path_and_query = match path_and_query {
            "" => "/",
            p => p,
        };
        Ok(Self {
            scheme,
            authority,
            path_and_query,
        })
    }
}
