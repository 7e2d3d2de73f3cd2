//! A native test harness: run a handler's logic under plain `cargo test`, without wasm,
//! against an in-memory host that behaves like wharf's — effects are buffered during the
//! call and kept only when the handler returns `Ok`.
//!
//! ```text
//! let mut host = TestHost::new().config("threshold", "5");
//! host.handle::<UpdateStock>(&Message::new("order.created", &json!({...}))).unwrap();
//! assert_eq!(host.published().len(), 1);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

pub use crate::requests::Destination;
use crate::requests::Level;
use crate::requests::{HttpError, Request, Response};
use crate::{Message, Outgoing, Plugin};

/// A message the handler published.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Where it goes.
    pub destination: Destination,
    /// Its kind.
    pub kind: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub payload: Vec<u8>,
    /// Its ordering key.
    pub key: Option<String>,
}

impl Published {
    /// The payload decoded as JSON (panics when it is not JSON: this is test code).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("published payload is JSON")
    }
}

/// The answer a handler gave to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub payload: Vec<u8>,
}

impl Reply {
    /// The payload decoded as JSON (panics when it is not JSON: this is test code).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("the answer is JSON")
    }
}

/// A log line the handler wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// Text.
    pub message: String,
}

/// An in-memory wharf host.
#[derive(Debug, Default)]
pub struct TestHost {
    config: BTreeMap<String, String>,
    state: BTreeMap<String, Vec<u8>>,
    published: Vec<Published>,
    logs: Vec<LogLine>,
    answers: Vec<(String, String, Response)>,
    requests: Vec<Request>,
    replies: Vec<Reply>,
    /// Effects of the call in progress.
    pending: Pending,
}

#[derive(Debug, Default)]
struct Pending {
    writes: BTreeMap<String, Option<Vec<u8>>>,
    published: Vec<Published>,
    next_id: u64,
    /// Whether the message handled is a request, and its answer.
    request: bool,
    reply: Option<Reply>,
}

thread_local! {
    static CURRENT: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

/// Run `f` against the host of the call in progress on this thread.
pub(crate) fn with_current<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    CURRENT.with(|c| {
        let mut slot = c.borrow_mut();
        let host = slot
            .as_mut()
            .expect("wharf_sdk host functions called outside TestHost::handle");
        f(host)
    })
}

impl TestHost {
    /// An empty host: no config, no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a config value the plugin can read.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Seed a committed state value.
    pub fn state(mut self, key: &str, value: &[u8]) -> Self {
        self.state.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Run `P::handle` on `message`. On `Ok` the call's state writes and publishes are
    /// committed; on `Err` they are discarded, as the real host does.
    pub fn handle<P: Plugin>(&mut self, message: &Message) -> crate::Result<()> {
        self.run::<P>(message, false)
    }

    /// Run `P::handle` on `message` sent as a request: as [`Self::handle`], and the
    /// answer of a call that returns `Ok` is kept ([`Self::replies`]).
    pub fn request<P: Plugin>(&mut self, message: &Message) -> crate::Result<()> {
        self.run::<P>(message, true)
    }

    fn run<P: Plugin>(&mut self, message: &Message, request: bool) -> crate::Result<()> {
        self.pending.request = request;
        let host = std::mem::take(self);
        CURRENT.with(|c| *c.borrow_mut() = Some(host));
        let outcome = P::handle(message);
        *self = CURRENT
            .with(|c| c.borrow_mut().take())
            .expect("the host is still installed");
        let pending = std::mem::take(&mut self.pending);
        if outcome.is_ok() {
            for (key, value) in pending.writes {
                match value {
                    Some(v) => self.state.insert(key, v),
                    None => self.state.remove(&key),
                };
            }
            self.published.extend(pending.published);
            self.replies.extend(pending.reply);
        }
        outcome
    }

    /// Answer every `method` request to `url` (exactly as the handler writes it) with
    /// `status` and `body`; a request without an answer fails as an unreachable host would.
    pub fn respond(mut self, method: &str, url: &str, status: u16, body: &[u8]) -> Self {
        let response = Response {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        };
        (self.answers).push((method.to_owned(), url.to_owned(), response));
        self
    }

    /// Every HTTP request the handler sent, including those of failed calls.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// Committed state value.
    pub fn state_value(&self, key: &str) -> Option<&[u8]> {
        self.state.get(key).map(Vec::as_slice)
    }

    /// Committed state value decoded as JSON.
    pub fn state_json(&self, key: &str) -> Option<serde_json::Value> {
        self.state
            .get(key)
            .map(|v| serde_json::from_slice(v).expect("state value is JSON"))
    }

    /// Messages published by successful calls.
    pub fn published(&self) -> &[Published] {
        &self.published
    }

    /// Answers of successful calls to requests ([`Self::request`]).
    pub fn replies(&self) -> &[Reply] {
        &self.replies
    }

    /// Every log line, including those of failed calls.
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }

    pub(crate) fn log(&mut self, level: Level, message: &str, _fields: &[(&str, &str)]) {
        self.logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    }

    pub(crate) fn publish(&mut self, message: Outgoing, payload: &[u8]) -> crate::Result<String> {
        self.pending.next_id += 1;
        self.pending.published.push(Published {
            destination: message.destination,
            kind: message.kind,
            headers: message.headers,
            payload: payload.to_owned(),
            key: message.key,
        });
        Ok(format!("test-{}", self.pending.next_id))
    }

    /// As the host answers: one answer per call, to a request only.
    pub(crate) fn reply(&mut self, payload: &[u8], headers: &[(&str, &str)]) -> crate::Result<()> {
        if !self.pending.request {
            return Err(crate::reject(
                "this message is not a request: no one waits for an answer",
            ));
        }
        if self.pending.reply.is_some() {
            return Err(crate::reject("this call answered the request already"));
        }
        self.pending.reply = Some(Reply {
            headers: (headers.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            payload: payload.to_owned(),
        });
        Ok(())
    }

    pub(crate) fn state_get(&self, key: &str) -> Option<Vec<u8>> {
        match self.pending.writes.get(key) {
            Some(written) => written.clone(),
            None => self.state.get(key).cloned(),
        }
    }

    pub(crate) fn state_set(&mut self, key: &str, value: &[u8]) {
        self.pending
            .writes
            .insert(key.to_owned(), Some(value.to_owned()));
    }

    pub(crate) fn state_delete(&mut self, key: &str) {
        self.pending.writes.insert(key.to_owned(), None);
    }

    pub(crate) fn config_get(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    pub(crate) fn http_send(&mut self, request: &Request) -> Result<Response, HttpError> {
        self.requests.push(request.clone());
        let answer = (self.answers.iter())
            .find(|(method, url, _)| *method == request.method && *url == request.url);
        match answer {
            Some((_, _, response)) => Ok(response.clone()),
            None => Err(HttpError(format!(
                "TestHost has no answer for {} {}; give one with TestHost::respond",
                request.method, request.url
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Destination, TestHost};
    use crate::{Manifest, Message, Outgoing, Plugin, Result, publish_to_topic, retry};

    /// Answers with the message's attempt; asks for a retry on the first.
    struct Answers;

    impl Plugin for Answers {
        fn manifest() -> Manifest {
            Manifest::new("answers", "1.0.0").subscribe("ask")
        }

        fn handle(message: &Message) -> Result<()> {
            message.reply(&json!({ "attempt": message.attempt }))?;
            if message.reply_bytes(b"again", &[]).is_ok() {
                return Err(crate::reject("a second answer was taken"));
            }
            if message.attempt == 1 {
                return Err(retry("once more"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_request_keeps_the_answer_of_its_successful_call_only() {
        let mut host = TestHost::new();
        let mut message = Message::new("ask", &json!({}));
        assert!(host.request::<Answers>(&message).is_err());
        assert!(
            host.replies().is_empty(),
            "a failed call's answer is dropped"
        );
        message.attempt = 2;
        host.request::<Answers>(&message).unwrap();
        assert_eq!(host.replies().len(), 1);
        assert_eq!(host.replies()[0].json(), json!({ "attempt": 2 }));
        assert_eq!(
            host.replies()[0].headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
    }

    #[test]
    fn a_message_that_is_not_a_request_cannot_be_answered() {
        let mut host = TestHost::new();
        let mut message = Message::new("ask", &json!({}));
        message.attempt = 2;
        let error = host.handle::<Answers>(&message).unwrap_err();
        assert!(error.to_string().contains("not a request"), "{error}");
        assert!(host.replies().is_empty());
    }

    /// Ships an order: a record keyed by the order to a Kafka topic.
    struct Shipper;

    impl Plugin for Shipper {
        fn manifest() -> Manifest {
            Manifest::new("shipper", "1.0.0").subscribe("order.*")
        }

        fn handle(message: &Message) -> Result<()> {
            let body: serde_json::Value = message.json()?;
            let order = body["order"].as_str().unwrap_or_default();
            publish_to_topic("shipments", order, "order.shipped", &json!({}))?;
            Outgoing::topic("audit", "order.seen").send(&json!({}))?;
            Ok(())
        }
    }

    #[test]
    fn a_record_for_a_topic_keeps_its_topic_and_key() {
        let mut host = TestHost::new();
        host.handle::<Shipper>(&Message::new("order.paid", &json!({ "order": "o-7" })))
            .unwrap();
        let sent: Vec<_> = (host.published().iter())
            .map(|p| (&p.destination, p.key.as_deref()))
            .collect();
        assert_eq!(
            sent,
            [
                (&Destination::Topic("shipments".into()), Some("o-7")),
                (&Destination::Topic("audit".into()), None),
            ]
        );
    }
}
