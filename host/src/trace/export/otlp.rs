//! The OTLP/HTTP exporter behind [`super`]: one batch span processor for the process,
//! installed once, sending in the background (its own thread) every second.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use super::{Attribute, Kind, Span};
use crate::trace::TraceContext;

/// How often queued spans are sent.
const SEND_EVERY: Duration = Duration::from_secs(1);

/// The process's exporter, once installed.
static PROCESSOR: OnceLock<BatchSpanProcessor> = OnceLock::new();

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint or the HTTP client was refused by the OTLP exporter.
    #[error("cannot export traces to {endpoint}: {reason}")]
    Build {
        /// The collector's traces URL.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// An exporter was installed already, with another endpoint.
    #[error("trace export is already set up for {0}")]
    Installed(String),
}

/// The URL of `endpoint`'s traces (`<endpoint>/v1/traces`, as for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Export this process's spans to the OTLP/HTTP collector at `endpoint` (e.g.
/// `http://127.0.0.1:4318`) as `service`. A second install with the same endpoint does
/// nothing.
pub fn install(endpoint: &str, service: &str) -> Result<(), ExportError> {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    let url = traces_url(endpoint);
    if let Some(installed) = ENDPOINT.get() {
        return match *installed == url {
            true => Ok(()),
            false => Err(ExportError::Installed(installed.clone())),
        };
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(&url)
        .build()
        .map_err(|e| ExportError::Build {
            endpoint: url.clone(),
            reason: e.to_string(),
        })?;
    let mut processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(SEND_EVERY)
                .build(),
        )
        .build();
    processor.set_resource(
        &Resource::builder_empty()
            .with_service_name(service.to_owned())
            .build(),
    );
    if ENDPOINT.set(url.clone()).is_err() || PROCESSOR.set(processor).is_err() {
        return Err(ExportError::Installed(url));
    }
    tracing::info!(endpoint = url, "exporting traces over OTLP/HTTP");
    Ok(())
}

/// Whether [`install`] ran.
pub(super) fn installed() -> bool {
    PROCESSOR.get().is_some()
}

/// Send what is queued now and wait for the collector's answer (blocks the thread).
pub fn flush() {
    if let Some(processor) = PROCESSOR.get()
        && let Err(e) = processor.force_flush()
    {
        tracing::warn!("traces not exported: {e}");
    }
}

fn context(c: &TraceContext, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(c.trace_id),
        SpanId::from_bytes(c.span_id),
        TraceFlags::new(c.flags),
        remote,
        TraceState::default(),
    )
}

/// Queue `span` for the collector.
pub(super) fn export(span: Span) {
    let Some(processor) = PROCESSOR.get() else {
        return;
    };
    let attributes = span
        .attributes
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Attribute::Text(text) => Value::from(text),
                Attribute::Int(n) => Value::from(n),
            };
            KeyValue::new(key, value)
        })
        .collect();
    let links: Vec<Link> = span
        .links
        .iter()
        .map(|l| Link::with_context(context(l, true)))
        .collect();
    let mut links_data = SpanLinks::default();
    links_data.links = links;
    processor.on_end(SpanData {
        span_context: context(&span.context, false),
        parent_span_id: span.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent.is_some(),
        span_kind: match span.kind {
            Kind::Internal => SpanKind::Internal,
            Kind::Consumer => SpanKind::Consumer,
        },
        name: span.name.into(),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: links_data,
        status: span.error.map_or(Status::Ok, Status::error),
        instrumentation_scope: InstrumentationScope::builder("wharf")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    });
}
