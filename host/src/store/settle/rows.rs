//! The rows a [`super::SettlePlan`] holds, borrowed from the batch it was built from.

use std::borrow::Cow;
use std::time::Duration;

use uuid::Uuid;

use crate::effects::Publish;
use crate::envelope::Envelope;
use crate::reply::Answering;
use crate::store::PluginVersion;
use crate::store::outbox::Route;

/// A message published to an AMQP exchange or a Kafka topic (or an answer to an AMQP
/// queue), for the outbox.
pub(crate) struct OutboxRow<'a> {
    /// The message whose handler published it.
    pub source: Uuid,
    /// That handler's plugin (empty for an answer).
    pub plugin: &'a str,
    /// Id, exchange and routing key or topic and key, kind, headers and payload.
    pub publish: Cow<'a, Publish>,
}

impl OutboxRow<'_> {
    /// Where it goes.
    pub(crate) fn route(&self) -> Route<'_> {
        Route::of(&self.publish.destination, self.publish.key.as_deref())
            .expect("an outbox row goes to an exchange or a topic")
    }
}

/// The answer to a request whose caller waits on a host, for the `replies` table.
pub(crate) struct ReplyRow<'a> {
    /// The request.
    pub request: Uuid,
    /// What it was answered.
    pub answer: Answering<'a>,
}

/// The final value of a written state key.
pub(crate) struct StateWrite<'a> {
    /// `None` deletes the key.
    pub value: Option<&'a [u8]>,
    /// Its new version.
    pub version: i64,
}

/// One failed attempt, for the message's history.
pub(crate) struct AttemptRow<'a> {
    /// The message.
    pub message: Uuid,
    /// The plugin that failed it, in the version that ran.
    pub plugin: &'a PluginVersion,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// Its error.
    pub error: Cow<'a, str>,
    /// Wait before the next attempt; `None` for the final one.
    pub delay: Option<Duration>,
}

/// A (message, plugin) pair that gave up: a failed-message row. A message failed again by
/// the same plugin adds its attempts to the existing row.
pub(crate) struct DeadRow<'a> {
    /// The message as it was claimed or delivered.
    pub message: &'a Envelope,
    /// The plugin that gave up on it (empty when the message was refused).
    pub plugin: &'a PluginVersion,
    /// Attempts made.
    pub attempts: u32,
    /// The final error.
    pub error: Cow<'a, str>,
}

/// A message that stays for another attempt.
pub(crate) struct Stay<'a> {
    /// The message.
    pub message: &'a Envelope,
    /// Whether the attempt counts (false for stale reads and deferred plugins).
    pub counts: bool,
    /// Wait before it is due: the longest delay any of its plugins asked for.
    pub delay: Duration,
    /// For a keyed message claimed with keys kept in order: the ordered plugins that
    /// still owe it a verdict, space-separated (`inbox.holds`); `None` otherwise.
    pub holds: Option<String>,
}

impl<'a> Stay<'a> {
    /// `messages` going back as they came (a held claim handed over to leases): due at
    /// once, no attempt counted.
    pub(crate) fn unchanged(messages: &'a [Envelope]) -> Vec<Stay<'a>> {
        messages
            .iter()
            .map(|message| Stay {
                message,
                counts: false,
                delay: Duration::ZERO,
                holds: message.turn.as_ref().and_then(|t| t.holds.clone()),
            })
            .collect()
    }
}
