//! Stores: where the inbox, the dedup ledger, the outbox, plugin state and failed messages
//! live. [`Store`] is the seam, the union of its roles, so a part of the host takes only
//! what it uses: [`Inbox`] (claim and settle), [`Ledger`] (what was handled, state),
//! [`FailedMessages`], [`Outbox`], [`Registry`], [`Admin`] (queues, readiness,
//! retention), [`AuditLog`], [`FlowHistory`], [`HeldKeys`] (ordering keys a dead letter
//! holds). `sqlite` is the embedded default, `postgres` and `mysql`
//! (MariaDB/MySQL) the fleet stores that many hosts share. The store is the only writer
//! of a message's final state: a batch of verdicts is written in one transaction
//! ([`Inbox::begin_settle`], driven by `crate::settle`: ledger rows, effects, retries,
//! dead letters).
//!
//! What the backends share is written once here: the settle plan (`settle`: which rows a
//! batch's verdicts write, and the transaction each store settles in), the registry's
//! deploy and rollback rules and its reads and host reports (`registry`), the audit trail
//! (`audit`), statements written once for every SQL database (`sql`: the `Sql` bound and
//! the `Dialect`), the failed-message filter as SQL and the
//! decoding of failed messages (`failed`), queue rows (`queues`), outbox rows and the
//! retention rules (`retention`). A backend only holds what differs: its SQL, how it
//! claims and locks, and the decoding of its hot-path rows.

mod admin;
mod audit;
mod claim;
mod config;
mod error;
mod failed;
pub mod flow;
mod held;
mod inbox;
mod ledger;
mod mysql;
mod outbox;
mod postgres;
mod queues;
pub mod registry;
mod replies;
mod retention;
mod settle;
mod sql;
mod sqlite;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::effects::{Destination, Publish};
use crate::envelope::{Envelope, NewMessage};
use crate::outcome::Verdict;
use flow::FlowHistory;
use registry::Registry;

pub use admin::Admin;
pub use audit::{AuditEntry, AuditLog};
pub(crate) use claim::key_turn;
pub use claim::{Claim, ClaimMode, HeldTransaction, Hold, KeyOrder};
pub use config::{DEFAULT_DATABASE_URL, DatabaseConfig};
pub use error::StoreError;
pub use failed::{
    AttemptError, FailedFilter, FailedMessage, FailedMessages, FailedPage, FailedStatus,
    MAX_SELECTED_IDS, PageRequest, Retried, parse_time,
};
pub use held::{HeldKey, HeldKeys};
pub use inbox::Inbox;
pub use ledger::{DeliveredSettle, Ledger, SettledPlugins};
pub use mysql::MySqlStore;
pub use outbox::{Outbox, OutboxClaim, OutboxMessage, Route, Transport, Undeliverable};
pub use postgres::PostgresStore;
pub use queues::{Backlog, QueueSource, QueueStats};
pub use replies::{Answer, Replies};
pub use retention::Cleaned;
pub use settle::{
    InBatch, SettleBudget, SettlePlan, SettleTransaction, SharedView, StateLocks, StateQuota,
    StateUsage, StateView,
};
pub(crate) use settle::{Quotas, state_keys};
pub use sqlite::SqliteStore;

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The exact version of a plugin, recorded with everything it handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginVersion {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// sha256 of the `.wasm`.
    pub sha256: String,
}

/// The verdict of one plugin on one message.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginResult {
    /// Who handled it.
    pub plugin: PluginVersion,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// What to do.
    pub verdict: Verdict,
}

/// Everything to settle for one claimed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The claimed message (its lock token fences the settle).
    pub message: Envelope,
    /// One result per plugin that ran.
    pub results: Vec<PluginResult>,
    /// Why no plugin ran and the message goes to the failed messages as it is (no
    /// plugin subscribes to its kind; a transport could not read it).
    pub refused: Option<String>,
}

/// What a settle did, for progress output and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettleSummary {
    /// (message, plugin) pairs recorded as handled.
    pub handled: u64,
    /// Pairs scheduled for another attempt.
    pub retried: u64,
    /// Pairs that gave up (dead letters): moved to the failed messages.
    pub dead: u64,
    /// Pairs not run because the plugin's circuit breaker is open; tried again later
    /// without counting an attempt.
    pub deferred: u64,
    /// Messages whose claim had been taken over; nothing of theirs was written.
    pub fenced: u64,
    /// Delivered messages another consumer settled first (a duplicate delivered twice
    /// at once); the results of the plugins it settled were not written.
    pub duplicates: u64,
    /// Answers to requests whose callers had stopped waiting (`expires-at` passed).
    pub late_replies: u64,
    /// Messages written to the outbox (publishes to exchanges, answers to AMQP queues).
    pub outboxed: u64,
    /// Handler runs and stale reads, by plugin.
    pub plugins: BTreeMap<String, PluginRuns>,
    /// Handled, retried and dead pairs by source and plugin, for the flow history.
    #[serde(skip)]
    pub outcomes: flow::Outcomes,
}

impl SettleSummary {
    /// The per-plugin counts added up.
    pub fn runs(&self) -> PluginRuns {
        self.plugins.values().copied().sum()
    }
}

impl std::ops::AddAssign for SettleSummary {
    fn add_assign(&mut self, other: Self) {
        self.handled += other.handled;
        self.retried += other.retried;
        self.dead += other.dead;
        self.deferred += other.deferred;
        self.fenced += other.fenced;
        self.duplicates += other.duplicates;
        self.late_replies += other.late_replies;
        self.outboxed += other.outboxed;
        add_runs(&mut self.plugins, other.plugins);
        self.outcomes += other.outcomes;
    }
}

/// How a plugin's handler runs went: what contention on its state keys costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PluginRuns {
    /// Handler runs settled: those of the batch and those inside the settle.
    pub runs: u64,
    /// (message, plugin) pairs recorded as handled.
    pub handled: u64,
    /// (message, plugin) pairs whose attempt came to a verdict: handled, retried or
    /// dead. `runs / settled` is 1 where no run was repeated.
    pub settled: u64,
    /// Stale reads re-run inside the settle, against the committed state and the
    /// batch's earlier writes.
    pub resolved: u64,
    /// Results sent back for another round, run again without counting an attempt: stale
    /// reads and contended messages the settle did not run (its budget was spent, or
    /// another host held a key the handler newly touched).
    pub rescheduled: u64,
}

impl std::ops::AddAssign for PluginRuns {
    fn add_assign(&mut self, other: Self) {
        self.runs += other.runs;
        self.handled += other.handled;
        self.settled += other.settled;
        self.resolved += other.resolved;
        self.rescheduled += other.rescheduled;
    }
}

/// Add the per-plugin counts `more` to `into`.
pub fn add_runs(into: &mut BTreeMap<String, PluginRuns>, more: BTreeMap<String, PluginRuns>) {
    for (plugin, runs) in more {
        *into.entry(plugin).or_default() += runs;
    }
}

impl std::iter::Sum for PluginRuns {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        let mut total = Self::default();
        for runs in iter {
            total += runs;
        }
        total
    }
}

/// Put `message` where it goes outside a settle (the HTTP API, the CLI): into its inbox
/// queue, or into the outbox for a relay to send to its exchange or topic; `false` when
/// its id was there already.
pub async fn put(store: &dyn Store, message: &Publish) -> Result<bool> {
    match &message.destination {
        Destination::Queue(queue) => {
            let new = NewMessage {
                id: message.id,
                queue: queue.clone(),
                kind: message.kind.clone(),
                headers: message.headers.clone(),
                payload: message.payload.clone(),
                key: message.key.clone(),
                attempts: 0,
                delay: std::time::Duration::ZERO,
            };
            Ok(store.enqueue(std::slice::from_ref(&new)).await? == 1)
        }
        relayed => {
            let route = Route::of(relayed, message.key.as_deref())
                .expect("an exchange or a topic is relayed");
            let (kind, headers) = (&message.kind, &message.headers);
            (store.outbox_add(message.id, route, kind, headers, &message.payload)).await
        }
    }
}

/// The store seam, as the union of its roles; a part of the host takes only the roles it
/// uses. Implementations: [`SqliteStore`], [`PostgresStore`], [`MySqlStore`].
pub trait Store:
    Inbox
    + Ledger
    + FailedMessages
    + Outbox
    + Admin
    + AuditLog
    + Registry
    + FlowHistory
    + HeldKeys
    + Replies
{
}

impl<T> Store for T where
    T: Inbox
        + Ledger
        + FailedMessages
        + Outbox
        + Admin
        + AuditLog
        + Registry
        + FlowHistory
        + HeldKeys
        + Replies
{
}

/// Open the store named by a `database.url`, applying pending migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(std::sync::Arc::new(MySqlStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// Apply `migrator`'s pending migrations, refusing a database migrated by a newer wharf.
async fn migrate<'a, A>(migrator: &sqlx::migrate::Migrator, db: A) -> Result<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    migrator.run(db).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(found) => {
            StoreError::SchemaTooNew { found, known }
        }
        e => e.into(),
    })
}

/// Headers as the stores keep them: a JSON object of strings.
pub(crate) fn headers_json(headers: &BTreeMap<String, String>) -> String {
    serde_json::to_string(headers).expect("a string map always serialises")
}

/// Headers read back from a row; a row that does not decode is corrupt.
pub(crate) fn parse_headers(s: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("headers {s:?}: {e}")))
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}
