//! The message a handler receives, with typed JSON decoding and idempotency keys.

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// One message delivered to a handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Unique id, stable across retries.
    pub id: String,
    /// Message kind, e.g. `order.created`.
    pub kind: String,
    /// Where it came from, e.g. `inbox:orders`.
    pub source: String,
    /// Producer-supplied headers.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub payload: Vec<u8>,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The ordering key the producer gave it, if any.
    pub key: Option<String>,
}

impl Message {
    /// A first-attempt message with a JSON payload, for tests.
    pub fn new(kind: &str, payload: &serde_json::Value) -> Self {
        Self {
            id: "00000000-0000-7000-8000-000000000001".to_owned(),
            kind: kind.to_owned(),
            source: "inbox:test".to_owned(),
            headers: Vec::new(),
            payload: serde_json::to_vec(payload).expect("serialising to a Vec cannot fail"),
            attempt: 1,
            key: None,
        }
    }

    /// This message with ordering key `key`, for tests.
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// Decode the payload as JSON. A payload that does not decode is a *reject* carrying
    /// serde's message: retrying would not make it decode.
    pub fn json<T: DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            crate::reject(format!(
                "payload of {} message {} is not valid: {e}",
                self.kind, self.id
            ))
        })
    }

    /// The value of a header, if present.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Answer this message, a request, with a JSON body (header
    /// `content-type: application/json`). The answer is sent once, when the message is
    /// handled: a retried or redelivered request answers once, a failed call not at all.
    ///
    /// An error (a *reject* when passed on with `?`) when the message is not a request,
    /// when the call answered already, or when the host refuses a header; an answer over
    /// the host's size limits ends the call, as a publish over them does.
    pub fn reply(&self, body: &serde_json::Value) -> crate::Result<()> {
        let payload = serde_json::to_vec(body)
            .map_err(|e| crate::reject(format!("cannot encode the answer: {e}")))?;
        crate::host::reply(&payload, &[("content-type", "application/json")])
    }

    /// Answer this message, a request, with a raw body and `headers` (see
    /// [`Self::reply`]).
    pub fn reply_bytes(&self, payload: &[u8], headers: &[(&str, &str)]) -> crate::Result<()> {
        crate::host::reply(payload, headers)
    }

    /// A key for an effect outside the host, derived from the message id and a label
    /// naming the effect (`"charge-card"`). The same message and label always give the same
    /// key, across retries and redeliveries, so a remote API that deduplicates on it
    /// (e.g. an `Idempotency-Key` header) performs the effect once.
    pub fn idempotency_key(&self, label: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.id.as_bytes())
            .chain_update([0])
            .chain_update(label.as_bytes())
            .finalize();
        hex::encode(&digest[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python SDK's tests expect the same key (`sdk/python/tests/test_sdk.py`).
    #[test]
    fn idempotency_keys_are_the_same_in_every_sdk() {
        let message = Message::new("order.created", &serde_json::json!({}));
        assert_eq!(
            message.idempotency_key("charge-card"),
            "21384e233e6197216949e345fe681ac1"
        );
    }
}
