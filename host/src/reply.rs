//! A request's answer on its way out: where it goes ([`ReplyTo`], read from the request's
//! `reply-to` header), what it is ([`Answering`]: the first a settle meets), and, for an
//! answer to a queue, the message that carries it ([`message`]). That message's id is
//! derived from the request's, so a second answer to one request (an operator's retry
//! of a rejected one) is dropped as a duplicate; it carries the request's correlation id
//! and the answer's status in its headers.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::effects::{Destination, Publish, Reply};
use crate::envelope::Envelope;
use crate::names::{self, InvalidName};

/// The header that makes a message a request: where its answer goes ([`ReplyTo`]:
/// [`CALLER`], `amqp:<queue>`, or an inbox queue).
pub const REPLY_TO_HEADER: &str = "reply-to";

/// [`REPLY_TO_HEADER`] of a request whose caller waits on a host of the fleet
/// (`POST /api/messages/request`, `wharf request`): the answer goes into the `replies`
/// table under the request's id. Not a queue name (those have no `:`).
pub const CALLER: &str = "wharf:caller";

/// The header an answer carries the request's correlation id in: the request's own
/// `correlation-id` header (an AMQP delivery's `correlation_id` property), else its
/// message id. The outbox relay sends it as the AMQP `correlation_id` property.
pub const CORRELATION_HEADER: &str = "correlation-id";

/// The header an answer carries its status in: `answered`, `rejected` (the body is
/// `{"error": "..."}`) or `handled` (no handler answered; the body is `null`).
pub const STATUS_HEADER: &str = "reply-status";

/// `reply-to: amqp:<queue>`: the answer goes to that AMQP queue through the default
/// exchange (an AMQP delivery's `reply_to` property becomes this header).
pub const AMQP_PREFIX: &str = "amqp:";

/// `reply-to: inbox:<queue>` (or a queue name alone): the answer goes into that inbox
/// queue.
const INBOX_PREFIX: &str = "inbox:";

/// Where the answer to a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo<'a> {
    /// A caller waiting on a host of the fleet ([`CALLER`]): the `replies` table.
    Caller,
    /// An inbox queue: inserted into it in the settle's transaction.
    Queue(&'a str),
    /// An AMQP queue (a routing key of the default exchange, Direct Reply-To's
    /// `amq.rabbitmq.reply-to...` included): through the outbox relay, with a confirm.
    Amqp(&'a str),
}

impl<'a> ReplyTo<'a> {
    /// The address a `reply-to` header names.
    pub fn parse(to: &'a str) -> Self {
        if to == CALLER {
            Self::Caller
        } else if let Some(queue) = to.strip_prefix(AMQP_PREFIX) {
            Self::Amqp(queue)
        } else {
            Self::Queue(to.strip_prefix(INBOX_PREFIX).unwrap_or(to))
        }
    }

    /// Whether an answer can go there: the rule its queue's name breaks, if it does.
    pub fn check(self) -> Result<(), InvalidName> {
        match self {
            Self::Caller => Ok(()),
            Self::Queue(queue) => names::queue(queue),
            Self::Amqp("") => names::queue(""),
            Self::Amqp(queue) => names::routing_key(queue),
        }
    }
}

impl Envelope {
    /// Where its answer goes, when it is a request.
    pub fn reply_to(&self) -> Option<ReplyTo<'_>> {
        Some(ReplyTo::parse(self.headers.get(REPLY_TO_HEADER)?))
    }
}

/// What a request was answered: the first of these a settle meets is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Answering<'a> {
    /// A handler's answer.
    Given(&'a Reply),
    /// It was dead-lettered or refused, for this reason.
    Rejected(std::borrow::Cow<'a, str>),
    /// Every plugin handled it and none answered.
    Handled,
}

impl Answering<'_> {
    /// Its status: the `replies.status` column and the [`STATUS_HEADER`].
    pub fn status(&self) -> &'static str {
        match self {
            Self::Given(_) => "answered",
            Self::Rejected(_) => "rejected",
            Self::Handled => "handled",
        }
    }
}

/// The message carrying `answer` to `request`'s reply queue, as a publish (to an inbox
/// queue, or to the default exchange with the AMQP queue as routing key); `None` for a
/// caller on a host (its answer is a `replies` row), a message that is no request, or a
/// reply address that names no queue (the request was refused for it).
/// Its kind is the request's with `.reply` appended (`reply` where that would be too long).
pub fn message(request: &Envelope, answer: &Answering<'_>) -> Option<Publish> {
    let to = request.reply_to()?;
    to.check().ok()?;
    let destination = match to {
        ReplyTo::Caller => return None,
        ReplyTo::Queue(queue) => Destination::Queue(queue.to_owned()),
        ReplyTo::Amqp(queue) => Destination::Exchange {
            exchange: String::new(),
            routing_key: queue.to_owned(),
        },
    };
    let (mut headers, payload) = match answer {
        Answering::Given(reply) => (reply.headers.clone(), reply.payload.clone()),
        Answering::Rejected(error) => {
            let body = serde_json::json!({ "error": error }).to_string();
            (BTreeMap::new(), body.into_bytes())
        }
        Answering::Handled => (BTreeMap::new(), b"null".to_vec()),
    };
    let correlation = (request.headers.get(CORRELATION_HEADER))
        .map_or_else(|| request.id.to_string(), Clone::clone);
    headers.insert(CORRELATION_HEADER.to_owned(), correlation);
    headers.insert(STATUS_HEADER.to_owned(), answer.status().to_owned());
    let kind = format!("{}.reply", request.kind);
    let kind = if names::kind(&kind).is_ok() {
        kind
    } else {
        "reply".to_owned()
    };
    Some(Publish {
        id: id(request.id),
        destination,
        kind,
        headers,
        payload,
        key: None,
    })
}

/// The id of the answer to request `request`: the same for every answer to it.
pub fn id(request: Uuid) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"reply:")
        .chain_update(request.as_bytes())
        .finalize();
    Uuid::new_v8(digest[..16].try_into().expect("sha256 has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_addresses_name_a_caller_an_amqp_queue_or_an_inbox_queue() {
        assert_eq!(ReplyTo::parse(CALLER), ReplyTo::Caller);
        assert_eq!(
            ReplyTo::parse("amqp:rpc.replies"),
            ReplyTo::Amqp("rpc.replies")
        );
        assert_eq!(ReplyTo::parse("inbox:gateway"), ReplyTo::Queue("gateway"));
        assert_eq!(ReplyTo::parse("gateway"), ReplyTo::Queue("gateway"));
        let long = "q".repeat(256);
        for bad in [
            ReplyTo::Amqp(""),
            ReplyTo::Queue(""),
            ReplyTo::Queue("a\u{1b}[2J"),
            ReplyTo::Amqp(&long),
            ReplyTo::Queue(&long),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert!(
            ReplyTo::Amqp("amq.rabbitmq.reply-to.g1h2AA==")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn every_answer_to_one_request_has_one_id() {
        let request = Uuid::now_v7();
        assert_eq!(id(request), id(request));
        assert_ne!(id(request), id(Uuid::now_v7()));
        assert_ne!(id(request), request);
    }
}
