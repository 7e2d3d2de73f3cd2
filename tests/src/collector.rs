//! A stand-in OpenTelemetry collector: an OTLP/HTTP endpoint on a free loopback port that
//! keeps every span posted to `/v1/traces` (OTLP's JSON encoding), answering each request.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::served;

/// One received span, its ids as hex.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// `wharf.handle`, `wharf.claim`, ...
    pub name: String,
    /// Its trace.
    pub trace_id: String,
    /// Its own id.
    pub span_id: String,
    /// Its parent's id; empty for a root.
    pub parent_span_id: String,
    /// Its text and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
    /// The (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl Span {
    /// The attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The collector, listening while it lives.
pub struct Collector {
    /// Its base URL, for `[tracing] otlp_endpoint`.
    pub url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    /// Listen on a free loopback port.
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Collector { url, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answer the requests of one connection, keeping the spans of each.
fn serve(stream: TcpStream, spans: &Mutex<Vec<Span>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(request) = served::next(&mut reader) {
        let (path, body) = (request.path, request.body);
        let status = if path.ends_with("/v1/traces") {
            let request: Value = serde_json::from_slice(&body).expect("an OTLP JSON request");
            spans.lock().unwrap().extend(parse(&request));
            "200 OK"
        } else {
            "404 Not Found"
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        writer.write_all(answer.as_bytes()).unwrap();
    }
}

/// The spans of an `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn parse(request: &Value) -> Vec<Span> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut spans = Vec::new();
    for resource in list(&request["resourceSpans"]) {
        for scope in list(&resource["scopeSpans"]) {
            for span in list(&scope["spans"]) {
                let attributes = list(&span["attributes"])
                    .iter()
                    .map(|a| {
                        let value = &a["value"];
                        let value = match (&value["stringValue"], &value["intValue"]) {
                            (Value::String(s), _) => s.clone(),
                            (_, Value::String(n)) => n.clone(),
                            (_, n) => n.to_string(),
                        };
                        (text(&a["key"]), value)
                    })
                    .collect();
                let links = list(&span["links"])
                    .iter()
                    .map(|l| (text(&l["traceId"]), text(&l["spanId"])))
                    .collect();
                spans.push(Span {
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: text(&span["parentSpanId"]),
                    attributes,
                    links,
                });
            }
        }
    }
    spans
}
