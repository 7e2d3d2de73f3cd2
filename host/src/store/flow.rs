//! The flow over time, for the dashboard's charts: what the fleet settled per minute, by
//! queue (source) and plugin (handled, retried and dead pairs), and its handler calls per
//! plugin (how many, their total and longest time). Each host counts in memory
//! ([`crate::dispatch::Flow`]) and adds its counts to its own rows with every report; rows
//! older than [`FLOW_KEPT`] are deleted by the next report of any host. Counts a host had
//! not reported when it died are lost: the charts are a picture of the flow, the ledger
//! and the failed messages are its record.

use std::time::Duration;

use serde::Serialize;
use sqlx::QueryBuilder;

use super::sql::{Change, Dialect, Run, Sql, SqlStore, Statement};
use super::{Result, now_ms};
use crate::envelope::Envelope;

/// A minute, in ms: rows are per minute, keyed by the Unix ms of its start.
pub const MINUTE_MS: i64 = 60_000;

/// How long the flow history is kept (the dashboard shows at most [`FLOW_SHOWN`]).
pub const FLOW_KEPT: Duration = Duration::from_secs(2 * 60 * 60);

/// The longest history one read returns, in minutes.
pub const FLOW_SHOWN: u32 = 120;

/// The minute a moment in Unix ms falls in.
pub fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// What was counted of one source and plugin in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounts {
    /// (message, plugin) pairs recorded as handled.
    pub handled: u64,
    /// Pairs scheduled for another attempt.
    pub retried: u64,
    /// Pairs that gave up: moved to the failed messages.
    pub dead: u64,
    /// Handler calls.
    pub calls: u64,
    /// Their time, added up, in microseconds.
    pub call_us: u64,
    /// The longest of them, in microseconds.
    pub call_us_max: u64,
}

impl FlowCounts {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::AddAssign for FlowCounts {
    fn add_assign(&mut self, other: Self) {
        self.handled += other.handled;
        self.retried += other.retried;
        self.dead += other.dead;
        self.calls += other.calls;
        self.call_us += other.call_us;
        self.call_us_max = self.call_us_max.max(other.call_us_max);
    }
}

/// The counts of one minute, source and plugin. Outcomes are counted by the source
/// (`inbox:<queue>`, `amqp:<queue>`) and plugin (`""`: a message no plugin took) that
/// settled them; calls by plugin alone, with source `""`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    /// The Unix ms the minute starts at.
    pub minute: i64,
    /// Where the messages came from; `""` for calls.
    pub source: String,
    /// Which plugin.
    pub plugin: String,
    /// What was counted.
    #[serde(flatten)]
    pub counts: FlowCounts,
}

/// The outcome counts of a settle, by source and plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes(Vec<(String, String, FlowCounts)>);

impl Outcomes {
    /// The counts of `message`'s source and `plugin` (a handful of pairs per batch:
    /// found by a scan that allocates only for a new pair).
    pub fn of(&mut self, message: &Envelope, plugin: &str) -> &mut FlowCounts {
        let found = self
            .0
            .iter()
            .position(|(s, p, _)| p == plugin && message.is_from(s));
        let i = found.unwrap_or_else(|| {
            let pair = (message.source(), plugin.to_owned(), FlowCounts::default());
            self.0.push(pair);
            self.0.len() - 1
        });
        &mut self.0[i].2
    }

    /// Every (source, plugin, counts).
    pub fn iter(&self) -> impl Iterator<Item = &(String, String, FlowCounts)> {
        self.0.iter()
    }
}

impl std::ops::AddAssign for Outcomes {
    fn add_assign(&mut self, other: Self) {
        for (source, plugin, counts) in other.0 {
            match self
                .0
                .iter_mut()
                .find(|(s, p, _)| *s == source && *p == plugin)
            {
                Some((_, _, mine)) => *mine += counts,
                None => self.0.push((source, plugin, counts)),
            }
        }
    }
}

/// The flow part of a [`super::Store`].
#[async_trait::async_trait]
pub trait FlowHistory: Send + Sync {
    /// Add `rows`, counted by `host`, onto its rows of the same minute, source and plugin;
    /// delete every host's rows older than [`FLOW_KEPT`].
    async fn add_flow(&self, host: &str, rows: &[FlowRow]) -> Result<()>;

    /// The fleet's counts (every host's added up) of the minutes from `since` (Unix ms)
    /// on, oldest first.
    async fn flow_since(&self, since: i64) -> Result<Vec<FlowRow>>;
}

/// The counted columns of `flow_minutes`.
const COUNTS: [&str; 6] = [
    "handled",
    "retried",
    "dead",
    "calls",
    "call_us",
    "call_us_max",
];

#[async_trait::async_trait]
impl<S: SqlStore> FlowHistory for S {
    async fn add_flow(&self, host: &str, rows: &[FlowRow]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let mut old = QueryBuilder::<S::DB>::new("DELETE FROM flow_minutes WHERE minute < ");
        old.value(now_ms() - FLOW_KEPT.as_millis() as i64);
        S::DB::execute(&mut tx, &mut old).await?;
        if !rows.is_empty() {
            let mut add = QueryBuilder::<S::DB>::new(format!(
                "INSERT INTO flow_minutes (minute, host, source, plugin, {}) ",
                COUNTS.join(", ")
            ));
            add.rows(rows, |add, row| {
                add.value(row.minute).push(", ").value(host);
                add.push(", ").value(row.source.as_str());
                add.push(", ").value(row.plugin.as_str());
                let c = &row.counts;
                for n in [
                    c.handled,
                    c.retried,
                    c.dead,
                    c.calls,
                    c.call_us,
                    c.call_us_max,
                ] {
                    add.push(", ").value(n as i64);
                }
            });
            let key = ["minute", "host", "source", "plugin"];
            let changes: Vec<_> = (COUNTS.iter().enumerate())
                .map(|(i, &c)| (c, if i < 5 { Change::Add } else { Change::Greatest }))
                .collect();
            S::DB::push_upsert(&mut add, "flow_minutes", &key, &changes);
            S::DB::execute(&mut tx, &mut add).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn flow_since(&self, since: i64) -> Result<Vec<FlowRow>> {
        let int = S::DB::BIGINT;
        let sums: Vec<String> = COUNTS[..5]
            .iter()
            .map(|c| format!("CAST(SUM({c}) AS {int}) AS {c}"))
            .collect();
        let mut query = QueryBuilder::<S::DB>::new(format!(
            "SELECT minute, source, plugin, {}, MAX(call_us_max) AS call_us_max
             FROM flow_minutes WHERE minute >= ",
            sums.join(", ")
        ));
        query.value(since);
        query.push(" GROUP BY minute, source, plugin ORDER BY minute, source, plugin");
        let rows = S::DB::fetch_all(&mut *self.pool().acquire().await?, &mut query).await?;
        Ok(rows.iter().map(FlowRow::of::<S::DB>).collect())
    }
}

impl FlowRow {
    /// A row of [`FlowHistory::flow_since`]'s query.
    fn of<DB: Sql>(row: &DB::Row) -> Self {
        let count = |column: &str| -> u64 {
            let n: i64 = DB::column(row, column);
            n.max(0) as u64
        };
        FlowRow {
            minute: DB::column(row, "minute"),
            source: DB::column(row, "source"),
            plugin: DB::column(row, "plugin"),
            counts: FlowCounts {
                handled: count("handled"),
                retried: count("retried"),
                dead: count("dead"),
                calls: count("calls"),
                call_us: count("call_us"),
                call_us_max: count("call_us_max"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_starts_on_a_multiple_of_sixty_seconds() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(1_764_000_123_456), 1_764_000_120_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn counts_add_up_and_keep_the_longest_call() {
        let mut a = FlowCounts {
            handled: 1,
            calls: 2,
            call_us: 30,
            call_us_max: 20,
            ..FlowCounts::default()
        };
        a += FlowCounts {
            dead: 1,
            calls: 1,
            call_us: 5,
            call_us_max: 5,
            ..FlowCounts::default()
        };
        let expected = FlowCounts {
            handled: 1,
            retried: 0,
            dead: 1,
            calls: 3,
            call_us: 35,
            call_us_max: 20,
        };
        assert_eq!(a, expected);
        assert!(!a.is_empty() && FlowCounts::default().is_empty());
    }
}
