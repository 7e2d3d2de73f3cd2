//! The host's spans sent to an OpenTelemetry collector over OTLP/HTTP (JSON), when wharf
//! is built with the `otlp` feature and `[tracing] otlp_endpoint` is set. Spans are built
//! with the ids wharf hands on in `traceparent` headers, so a plugin's publishes point at
//! the exported span of the call that made them. Without the feature, or before
//! `install`, nothing is built or sent.

use std::time::SystemTime;

use super::TraceContext;

/// What a span stands for (OTLP's span kinds that wharf uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside the host: a batch's claim or settle.
    Internal,
    /// Taking in or handling a message.
    Consumer,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
}

impl From<String> for Attribute {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Attribute {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<u64> for Attribute {
    fn from(n: u64) -> Self {
        Self::Int(n as i64)
    }
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its name (`wharf.claim`, `wharf.handle`, ...).
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its trace and its own span id.
    pub context: TraceContext,
    /// The span it continues, in the same trace; `None` for a root.
    pub parent: Option<[u8; 8]>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// What it says.
    pub attributes: Vec<(&'static str, Attribute)>,
    /// Spans of other traces it worked for (a batch's messages).
    pub links: Vec<TraceContext>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

#[cfg(feature = "otlp")]
mod otlp;
#[cfg(feature = "otlp")]
pub use otlp::{ExportError, flush, install};

/// Whether spans are exported (built with `otlp` and installed).
pub fn enabled() -> bool {
    #[cfg(feature = "otlp")]
    return otlp::installed();
    #[cfg(not(feature = "otlp"))]
    return false;
}

/// Send `span` to the collector (batched, in the background); see [`enabled`].
pub fn export(span: Span) {
    #[cfg(feature = "otlp")]
    otlp::export(span);
    #[cfg(not(feature = "otlp"))]
    drop(span);
}
