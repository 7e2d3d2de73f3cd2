//! The inbox worker: lanes of claim -> dispatch -> settle loops sharing one run's totals,
//! backing off while the database is away; a heartbeat keeps a batch's claim while its
//! handlers run and hands a long held claim over to leases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{HOLD_AT_MOST, InboxConfig, RunReport, StopWhen, claim_mode, lanes};
use crate::dispatch::{Delays, Dispatcher};
use crate::envelope::Envelope;
use crate::shutdown::sleep_or_stop;
use crate::store::{Claim, ClaimMode, Hold, SettleSummary, Store, StoreError};
use crate::trace;
use crate::transport::OUTAGE_BACKOFF;

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
        *report += RunReport {
            messages,
            settled: summary,
        };
        if last_logged.elapsed() >= Duration::from_secs(5) {
            let runs = report.settled.runs();
            tracing::info!(
                messages = report.messages,
                handled = report.settled.handled,
                retried = report.settled.retried,
                dead = report.settled.dead,
                runs = runs.runs,
                resolved = runs.resolved,
                rescheduled = runs.rescheduled,
                "progress"
            );
            *last_logged = Instant::now();
        }
    }
}

/// Consumes the inbox with one set of plugins.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    config: InboxConfig,
    /// How batches are claimed: see [`claim_mode`].
    mode: ClaimMode,
    /// Leased claims (id, lock token) of batches whose settle failed (the database went
    /// away): this host knows it holds them, so it frees them as soon as the database
    /// answers again instead of leaving them locked for the rest of `lease_ms`.
    unsettled: Arc<Mutex<Vec<(Uuid, Uuid)>>>,
}

impl Worker {
    /// A worker consuming `store`'s inbox through `dispatcher`, whose handlers have
    /// `deadline` (see [`claim_mode`]).
    pub fn new(
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        config: InboxConfig,
        deadline: Duration,
    ) -> Self {
        Self {
            store,
            dispatcher,
            unsettled: Default::default(),
            mode: claim_mode(&config, deadline),
            config,
        }
    }

    /// Run until a stop condition or `shutdown` turns true; the batches in flight are
    /// always finished and settled. `inbox.batches_in_flight` batches run at once, so one
    /// is handled while another is claimed or settled.
    ///
    /// Each lane is a task of its own, so lanes run on different threads: a batch's
    /// handler calls run in its lane's task (most end in their first poll, see
    /// [`crate::runtime::Runtime::call`]), and lanes joined in one task had them all take
    /// turns on one thread. An error in one lane stops the others (dropping the run does
    /// too); a panic in one is resumed here.
    pub async fn run(
        &self,
        stop: StopWhen,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunReport, StoreError> {
        let progress = Arc::new(Progress {
            started: Instant::now(),
            report: Mutex::new((RunReport::default(), Instant::now())),
            reserved: AtomicU64::new(0),
        });
        let mut running = JoinSet::new();
        for queues in lanes(&self.config.queues, self.config.batches_in_flight) {
            let (worker, shutdown, progress) = (self.clone(), shutdown.clone(), progress.clone());
            running.spawn(
                async move { worker.lane(queues, stop, shutdown, &progress).await }
                    .in_current_span(),
            );
        }
        while let Some(lane) = running.join_next().await {
            match lane {
                Ok(ended) => ended?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => unreachable!("a lane is only cancelled with the run: {e}"),
            }
        }
        let progress = Arc::into_inner(progress).expect("every lane has ended");
        let (report, _) = progress.report.into_inner().expect("no lane panicked");
        Ok(report)
    }

    /// One claim -> handle -> settle loop of [`Worker::run`], over `queues`.
    async fn lane(
        self,
        queues: Vec<String>,
        stop: StopWhen,
        mut shutdown: watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut failures = 0;
        loop {
            if *shutdown.borrow()
                || stop
                    .time_limit
                    .is_some_and(|t| progress.started.elapsed() >= t)
            {
                return Ok(());
            }
            let Some(limit) = progress.reserve(self.config.batch_size, stop.limit) else {
                return Ok(());
            };
            let batch = self.run_batch(&queues, limit).await;
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
                    woke = self.store.wait_for_work(&queues, poll) => {
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
        let delay = OUTAGE_BACKOFF.delay(*failures, &mut rand::rng());
        tracing::warn!(
            failures = *failures,
            ?delay,
            "the database failed ({error}); is it up? retrying"
        );
        sleep_or_stop(delay, shutdown).await;
        Ok(())
    }

    /// Claim up to `limit` messages of `queues` (all when empty), handle them and settle
    /// them. Returns how many messages were claimed and what the settle did.
    pub async fn run_batch(
        &self,
        queues: &[String],
        limit: u32,
    ) -> Result<(u64, SettleSummary), StoreError> {
        let lease = Duration::from_millis(self.config.lease_ms);
        self.free_unsettled().await?;
        let claiming = SystemTime::now();
        let Claim {
            mut messages,
            mut hold,
        } = self.store.claim(queues, limit, self.mode, lease).await?;
        if messages.is_empty() {
            return Ok((0, SettleSummary::default()));
        }
        trace::start_missing(&mut messages);
        trace::batch_span("wharf.claim", claiming, &messages, Vec::new);
        crate::metrics::claimed(&messages);
        let claimed = messages.len() as u64;
        let claims: Vec<(Uuid, Uuid)> = messages.iter().map(|m| (m.id, m.lock_token)).collect();
        let held = matches!(hold, Hold::Transaction(_)).then(|| messages.clone());
        let handling = self.dispatcher.handle_batch(messages, Delays::Jittered);
        let (mut settlements, leased) = self
            .heartbeat(&mut hold, claims, held, lease, handling)
            .await;
        if let Some(token) = leased {
            for s in &mut settlements {
                s.message.lock_token = token;
            }
        }
        let runner = self.dispatcher.settle_runner(Delays::Jittered);
        let settling = SystemTime::now();
        let leased_claims = matches!(hold, Hold::Lease).then(|| {
            settlements
                .iter()
                .map(|s| (s.message.id, s.message.lock_token))
                .collect::<Vec<_>>()
        });
        match self.store.settle(hold, &mut settlements, &runner).await {
            Ok(summary) => {
                let messages = settlements.iter().map(|s| &s.message);
                trace::batch_span("wharf.settle", settling, messages, || {
                    trace::settle_attributes(&summary)
                });
                self.dispatcher.observe(&settlements, &summary);
                crate::metrics::settled("inbox", &summary);
                Ok((claimed, summary))
            }
            Err(e @ (StoreError::ClaimLost(_) | StoreError::HandledBefore(_))) => {
                tracing::warn!(
                    messages = claimed,
                    "{e}; the batch's results are discarded and its messages will be handled again"
                );
                let summary = SettleSummary {
                    fenced: claimed,
                    ..SettleSummary::default()
                };
                Ok((claimed, summary))
            }
            Err(e) => {
                if let Some(claims) = leased_claims {
                    self.unsettled
                        .lock()
                        .expect("no panics under this lock")
                        .extend(claims);
                }
                Err(e)
            }
        }
    }

    /// Free the leases of batches whose settle failed, once the database answers: their
    /// messages can be claimed again at once (by this host or another).
    async fn free_unsettled(&self) -> Result<(), StoreError> {
        let claims =
            std::mem::take(&mut *self.unsettled.lock().expect("no panics under this lock"));
        if claims.is_empty() {
            return Ok(());
        }
        match self
            .store
            .renew(&mut Hold::Lease, &claims, Duration::ZERO)
            .await
        {
            Ok(freed) => {
                tracing::info!(
                    freed,
                    of = claims.len(),
                    "freed the claims of batches whose settle failed while the database was away; their messages run again now"
                );
                Ok(())
            }
            Err(e) => {
                self.unsettled
                    .lock()
                    .expect("no panics under this lock")
                    .extend(claims);
                Err(e)
            }
        }
    }

    /// Drive `work` while renewing the batch's claim every third of `lease`, so handlers
    /// that outlive one lease keep it; a host that stops renewing (crashed, frozen) loses
    /// it within one lease. A claim held in a transaction (`held` are its messages) is
    /// handed over to leases once the batch has run for [`HOLD_AT_MOST`]; the new token
    /// is returned, for the settle.
    async fn heartbeat<T>(
        &self,
        hold: &mut Hold,
        mut claims: Vec<(Uuid, Uuid)>,
        mut held: Option<Vec<Envelope>>,
        lease: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> (T, Option<Uuid>) {
        let mut work = std::pin::pin!(work);
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
        let hand_over = tokio::time::sleep(HOLD_AT_MOST);
        let mut hand_over = std::pin::pin!(hand_over);
        let mut token = None;
        loop {
            tokio::select! {
                done = &mut work => return (done, token),
                _ = &mut hand_over, if held.is_some() => {
                    let messages = held.take().expect("checked by the guard");
                    match self.store.lease_held(hold, &messages, lease).await {
                        Ok(Some(new)) => {
                            tracing::debug!(messages = messages.len(), "a long batch's claim was handed over to leases");
                            token = Some(new);
                            claims.iter_mut().for_each(|c| c.1 = new);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            messages = messages.len(),
                            "handing a long batch's claim over to leases failed ({e}); its results will be discarded and its messages handled again"
                        ),
                    }
                }
                _ = beat.tick() => match self.store.renew(hold, &claims, lease).await {
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
