//! The span of a handler call, exported over OTLP when export is on (`crate::trace`).

use std::time::SystemTime;

use crate::envelope::Envelope;
use crate::outcome::Verdict;
use crate::runtime::Plugin;
use crate::trace::export::{Kind, Span};
use crate::trace::{self, TraceContext};

/// Export the span of `plugin`'s call on `message`: in the message's trace, a child of
/// the span that published it (its `traceparent`).
pub(super) fn export(
    message: &Envelope,
    plugin: &Plugin,
    attempt: u32,
    context: TraceContext,
    start: SystemTime,
    verdict: &Verdict,
) {
    let (outcome, error) = match verdict {
        Verdict::Handled(_) => ("handled", None),
        Verdict::Retry { error, .. } => ("retry", Some(error.clone())),
        Verdict::Dead { error } => ("dead", Some(error.clone())),
        Verdict::Deferred { .. } | Verdict::RunAtSettle | Verdict::Waits => ("not run", None),
    };
    let mut attributes = trace::message_attributes(message);
    attributes.extend([
        ("wharf.plugin", plugin.name().into()),
        (
            "wharf.plugin.version",
            plugin.manifest.version.as_str().into(),
        ),
        ("wharf.plugin.sha256", plugin.sha256.as_str().into()),
        ("wharf.attempt", u64::from(attempt).into()),
        ("wharf.outcome", outcome.into()),
    ]);
    trace::export::export(Span {
        name: "wharf.handle",
        kind: Kind::Consumer,
        context,
        parent: TraceContext::of(&message.headers).map(|p| p.span_id),
        start,
        end: SystemTime::now(),
        attributes,
        links: Vec::new(),
        error,
    });
}
