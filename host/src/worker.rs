//! The inbox worker loop: claim a batch from the inbox, dispatch its messages to their
//! plugins concurrently (`dispatch`), and hand the whole batch to the store's settle
//! transaction; a heartbeat keeps the claim while the handlers run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::Config;
use crate::dispatch::{Delays, Dispatcher};
use crate::retry::RetryPolicy;
use crate::store::{Claim, ClaimMode, Hold, SettleSummary, Settlement, Store, StoreError};

/// When [`Worker::run`] returns (besides a shutdown signal).
#[derive(Debug, Clone, Copy, Default)]
pub struct StopWhen {
    /// After this many messages were settled.
    pub limit: Option<u64>,
    /// After this much time.
    pub time_limit: Option<Duration>,
    /// As soon as nothing is due.
    pub until_idle: bool,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages claimed and settled.
    pub messages: u64,
    /// What the settles did.
    pub settled: SettleSummary,
}

impl RunReport {
    /// Add a batch (or another run) to the totals.
    pub fn add(&mut self, messages: u64, s: SettleSummary) {
        self.messages += messages;
        self.settled.handled += s.handled;
        self.settled.retried += s.retried;
        self.settled.failed += s.failed;
        self.settled.conflicts += s.conflicts;
        self.settled.fenced += s.fenced;
    }
}

/// Totals shared by the lanes of one [`Worker::run`].
struct Progress {
    started: Instant,
    /// The totals, and when progress was last logged.
    report: Mutex<(RunReport, Instant)>,
    /// Messages claimed or being claimed, against [`StopWhen::limit`].
    reserved: AtomicU64,
}

impl Progress {
    /// How many messages the next claim may take: a batch, or what is left of `limit`.
    fn reserve(&self, batch: u32, limit: Option<u64>) -> Option<u32> {
        let Some(limit) = limit else {
            return Some(batch);
        };
        let mut taken = 0;
        self.reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |reserved| {
                taken = limit.saturating_sub(reserved).min(u64::from(batch));
                Some(reserved + taken)
            })
            .expect("the update always succeeds");
        (taken > 0).then_some(taken as u32)
    }

    /// Give back reserved messages that were not claimed.
    fn release(&self, n: u64) {
        self.reserved.fetch_sub(n, Ordering::SeqCst);
    }

    fn add(&self, messages: u64, summary: SettleSummary) {
        let mut guard = self.report.lock().expect("no lane panicked");
        let (report, last_logged) = &mut *guard;
        report.add(messages, summary);
        if last_logged.elapsed() >= Duration::from_secs(5) {
            tracing::info!(
                messages = report.messages,
                handled = report.settled.handled,
                retried = report.settled.retried,
                failed = report.settled.failed,
                "progress"
            );
            *last_logged = Instant::now();
        }
    }
}

/// Consumes the inbox with one set of plugins.
pub struct Worker {
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    config: Arc<Config>,
    /// How batches are claimed: see [`claim_mode`].
    mode: ClaimMode,
}

/// Waits between tries after the database failed: 100 ms doubling up to 10 s.
const STORE_BACKOFF: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    base_delay_ms: 100,
    multiplier: 2.0,
    max_delay_ms: 10_000,
    jitter: 0.2,
};

/// Hold the claim transaction open while the handlers run when they are short (their
/// deadline is at most `inbox.hold_claims_up_to_ms`): one commit per batch, and a
/// crashed host's messages return at once. Longer handlers get leases, so no
/// transaction stays open for minutes (it would pin a connection and hold back
/// vacuum). See the PostgreSQL store's module docs for the measurements.
pub fn claim_mode(config: &Config) -> ClaimMode {
    if config.runtime.deadline_ms <= config.inbox.hold_claims_up_to_ms {
        ClaimMode::Transaction
    } else {
        ClaimMode::Lease
    }
}

impl Worker {
    /// A worker consuming `store`'s inbox through `dispatcher`.
    pub fn new(store: Arc<dyn Store>, dispatcher: Arc<Dispatcher>, config: Arc<Config>) -> Self {
        Self {
            store,
            dispatcher,
            mode: claim_mode(&config),
            config,
        }
    }

    /// Run until a stop condition or `shutdown` turns true; the batches in flight are
    /// always finished and settled. `inbox.batches_in_flight` batches run at once, so one
    /// is handled while another is claimed or settled.
    pub async fn run(
        &self,
        stop: StopWhen,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunReport, StoreError> {
        let progress = Progress {
            started: Instant::now(),
            report: Mutex::new((RunReport::default(), Instant::now())),
            reserved: AtomicU64::new(0),
        };
        let lanes = (0..self.config.inbox.batches_in_flight)
            .map(|_| self.lane(stop, shutdown.clone(), &progress));
        futures::future::try_join_all(lanes).await?;
        let (report, _) = progress.report.into_inner().expect("no lane panicked");
        Ok(report)
    }

    /// One claim -> handle -> settle loop of [`Worker::run`].
    async fn lane(
        &self,
        stop: StopWhen,
        mut shutdown: watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let poll = Duration::from_millis(self.config.inbox.poll_interval_ms);
        let mut failures = 0;
        loop {
            if *shutdown.borrow()
                || stop
                    .time_limit
                    .is_some_and(|t| progress.started.elapsed() >= t)
            {
                return Ok(());
            }
            let Some(limit) = progress.reserve(self.config.inbox.batch_size, stop.limit) else {
                return Ok(());
            };
            let batch = self.run_batch(limit).await;
            let claimed = match batch {
                Ok((claimed, summary)) => {
                    progress.release(u64::from(limit) - claimed);
                    progress.add(claimed, summary);
                    claimed
                }
                Err(e) => {
                    progress.release(limit.into());
                    self.back_off(e, &mut failures, &mut shutdown).await?;
                    continue;
                }
            };
            if claimed == 0 {
                if stop.until_idle {
                    return Ok(());
                }
                tokio::select! {
                    woke = self.store.wait_for_work(&self.config.inbox.queues, poll) => {
                        if let Err(e) = woke {
                            self.back_off(e, &mut failures, &mut shutdown).await?;
                            continue;
                        }
                    }
                    _ = shutdown.changed() => {}
                }
            }
            failures = 0;
        }
    }

    /// After a store error: give up on one an operator must fix, else wait (growing
    /// from 100 ms to 10 s with the `failures` in a row) and let the lane go on. A batch
    /// whose settle failed was not written; its messages return when their claim ends.
    async fn back_off(
        &self,
        error: StoreError,
        failures: &mut u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        if !error.is_transient() {
            return Err(error);
        }
        *failures += 1;
        let delay = STORE_BACKOFF.delay(*failures, &mut rand::rng());
        tracing::warn!(
            failures = *failures,
            ?delay,
            "the database failed ({error}); is it up? retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
        Ok(())
    }

    /// Claim up to `limit` messages, handle them and settle them. Returns how many
    /// messages were claimed and what the settle did.
    pub async fn run_batch(&self, limit: u32) -> Result<(u64, SettleSummary), StoreError> {
        let lease = Duration::from_millis(self.config.inbox.lease_ms);
        let Claim { messages, mut hold } = self
            .store
            .claim(&self.config.inbox.queues, limit, self.mode, lease)
            .await?;
        if messages.is_empty() {
            return Ok((0, SettleSummary::default()));
        }
        let claimed = messages.len() as u64;
        let claims: Vec<(Uuid, Uuid)> = messages.iter().map(|m| (m.id, m.lock_token)).collect();
        let handling = futures::stream::iter(messages)
            .map(|message| self.dispatcher.handle(message, Delays::Jittered))
            .buffer_unordered(self.config.runtime.concurrency)
            .collect::<Vec<Settlement>>();
        let settlements = self.heartbeat(&mut hold, &claims, lease, handling).await;
        match self.store.settle(hold, &settlements).await {
            Ok(summary) => Ok((claimed, summary)),
            Err(StoreError::ClaimLost(e)) => {
                tracing::warn!(
                    messages = claimed,
                    "the batch's claim was lost ({e}); its results are discarded and its messages will be handled again"
                );
                let summary = SettleSummary {
                    fenced: claimed,
                    ..SettleSummary::default()
                };
                Ok((claimed, summary))
            }
            Err(e) => Err(e),
        }
    }

    /// Drive `work` while renewing the batch's claim every third of `lease`, so handlers
    /// that outlive one lease keep it; a host that stops renewing (crashed, frozen) loses
    /// it within one lease.
    async fn heartbeat<T>(
        &self,
        hold: &mut Hold,
        claims: &[(Uuid, Uuid)],
        lease: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = beat.tick() => match self.store.renew(hold, claims, lease).await {
                    Ok(held) if held < claims.len() as u64 => tracing::warn!(
                        lost = claims.len() as u64 - held,
                        "some claims of this batch were taken over; their results will be discarded"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("renewing the batch's claim failed (will retry): {e}"),
                },
            }
        }
    }
}
