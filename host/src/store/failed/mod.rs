//! Dead letters as the stores hand them out: a failed message with its status and
//! history, which of them an operator selects (`filter`: a filter turned into SQL for both
//! databases, and pages) and what a retry sends back.

mod filter;
mod read;
mod send_back;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Result;
use super::sql::SqlStore;

pub use filter::{FailedFilter, FailedPage, MAX_SELECTED_IDS, Operation, PageRequest, parse_time};
pub(super) use send_back::send_back;

/// Status of a failed message, mirrored by a CHECK constraint in SQL. An operator retries
/// `pending` and `failed` ones and deletes any but a `retrying` one (`Operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailedStatus {
    /// Recorded, waiting for an operator.
    Pending,
    /// Sent back to its queue (or the outbox) by a retry: neither retried nor deleted
    /// until it settles (`resolved`, or `failed` again) or its queue is purged (`failed`).
    Retrying,
    /// Dead-lettered.
    Failed,
    /// Handled after a retry.
    Resolved,
}

impl FailedStatus {
    /// The SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Resolved => "resolved",
        }
    }

    /// Parse the SQL spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "retrying" => Self::Retrying,
            "failed" => Self::Failed,
            "resolved" => Self::Resolved,
            _ => return None,
        })
    }
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedMessage {
    /// Row id, used by `wharf failed show|retry|delete`.
    pub id: i64,
    /// The message.
    pub message_id: Uuid,
    /// The plugin that failed it; empty when no plugin handles the kind.
    pub plugin: String,
    /// Its version.
    pub plugin_version: String,
    /// The sha256 of that version's `.wasm`.
    pub plugin_sha256: String,
    /// Where the message came from.
    pub source: String,
    /// Inbox queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// Headers.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Body, as text when it is UTF-8: in one message's detail, not in a list's items
    /// (a page of large messages would weigh what they all weigh).
    #[serde(
        serialize_with = "payload_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Vec<u8>>,
    /// The body's size in bytes.
    pub payload_bytes: u64,
    /// The final error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// Status.
    pub status: FailedStatus,
    /// When it failed (Unix ms).
    pub failed_at: i64,
    /// When an operator last retried it.
    pub last_retry_at: Option<i64>,
    /// When it was handled after a retry.
    pub resolved_at: Option<i64>,
}

fn payload_text<S: serde::Serializer>(payload: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(
        payload.as_deref().unwrap_or_default(),
    ))
}

/// One failed attempt in a message's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptError {
    /// Attempt number.
    pub attempt: u32,
    /// The plugin version that ran it; `None` for attempts recorded before wharf kept it.
    pub plugin_version: Option<String>,
    /// The sha256 of that version's `.wasm`; `None` like `plugin_version`.
    pub plugin_sha256: Option<String>,
    /// Its error.
    pub error: String,
    /// Wait scheduled before the next attempt; `None` for the final one.
    pub delay_ms: Option<u64>,
    /// When (Unix ms).
    pub at: i64,
}

/// What [`super::FailedMessages::failed_retry`] sent back, in failed rows (one per message and plugin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retried {
    /// Back in their inbox queue.
    pub inbox: u64,
    /// In the outbox, to be republished to their AMQP exchange.
    pub broker: u64,
}

impl Retried {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.inbox + self.broker
    }
}

/// The failed-messages role of a store: the dead letters an operator lists, retries and
/// deletes.
#[async_trait::async_trait]
pub trait FailedMessages: Send + Sync {
    /// A page of the failed messages `filter` selects, newest first, and how many it
    /// selects in all.
    async fn failed_list(&self, filter: &FailedFilter, page: PageRequest) -> Result<FailedPage>;

    /// One failed message with its attempt history.
    async fn failed_get(&self, id: i64) -> Result<Option<(FailedMessage, Vec<AttemptError>)>>;

    /// Send failed messages back where they came from: inbox messages to the inbox, AMQP
    /// messages (with a source exchange) to the outbox, for the relay to republish to
    /// that exchange and routing key, with their id. Marks them retrying, in one
    /// transaction: the newest `limit` of those `filter` selects that are failed or
    /// pending.
    async fn failed_retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried>;

    /// Delete the newest `limit` failed messages `filter` selects, and their history, in
    /// one transaction, but none `retrying` (a retry and a delete exclude each other).
    /// Returns how many.
    async fn failed_delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64>;
}

/// What each store writes of [`FailedMessages`] in its own SQL: the two operations that
/// change failed messages.
#[async_trait::async_trait]
pub(super) trait FailedSql {
    /// [`FailedMessages::failed_retry`].
    async fn retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried>;

    /// [`FailedMessages::failed_delete`].
    async fn delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64>;
}

#[async_trait::async_trait]
impl<S: SqlStore + FailedSql> FailedMessages for S {
    async fn failed_list(&self, filter: &FailedFilter, page: PageRequest) -> Result<FailedPage> {
        read::list::<S::DB>(&mut *self.pool().acquire().await?, filter, page).await
    }

    async fn failed_get(&self, id: i64) -> Result<Option<(FailedMessage, Vec<AttemptError>)>> {
        read::get::<S::DB>(&mut *self.pool().acquire().await?, id).await
    }

    async fn failed_retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried> {
        self.retry(filter, limit).await
    }

    async fn failed_delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64> {
        self.delete(filter, limit).await
    }
}
