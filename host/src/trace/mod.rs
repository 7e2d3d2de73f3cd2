//! W3C trace context: a message's `traceparent` header followed through wharf. A handler
//! call continues the message's trace with a span of its own (or starts a trace when the
//! message has none): its ids tag the call's logs, the plugin sees them as the message's
//! `traceparent`, and every message it publishes carries them unless it set its own.
//!
//! A message that arrives without one gets a new trace when it is claimed or delivered
//! (its `traceparent` header is set, so its calls, publishes and dead letter share it).
//! With OTLP export on ([`export`]), the host's spans go to a collector: a batch's claim
//! and settle (linked to each message's trace), each handler call (in the message's trace)
//! and the root of each trace the host starts.
//!
//! `traceparent` is `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`
//! (<https://www.w3.org/TR/trace-context/>).

pub mod config;
pub mod export;

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use crate::envelope::Envelope;
use crate::store::SettleSummary;
use export::{Attribute, Kind, Span};

/// The header that carries the context.
pub const HEADER: &str = "traceparent";

/// A trace id, a span id in it, and the trace flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, shared by every hop of a message's path.
    pub trace_id: [u8; 16],
    /// This hop's span.
    pub span_id: [u8; 8],
    /// Trace flags, passed on as received.
    pub flags: u8,
}

impl TraceContext {
    /// Parse a `traceparent` value; `None` when it is not one (a version `ff`, ids of zeros,
    /// wrong lengths or characters). Later versions are read by their first four fields,
    /// as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.trim().split('-');
        let (version, trace, span, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        if version == "00" && fields.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let [flags] = hex_bytes::<1>(flags)?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The context a message with `headers` carries, if it carries a valid one.
    pub fn of(headers: &BTreeMap<String, String>) -> Option<Self> {
        headers.get(HEADER).and_then(|v| Self::parse(v))
    }

    /// The root of a new trace (sampled).
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(),
            span_id: nonzero(),
            flags: 1,
        }
    }

    /// The context of a handler call on a message with `headers`: a new span in the
    /// message's trace, or in a new trace (sampled) when it carries none.
    pub fn for_call(headers: &BTreeMap<String, String>) -> Self {
        let span_id = nonzero();
        match Self::of(headers) {
            Some(parent) => Self { span_id, ..parent },
            None => Self {
                span_id,
                ..Self::root()
            },
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }
}

/// The `traceparent` value: this span as the parent of what follows it. Written from one
/// stack buffer: it is formatted for every handler call.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let hex = |bytes: &[u8], out: &mut [u8]| {
            hex::encode_to_slice(bytes, out).expect("the buffer fits the ids")
        };
        hex(&self.trace_id, &mut text[3..35]);
        hex(&self.span_id, &mut text[36..52]);
        hex(&[self.flags], &mut text[53..55]);
        f.write_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }
}

/// Start a trace for each of `messages` that carries none: its `traceparent` becomes the
/// root of a new trace (exported as a `wharf.receive` span), so its handler calls and what
/// they publish share one trace.
pub fn start_missing(messages: &mut [Envelope]) {
    let now = SystemTime::now();
    for message in messages {
        if TraceContext::of(&message.headers).is_some() {
            continue;
        }
        let root = TraceContext::root();
        message.headers.insert(HEADER.to_owned(), root.to_string());
        if export::enabled() {
            export::export(Span {
                name: "wharf.receive",
                kind: Kind::Consumer,
                context: root,
                parent: None,
                start: now,
                end: now,
                attributes: message_attributes(message),
                links: Vec::new(),
                error: None,
            });
        }
    }
}

/// A batch's span (`wharf.claim`, `wharf.settle`) from `start` to now, linked to the
/// trace of each of `messages`; exported when export is on.
pub fn batch_span<'a>(
    name: &'static str,
    start: SystemTime,
    messages: impl IntoIterator<Item = &'a Envelope>,
    attributes: impl FnOnce() -> Vec<(&'static str, Attribute)>,
) {
    if !export::enabled() {
        return;
    }
    export::export(Span {
        name,
        kind: Kind::Internal,
        context: TraceContext::root(),
        parent: None,
        start,
        end: SystemTime::now(),
        attributes: attributes(),
        links: messages
            .into_iter()
            .filter_map(|m| TraceContext::of(&m.headers))
            .collect(),
        error: None,
    });
}

/// What a settle span says of what the settle did.
pub fn settle_attributes(summary: &SettleSummary) -> Vec<(&'static str, Attribute)> {
    vec![
        ("wharf.handled", summary.handled.into()),
        ("wharf.retried", summary.retried.into()),
        ("wharf.dead", summary.dead.into()),
        ("wharf.deferred", summary.deferred.into()),
        ("wharf.fenced", summary.fenced.into()),
        ("wharf.duplicates", summary.duplicates.into()),
    ]
}

/// What a span says of one message.
pub fn message_attributes(message: &Envelope) -> Vec<(&'static str, Attribute)> {
    vec![
        ("messaging.message.id", message.id.to_string().into()),
        ("messaging.destination.name", message.source().into()),
        ("wharf.kind", message.kind.clone().into()),
    ]
}

/// `N` bytes from exactly `2 * N` lowercase or uppercase hex digits.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    (text.len() == 2 * N).then_some(())?;
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// Random bytes, not all zero (an id of zeros is invalid).
fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_call_continues_the_messages_trace_with_a_span_of_its_own() {
        let headers = BTreeMap::from([(HEADER.to_owned(), PARENT.to_owned())]);
        let call = TraceContext::for_call(&headers);
        assert_eq!(call.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(call.span_id(), "00f067aa0ba902b7");
        assert_eq!(call.flags, 1);
        let header = call.to_string();
        assert_eq!(TraceContext::parse(&header), Some(call));
        let parent = TraceContext::parse(PARENT).unwrap();
        assert_eq!(parent.to_string(), PARENT);
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[test]
    fn a_message_without_a_valid_one_starts_a_trace() {
        for value in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(value), None, "{value:?}");
            let headers = BTreeMap::from([(HEADER.to_owned(), value.to_owned())]);
            let call = TraceContext::for_call(&headers);
            assert_ne!(call.trace_id, [0; 16]);
            assert_eq!(call.flags, 1);
        }
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later")
                .is_some(),
            "a later version's extra fields are ignored"
        );
    }
}
