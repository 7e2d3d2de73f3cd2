//! Which failed messages an operator means: a [`FailedFilter`] (from the HTTP API's query
//! or body, or the CLI's flags), turned into SQL for either database, and the keyset
//! [`FailedPage`]s of a listing.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::{FailedMessage, FailedStatus};
use crate::store::sql::{Sql, Statement};

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

/// What an operator does to the failed messages a filter selects; each takes rows in
/// some statuses only, so a retry and a delete of the same row exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Send back: `failed` and `pending` rows, which become `retrying`.
    Retry,
    /// Delete, with the history: every row but a `retrying` one (its message is back in
    /// its queue; it comes back as `failed` if it fails again, or if its queue is purged).
    Delete,
}

impl Operation {
    /// The SQL condition on `status` of the rows it takes.
    pub(in crate::store) fn statuses(self) -> &'static str {
        match self {
            Self::Retry => "status IN ('failed', 'pending')",
            Self::Delete => "status <> 'retrying'",
        }
    }
}

/// The most row ids one filter may name.
pub const MAX_SELECTED_IDS: usize = 1000;
/// The longest plugin, version, kind, queue or source a filter may name (no name is longer;
/// a source is `amqp:` and a queue).
pub const MAX_NAME_FILTER_BYTES: usize = 300;
/// The longest text an error filter may look for.
pub const MAX_ERROR_FILTER_BYTES: usize = 1024;

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

    /// Why the filter cannot be used, if it cannot: too many ids, or a condition longer
    /// than anything it could match (a database refuses a pattern of tens of thousands
    /// of characters).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.ids.len() > MAX_SELECTED_IDS {
            return Err(format!(
                "{} ids given, at most {MAX_SELECTED_IDS} per call; select by filter, or send them in parts",
                self.ids.len()
            ));
        }
        let texts = [
            ("plugin", &self.plugin, MAX_NAME_FILTER_BYTES),
            (
                "plugin_version",
                &self.plugin_version,
                MAX_NAME_FILTER_BYTES,
            ),
            ("kind", &self.kind, MAX_NAME_FILTER_BYTES),
            ("queue", &self.queue, MAX_NAME_FILTER_BYTES),
            ("source", &self.source, MAX_NAME_FILTER_BYTES),
            ("error", &self.error, MAX_ERROR_FILTER_BYTES),
        ];
        for (name, value, max) in texts {
            if let Some(value) = value
                && value.len() > max
            {
                return Err(format!(
                    "the {name} filter is {} bytes long, at most {max}; shorten it",
                    value.len()
                ));
            }
        }
        Ok(())
    }

    /// Push `SELECT id FROM failed_messages WHERE <the filter>` (only rows in a status
    /// `operation` may take), newest first, at most `limit` rows, into a query of any
    /// database.
    pub(in crate::store) fn push_ids<DB: Sql>(
        &self,
        query: &mut QueryBuilder<DB>,
        operation: Operation,
        limit: u64,
    ) {
        query.push("SELECT id FROM failed_messages WHERE ");
        self.push_conditions(query);
        query.push(" AND ").push(operation.statuses());
        query.push(" ORDER BY id DESC LIMIT ");
        query.value(limit.min(i64::MAX as u64) as i64);
    }

    /// The queries of a page of `columns` of the rows the filter selects (one row more
    /// than the page holds, to tell whether another follows; see [`FailedPage::of`]), and
    /// of how many it selects in all.
    pub(in crate::store) fn page_queries<DB: Sql>(
        &self,
        columns: &str,
        page: PageRequest,
    ) -> (QueryBuilder<DB>, QueryBuilder<DB>) {
        let mut rows = QueryBuilder::new(format!("SELECT {columns} FROM failed_messages WHERE "));
        self.push_conditions(&mut rows);
        if let Some(before) = page.before {
            rows.push(" AND id < ").value(before);
        }
        rows.push(" ORDER BY id DESC LIMIT ")
            .value(i64::from(page.limit) + 1);
        let mut count = QueryBuilder::new("SELECT COUNT(*) AS n FROM failed_messages WHERE ");
        self.push_conditions(&mut count);
        (rows, count)
    }

    /// Push the filter's conditions (`TRUE` for none), for a `WHERE` on `failed_messages`.
    pub(in crate::store) fn push_conditions<DB: Sql>(&self, query: &mut QueryBuilder<DB>) {
        query.push("TRUE");
        if !self.ids.is_empty() {
            query.push(" AND id IN (");
            for (i, id) in self.ids.iter().enumerate() {
                query.push(if i == 0 { "" } else { ", " }).value(*id);
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
                query.value(value.clone());
            }
        }
        if let Some(status) = self.status {
            query.push(" AND status = ");
            query.value(status.as_str());
        }
        if let Some(text) = &self.error {
            query.push(r" AND LOWER(error) LIKE ");
            query.value(format!("%{}%", escape_like(&text.to_ascii_lowercase())));
            query.push(" ESCAPE '!'");
        }
        if let Some(since) = self.since {
            query.push(" AND failed_at >= ");
            query.value(since);
        }
        if let Some(until) = self.until {
            query.push(" AND failed_at < ");
            query.value(until);
        }
    }
}

/// `text` with the `LIKE` wildcards and the escape character escaped by `!` (not `\`,
/// which MySQL string literals treat as an escape of their own).
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            escaped.push('!');
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
    pub(in crate::store) fn of(total: i64, mut rows: Vec<FailedMessage>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Self {
            total: total as u64,
            next: more.then(|| rows.last().map(|r| r.id)).flatten(),
            items: rows,
        }
    }
}
