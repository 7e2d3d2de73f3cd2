//! The inbox worker: lanes of the [`pump`] over the inbox as a [`Source`] (claim a batch
//! of due messages, hold the claim while its handlers run, settle it in the store), all
//! sharing one run's totals; a heartbeat keeps a batch's claim while its handlers run and
//! hands a long held claim over to leases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{HOLD_AT_MOST, InboxConfig, claim_mode, lanes};
use crate::dispatch::{Delays, Dispatcher};
use crate::envelope::Envelope;
use crate::settle;
use crate::store::{Claim, ClaimMode, Hold, SettleSummary, Settlement, Store, StoreError};
use crate::transport::pump::{self, Progress, Report, StopWhen};
use crate::transport::source::{Batch, Source};

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
    ) -> Result<Report, StoreError> {
        let lanes = lanes(&self.config.queues, self.config.batches_in_flight);
        let progress = Arc::new(Progress::new("inbox", stop).lanes(lanes.len()));
        let mut running = JoinSet::new();
        for queues in lanes {
            let lane = Lane {
                worker: self.clone(),
                queues,
            };
            let (shutdown, progress) = (shutdown.clone(), progress.clone());
            running.spawn(
                async move {
                    let dispatcher = lane.worker.dispatcher.clone();
                    pump::run(&lane, &dispatcher, shutdown, &progress).await
                }
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
        Ok(progress.report())
    }

    /// Claim up to `limit` messages of `queues` (all when empty), handle them and settle
    /// them. Returns how many messages were claimed and what the settle did.
    pub async fn run_batch(
        &self,
        queues: &[String],
        limit: u32,
    ) -> Result<(u64, SettleSummary), StoreError> {
        let lane = Lane {
            worker: self.clone(),
            queues: queues.to_vec(),
        };
        pump::once(&lane, &self.dispatcher, limit).await
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

/// One lane's inbox source: the queues it claims from (all when empty).
struct Lane {
    worker: Worker,
    queues: Vec<String>,
}

impl Lane {
    fn lease(&self) -> Duration {
        Duration::from_millis(self.worker.config.lease_ms)
    }
}

impl Source for Lane {
    type Held = Hold;
    type Error = StoreError;
    /// A batch whose settle failed was not written; its messages return when their claim
    /// ends (at once for a held transaction, freed by [`Worker::free_unsettled`] for a
    /// lease).
    const GOES_ON_AFTER_ERROR: bool = true;
    /// Lanes give the overlap instead: `inbox.batches_in_flight` of them.
    const PIPELINED: bool = false;

    fn label(&self) -> &str {
        "inbox"
    }

    fn batch_size(&self) -> u32 {
        self.worker.config.batch_size
    }

    async fn take(&self, limit: u32) -> Result<Option<Batch<Hold>>, StoreError> {
        let worker = &self.worker;
        worker.free_unsettled().await?;
        let Claim { messages, hold } = worker
            .store
            .claim(
                &self.queues,
                limit,
                worker.mode,
                worker.dispatcher.key_order(),
                self.lease(),
            )
            .await?;
        Ok((!messages.is_empty()).then(|| Batch {
            taken: messages.len() as u64,
            messages,
            held: hold,
        }))
    }

    async fn wait(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), StoreError> {
        let poll = Duration::from_millis(self.worker.config.poll_interval_ms);
        // A closed channel (its sender dropped: no shutdown will come) is no reason to
        // stop waiting.
        tokio::select! {
            woke = self.worker.store.wait_for_work(&self.queues, poll) => woke,
            Ok(()) = shutdown.changed() => Ok(()),
        }
    }

    async fn handle(
        &self,
        batch: &mut Batch<Hold>,
        dispatcher: &Dispatcher,
    ) -> Result<Vec<Settlement>, StoreError> {
        let messages = std::mem::take(&mut batch.messages);
        let claims: Vec<(Uuid, Uuid)> = messages.iter().map(|m| (m.id, m.lock_token)).collect();
        let held = matches!(batch.held, Hold::Transaction(_)).then(|| messages.clone());
        let handling = dispatcher.handle_batch(messages, Delays::Jittered);
        let (mut settlements, leased) = self
            .worker
            .heartbeat(&mut batch.held, claims, held, self.lease(), handling)
            .await;
        if let Some(token) = leased {
            for s in &mut settlements {
                s.message.lock_token = token;
            }
        }
        Ok(settlements)
    }

    async fn finish(
        &self,
        hold: Hold,
        settlements: &mut Vec<Settlement>,
        dispatcher: &Dispatcher,
    ) -> Result<SettleSummary, StoreError> {
        let leased_claims = matches!(hold, Hold::Lease).then(|| {
            settlements
                .iter()
                .map(|s| (s.message.id, s.message.lock_token))
                .collect::<Vec<_>>()
        });
        let store = &*self.worker.store;
        match settle::claimed(store, hold, settlements, dispatcher, Delays::Jittered).await {
            Ok(summary) => Ok(summary),
            Err(e @ (StoreError::ClaimLost(_) | StoreError::HandledBefore(_))) => {
                let fenced = settlements.len() as u64;
                tracing::warn!(
                    messages = fenced,
                    "{e}; the batch's results are discarded and its messages will be handled again"
                );
                // Nothing of the batch was written: nothing to trace or observe.
                settlements.clear();
                Ok(SettleSummary {
                    fenced,
                    ..SettleSummary::default()
                })
            }
            Err(e) => {
                if let Some(claims) = leased_claims {
                    self.worker
                        .unsettled
                        .lock()
                        .expect("no panics under this lock")
                        .extend(claims);
                }
                Err(e)
            }
        }
    }
}
