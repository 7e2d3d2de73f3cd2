//! The pump: the one loop that drives every [`Source`]. A lane takes a batch, traces and
//! counts it, has the source run its handlers while it stays held, finishes it (settle,
//! then release at the source), observes and counts what the settle did, and goes on
//! until a stop condition or shutdown; it backs off while a database or broker is away.
//! A source that allows it is pipelined: the next batch is taken and handled while one is
//! being finished. Lanes of one run share a [`Progress`] (its totals, the `--limit`,
//! how many batches are being taken or held, and a progress line every 5 s).

mod progress;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use progress::InHand;
pub use progress::{Progress, Report, StopWhen};

use super::OUTAGE_BACKOFF;
use super::source::{Source, SourceError};
use crate::dispatch::Dispatcher;
use crate::shutdown::sleep_or_stop;
use crate::store::{SettleSummary, Settlement};
use crate::trace;

/// A batch whose handlers ran, waiting to be finished.
struct Handled<'p, H> {
    taken: u64,
    held: H,
    settlements: Vec<Settlement>,
    in_hand: InHand<'p>,
}

/// How long after an empty take that did not run alone a lane of a run until idle takes
/// again, times its place among the lanes (up to 8).
const TAKE_ALONE_AFTER: Duration = Duration::from_millis(15);

/// One lane: take, handle and finish batches of `source` until the run's stop condition
/// or `shutdown` (the batch in hand is always finished), adding to `progress`.
pub async fn run<S: Source>(
    source: &S,
    dispatcher: &Dispatcher,
    mut shutdown: watch::Receiver<bool>,
    progress: &Progress,
) -> Result<(), S::Error> {
    let lane = progress.next_lane.fetch_add(1, Ordering::SeqCst);
    let mut failures = 0;
    let mut pending = None;
    loop {
        let current = match pending.take() {
            Some(handled) => handled,
            None => {
                if progress.stops(&shutdown) {
                    return Ok(());
                }
                let Some(limit) = progress.reserve(source.batch_size()) else {
                    return Ok(());
                };
                let moved = progress.moved.subscribe();
                let done = progress.done();
                let mut alone = true;
                match take_and_handle(source, dispatcher, limit, progress, &mut alone).await {
                    Ok(Some(handled)) => handled,
                    Ok(None) if progress.stop.until_idle && !alone => {
                        // Taken again a moment later, each lane at its own moment.
                        let moment = TAKE_ALONE_AFTER * (lane as u32 % 8 + 1);
                        sleep_or_stop(moment, &mut shutdown).await;
                        continue;
                    }
                    Ok(None) if progress.idle(lane, done) => return Ok(()),
                    Ok(None) => {
                        let waited = tokio::select! {
                            waited = source.wait(&mut shutdown) => waited,
                            () = progress.moves(moved) => Ok(()),
                        };
                        match waited {
                            Ok(()) => failures = 0,
                            Err(e) => back_off(source, e, &mut failures, &mut shutdown).await?,
                        }
                        continue;
                    }
                    Err(e) => {
                        back_off(source, e, &mut failures, &mut shutdown).await?;
                        continue;
                    }
                }
            }
        };
        let next = match S::PIPELINED && !progress.stops(&shutdown) {
            true => progress.reserve(source.batch_size()),
            false => None,
        };
        let mut next_alone = true;
        let (finished, next) = match next {
            None => (finish(source, dispatcher, current).await, Ok(None)),
            Some(limit) => tokio::join!(
                finish(source, dispatcher, current),
                take_and_handle(source, dispatcher, limit, progress, &mut next_alone)
            ),
        };
        match finished.and_then(|(taken, summary)| {
            progress.add(taken, summary);
            next
        }) {
            Ok(next) => {
                pending = next;
                failures = 0;
            }
            Err(e) => back_off(source, e, &mut failures, &mut shutdown).await?,
        }
    }
}

/// Take, handle and finish one batch of up to `limit` messages. Returns how many messages
/// were taken and what the settle did.
pub async fn once<S: Source>(
    source: &S,
    dispatcher: &Dispatcher,
    limit: u32,
) -> Result<(u64, SettleSummary), S::Error> {
    let progress = Progress::new(source.label(), StopWhen::default());
    match take_and_handle(source, dispatcher, limit, &progress, &mut true).await? {
        Some(handled) => finish(source, dispatcher, handled).await,
        None => Ok((0, SettleSummary::default())),
    }
}

/// Take a batch of up to `limit` (reserved in `progress`; what was not taken is given
/// back) and run its handlers. `alone` says whether the take ran while no other lane of
/// the run was taking.
async fn take_and_handle<'p, S: Source>(
    source: &S,
    dispatcher: &Dispatcher,
    limit: u32,
    progress: &'p Progress,
    alone: &mut bool,
) -> Result<Option<Handled<'p, S::Held>>, S::Error> {
    let mut in_hand = progress.take_in_hand();
    let taking = SystemTime::now();
    let begun = progress.begin_take();
    let taken = source.take(limit).await;
    *alone = progress.end_take(begun);
    let untaken = match &taken {
        Ok(Some(batch)) => u64::from(limit).saturating_sub(batch.taken),
        _ => u64::from(limit),
    };
    progress.release(untaken);
    let Some(mut batch) = taken? else {
        return Ok(None);
    };
    in_hand.taken = true;
    trace::start_missing(&mut batch.messages);
    trace::batch_span("wharf.claim", taking, &batch.messages, Vec::new);
    crate::metrics::claimed(&batch.messages);
    let settlements = source.handle(&mut batch, dispatcher).await?;
    Ok(Some(Handled {
        taken: batch.taken,
        held: batch.held,
        settlements,
        in_hand,
    }))
}

/// Settle a handled batch and release it at its source; trace, observe and count it.
async fn finish<S: Source>(
    source: &S,
    dispatcher: &Dispatcher,
    handled: Handled<'_, S::Held>,
) -> Result<(u64, SettleSummary), S::Error> {
    let Handled {
        taken,
        held,
        mut settlements,
        in_hand,
    } = handled;
    let settling = SystemTime::now();
    let summary = source.finish(held, &mut settlements, dispatcher).await?;
    drop(in_hand);
    if !settlements.is_empty() {
        let messages = settlements.iter().map(|s| &s.message);
        trace::batch_span("wharf.settle", settling, messages, || {
            trace::settle_attributes(&summary)
        });
        dispatcher.observe(&settlements, &summary);
    }
    crate::metrics::settled(source.label(), &summary);
    Ok((taken, summary))
}

/// After an error: give up on one an operator must fix, or one the source cannot go on
/// from; else wait (growing from 100 ms to 10 s with the `failures` in a row) and let the
/// lane go on.
async fn back_off<S: Source>(
    source: &S,
    error: S::Error,
    failures: &mut u32,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), S::Error> {
    if !S::GOES_ON_AFTER_ERROR || !error.is_transient() {
        return Err(error);
    }
    *failures += 1;
    let delay = OUTAGE_BACKOFF.delay(*failures, &mut rand::rng());
    tracing::warn!(
        source = source.label(),
        failures = *failures,
        ?delay,
        "{error}; is it up? retrying"
    );
    sleep_or_stop(delay, shutdown).await;
    Ok(())
}
