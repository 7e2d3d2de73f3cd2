//! Dead letters as the stores hand them out: a failed message with its status and
//! history, which of them an operator selects (a filter, turned into SQL for both
//! databases) and what a retry sends back.

use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::{Result, StoreError, parse_headers};

/// Status of a failed message, mirrored by a CHECK constraint in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailedStatus {
    /// Recorded, waiting for an operator.
    Pending,
    /// Sent back to the inbox by `failed retry`.
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
    /// Where the message came from.
    pub source: String,
    /// Inbox queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// Headers.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Body, as text when it is UTF-8.
    #[serde(serialize_with = "payload_text")]
    pub payload: Vec<u8>,
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

fn payload_text<S: serde::Serializer>(payload: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(payload))
}

/// One failed attempt in a message's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptError {
    /// Attempt number.
    pub attempt: u32,
    /// Its error.
    pub error: String,
    /// Wait scheduled before the next attempt; `None` for the final one.
    pub delay_ms: Option<u64>,
    /// When (Unix ms).
    pub at: i64,
}

/// Which failed messages a list, a retry or a delete applies to: each condition set
/// narrows the selection; none selects every failed message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedFilter {
    /// Only these row ids (at most [`MAX_SELECTED_IDS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<i64>,
    /// Failed by this plugin (`""`: no plugin handles the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Failed by this version of the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
    /// Of this kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// From this inbox queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// From this source (`inbox`, or `amqp:<queue>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whose error contains this text, ignoring ASCII case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// In this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<FailedStatus>,
    /// Failed at or after this time (Unix ms; RFC 3339 or a date in JSON).
    #[serde(
        default,
        deserialize_with = "time",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<i64>,
    /// Failed before this time (Unix ms; RFC 3339 or a date in JSON).
    #[serde(
        default,
        deserialize_with = "time",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<i64>,
}

/// A time as Unix milliseconds from Unix milliseconds, an RFC 3339 time
/// (`2026-12-01T10:00:00Z`) or a UTC date (`2026-12-01`).
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    Err(format!(
        "time {text:?} is not Unix milliseconds, an RFC 3339 time (2026-12-01T10:00:00Z) or a date (2026-12-01)"
    ))
}

/// Deserialize an optional time as [`parse_time`] reads it, or a number of Unix ms.
fn time<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Time {
        Ms(i64),
        Text(String),
    }
    match Option::<Time>::deserialize(d)? {
        None => Ok(None),
        Some(Time::Ms(ms)) => Ok(Some(ms)),
        Some(Time::Text(text)) => parse_time(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The most row ids one filter may name.
pub const MAX_SELECTED_IDS: usize = 1000;

impl FailedFilter {
    /// Just the failed message with row id `id`.
    pub fn id(id: i64) -> Self {
        Self {
            ids: vec![id],
            ..Self::default()
        }
    }

    /// Whether it selects every failed message.
    pub fn is_everything(&self) -> bool {
        *self == Self::default()
    }

    /// Why the filter cannot be used, if it cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.ids.len() > MAX_SELECTED_IDS {
            return Err(format!(
                "{} ids given, at most {MAX_SELECTED_IDS} per call; select by filter, or send them in parts",
                self.ids.len()
            ));
        }
        Ok(())
    }

    /// Push `SELECT id FROM failed_messages WHERE <the filter>` (only rows an operator can
    /// retry, `failed` or `pending`, when `retryable`), newest first, at most `limit`
    /// rows, into a query of either database.
    pub(super) fn push_ids<DB>(&self, query: &mut QueryBuilder<DB>, retryable: bool, limit: u64)
    where
        DB: Database,
        i64: for<'q> Encode<'q, DB> + Type<DB>,
        String: for<'q> Encode<'q, DB> + Type<DB>,
    {
        query.push("SELECT id FROM failed_messages WHERE ");
        self.push_conditions(query);
        if retryable {
            query.push(" AND status IN ('failed', 'pending')");
        }
        query.push(" ORDER BY id DESC LIMIT ");
        query.push_bind(limit.min(i64::MAX as u64) as i64);
    }

    /// The queries of a page of `columns` of the rows the filter selects (one row more
    /// than the page holds, to tell whether another follows; see [`FailedPage::of`]), and
    /// of how many it selects in all.
    pub(super) fn page_queries<DB>(
        &self,
        columns: &str,
        page: PageRequest,
    ) -> (QueryBuilder<DB>, QueryBuilder<DB>)
    where
        DB: Database,
        DB::Arguments: Default,
        i64: for<'q> Encode<'q, DB> + Type<DB>,
        String: for<'q> Encode<'q, DB> + Type<DB>,
    {
        let mut rows = QueryBuilder::new(format!("SELECT {columns} FROM failed_messages WHERE "));
        self.push_conditions(&mut rows);
        if let Some(before) = page.before {
            rows.push(" AND id < ").push_bind(before);
        }
        rows.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM failed_messages WHERE ");
        self.push_conditions(&mut count);
        (rows, count)
    }

    /// Push the filter's conditions (`TRUE` for none), for a `WHERE` on `failed_messages`.
    pub(super) fn push_conditions<DB>(&self, query: &mut QueryBuilder<DB>)
    where
        DB: Database,
        i64: for<'q> Encode<'q, DB> + Type<DB>,
        String: for<'q> Encode<'q, DB> + Type<DB>,
    {
        query.push("TRUE");
        if !self.ids.is_empty() {
            query.push(" AND id IN (");
            let mut ids = query.separated(", ");
            for id in &self.ids {
                ids.push_bind(*id);
            }
            query.push(")");
        }
        let equal = [
            ("plugin", &self.plugin),
            ("plugin_version", &self.plugin_version),
            ("kind", &self.kind),
            ("queue", &self.queue),
            ("source", &self.source),
        ];
        for (column, value) in equal {
            if let Some(value) = value {
                query.push(format_args!(" AND {column} = "));
                query.push_bind(value.clone());
            }
        }
        if let Some(status) = self.status {
            query.push(" AND status = ");
            query.push_bind(status.as_str().to_owned());
        }
        if let Some(text) = &self.error {
            query.push(r" AND LOWER(error) LIKE ");
            query.push_bind(format!("%{}%", escape_like(&text.to_ascii_lowercase())));
            query.push(r" ESCAPE '\'");
        }
        if let Some(since) = self.since {
            query.push(" AND failed_at >= ");
            query.push_bind(since);
        }
        if let Some(until) = self.until {
            query.push(" AND failed_at < ");
            query.push_bind(until);
        }
    }
}

/// `text` with the `LIKE` wildcards and the escape character escaped by `\`.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Where a page of failed messages starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Start after this row id (the `next` of the previous page); `None` for the newest.
    pub before: Option<i64>,
    /// Rows on the page.
    pub limit: u32,
}

/// One page of failed messages, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedPage {
    /// How many failed messages the filter selects in all.
    pub total: u64,
    /// This page's.
    pub items: Vec<FailedMessage>,
    /// The `before` of the next page; `None` on the last one.
    pub next: Option<i64>,
}

impl FailedPage {
    /// The page of `limit` rows from `rows` (read with one more than `limit`, to know
    /// whether a next page exists), of `total` selected.
    pub(super) fn of(total: i64, rows: &mut Vec<FailedMessage>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Self {
            total: total as u64,
            next: more.then(|| rows.last().map(|r| r.id)).flatten(),
            items: std::mem::take(rows),
        }
    }
}

/// What [`super::Store::failed_retry`] sent back, in failed rows (one per message and plugin).
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

/// A failed message from a row with these columns as text and integers, on either
/// database (PostgreSQL casts its `uuid`, `jsonb` and `int` columns):
/// `id, message_id, plugin, plugin_version, source, queue, kind, headers, payload, error,
/// attempts, status, failed_at, last_retry_at, resolved_at`.
pub(super) fn failed_message<R: Row>(row: &R) -> Result<FailedMessage>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let status: String = row.get("status");
    let message_id: String = row.get("message_id");
    Ok(FailedMessage {
        id: row.get("id"),
        message_id: Uuid::parse_str(&message_id)
            .map_err(|e| StoreError::Corrupt(format!("id {message_id:?}: {e}")))?,
        plugin: row.get("plugin"),
        plugin_version: row.get("plugin_version"),
        source: row.get("source"),
        queue: row.get("queue"),
        kind: row.get("kind"),
        headers: parse_headers(&row.get::<String, _>("headers"))?,
        payload: row.get("payload"),
        error: row.get("error"),
        attempts: row.get::<i64, _>("attempts") as u32,
        status: FailedStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
        failed_at: row.get("failed_at"),
        last_retry_at: row.get("last_retry_at"),
        resolved_at: row.get("resolved_at"),
    })
}

/// One attempt of a history from a row of `attempt, error, delay_ms, at` (integers as
/// 64 bits), on either database.
pub(super) fn attempt_error<R: Row>(row: &R) -> AttemptError
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    AttemptError {
        attempt: row.get::<i64, _>("attempt") as u32,
        error: row.get("error"),
        delay_ms: row.get::<Option<i64>, _>("delay_ms").map(|d| d as u64),
        at: row.get("at"),
    }
}
