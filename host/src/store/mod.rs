//! Stores: where the inbox, the dedup ledger, the outbox, plugin state and failed messages
//! live. [`Store`] is the seam; `sqlite` is the embedded default, `postgres` and `mysql`
//! (MariaDB/MySQL) the fleet stores that many hosts share. The store is the only writer
//! of a message's final state: a batch of verdicts is written in one transaction
//! ([`Store::begin_settle`], driven by `crate::settle`: ledger rows, effects, retries,
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

mod audit;
mod claim;
mod config;
mod error;
mod failed;
pub mod flow;
mod mysql;
mod outbox;
mod postgres;
mod queues;
pub mod registry;
mod retention;
mod settle;
mod sql;
mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::envelope::{Envelope, NewMessage};
use crate::outcome::Verdict;

pub use audit::{AuditEntry, AuditLog};
pub use claim::{Claim, ClaimMode, HeldTransaction, Hold};
pub use config::{DEFAULT_DATABASE_URL, DatabaseConfig};
pub use error::StoreError;
pub use failed::{
    AttemptError, FailedFilter, FailedMessage, FailedPage, FailedStatus, MAX_SELECTED_IDS,
    PageRequest, Retried, parse_time,
};
pub use mysql::MySqlStore;
pub use outbox::{OutboxClaim, OutboxMessage, Undeliverable};
pub use postgres::PostgresStore;
pub use queues::{Backlog, QueueSource, QueueStats};
pub(crate) use retention::CLEANUP;
pub use retention::Cleaned;
pub(crate) use settle::{Quotas, state_keys};
pub use settle::{
    SettleBudget, SettlePlan, SettleTransaction, SharedView, StateLocks, StateQuota, StateUsage,
    StateView,
};
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

/// The store seam. Implementations: [`SqliteStore`], [`PostgresStore`], [`MySqlStore`].
#[async_trait::async_trait]
pub trait Store: AuditLog + registry::Registry + flow::FlowHistory + Send + Sync {
    /// Insert messages, skipping ids already received. Returns how many were new.
    async fn enqueue(&self, messages: &[NewMessage]) -> Result<u64>;

    /// Claim up to `limit` due messages of `queues` (all when empty), held as `mode` asks.
    /// `lease` is how long the claim lasts without a [`Store::renew`]: the lease itself,
    /// or how long a held transaction may sit idle before the database ends it.
    async fn claim(
        &self,
        queues: &[String],
        limit: u32,
        mode: ClaimMode,
        lease: Duration,
    ) -> Result<Claim>;

    /// Open the transaction a claimed batch settles in (`crate::settle::claimed` drives
    /// it): the claim's own when it holds one ([`StoreError::ClaimLost`] if that is gone),
    /// else a new one, fenced on the messages' lock tokens.
    async fn begin_settle(&self, hold: Hold) -> Result<Box<dyn SettleTransaction + '_>>;

    /// Open the transaction a batch a transport delivered settles in (no inbox rows to
    /// fence, delete or reschedule), once any concurrent settle of the messages `ids` (a
    /// duplicate delivered to another consumer) has finished; with the plugins that
    /// settled each of them already, read inside it (as [`Store::settled_plugins`]).
    async fn begin_settle_delivered(
        &self,
        ids: &[Uuid],
    ) -> Result<(
        Box<dyn SettleTransaction + '_>,
        BTreeMap<Uuid, BTreeSet<String>>,
    )>;

    /// After a settle met the ledger's key ([`StoreError::HandledBefore`]) and rolled
    /// back: mark the messages `ids` seen, so their next claim looks up what ran, and free
    /// those the claim's lock `token` still holds.
    async fn mark_seen(&self, ids: &[Uuid], token: Uuid) -> Result<()>;

    /// Whether a settle that failed with `e` on its `runs`-th run is to run again: the
    /// database rolled it back whole to break a deadlock (MariaDB picks a victim), and
    /// running it again is the cure.
    fn settle_again(&self, e: &StoreError, runs: u32) -> bool {
        let _ = (e, runs);
        false
    }

    /// Plugins that already settled each of `ids` (handled it, or dead-lettered it and no
    /// operator sent it back): a redelivered message skips them.
    async fn settled_plugins(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>>;

    /// Heartbeat: keep the claimed messages (id, lock token) for another `lease` from
    /// now. Returns how many are still held.
    async fn renew(&self, hold: &mut Hold, claims: &[(Uuid, Uuid)], lease: Duration)
    -> Result<u64>;

    /// Hand a claim held in a transaction over to leases: its `messages` go back into the
    /// inbox leased for `lease` under a new token and the transaction commits, so a batch
    /// that runs long stops holding a transaction open. Returns the token, to become the
    /// messages' `lock_token`; `None` when the claim is a lease already.
    async fn lease_held(
        &self,
        hold: &mut Hold,
        messages: &[Envelope],
        lease: Duration,
    ) -> Result<Option<Uuid>> {
        let _ = (hold, messages, lease);
        Ok(None)
    }

    /// Return when work may be due in `queues`: a new message arrived, a scheduled retry
    /// came due, or `at_most` passed. The default just sleeps `at_most`.
    async fn wait_for_work(&self, queues: &[String], at_most: Duration) -> Result<()> {
        let _ = queues;
        tokio::time::sleep(at_most).await;
        Ok(())
    }

    /// Committed value and version of a plugin's state key.
    async fn state_get(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>>;

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

    /// Delete the messages of inbox queue `queue` no worker has claimed; returns how
    /// many. Claimed ones are left to finish. A failed message an operator sent back
    /// among them (`retrying`) is `failed` again, to be retried or deleted.
    async fn purge_queue(&self, queue: &str) -> Result<u64>;

    /// Unsent outbox messages and dead letters per plugin (for metrics).
    async fn backlog(&self) -> Result<Backlog>;

    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// Put a message in the outbox, for a relay to publish to `exchange` with
    /// `routing_key` (the HTTP API's publish); `false` when the outbox has its id already.
    async fn outbox_add(
        &self,
        id: Uuid,
        (exchange, routing_key): (&str, &str),
        kind: &str,
        headers: &BTreeMap<String, String>,
        payload: &[u8],
    ) -> Result<bool>;

    /// Depth of every queue that has messages or failures.
    async fn queue_stats(&self) -> Result<Vec<QueueStats>>;

    /// Retention: delete, in one transaction, what is older than `older_than` and
    /// finished: dedup and ledger rows of messages no longer in the inbox, sent outbox
    /// rows, resolved failures, and attempt errors nothing refers to any more. Dead
    /// letters still waiting for an operator are kept whatever their age.
    async fn cleanup(&self, older_than: Duration) -> Result<Cleaned>;

    /// Take up to `limit` unsent outbox messages, oldest first, for the relay.
    /// PostgreSQL locks them in a transaction held until [`Store::outbox_sent`] (other
    /// hosts' relays skip them; a relay that dies releases them); SQLite, one host's
    /// store, holds nothing.
    async fn claim_outbox(&self, limit: u32) -> Result<OutboxClaim>;

    /// Settle a claim and release it: mark `sent` (the broker confirmed them) sent, and
    /// move the `undeliverable` ones to the failed messages (source `outbox`, with their
    /// exchange and routing key: a retry puts them back in the outbox), each with an
    /// attempt recording why. A failed outbox message an operator retried and the broker
    /// now confirmed is resolved.
    async fn outbox_sent(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()>;
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
