//! The pump: the one loop that drives every [`Source`]. A lane takes a batch, traces and
//! counts it, has the source run its handlers while it stays held, finishes it (settle,
//! then release at the source), observes and counts what the settle did, and goes on
//! until a stop condition or shutdown; it backs off while a database or broker is away.
//! A source that allows it is pipelined: the next batch is taken and handled while one is
//! being finished. Lanes of one run share a [`Progress`] (its totals, the `--limit`,
//! how many batches are being taken or held, and a progress line every 5 s).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::OUTAGE_BACKOFF;
use super::source::{Source, SourceError};
use crate::dispatch::Dispatcher;
use crate::shutdown::sleep_or_stop;
use crate::store::{SettleSummary, Settlement};
use crate::trace;

/// When a run returns (besides a shutdown signal).
#[derive(Debug, Clone, Copy, Default)]
pub struct StopWhen {
    /// After this many messages were settled.
    pub limit: Option<u64>,
    /// After this much time.
    pub time_limit: Option<Duration>,
    /// As soon as nothing is due: once every lane of the run ([`Progress::lanes`]) came
    /// up empty since the last batch was finished, and none is taking or holding one.
    /// Until then a lane that came up empty goes on polling, as another lane's batch may
    /// hold back a message of its queues (a claim's lock on MariaDB) or publish or put
    /// one back; it takes again as soon as another lane finished a batch (or found the
    /// run over), not a poll interval later. An empty take that ran while another lane
    /// was taking does not count (on MariaDB a claim's scan locks the row that ends it,
    /// the first due row of the next queue, which another lane's claim then skips): the
    /// lane takes again a moment later, lanes staggered, to take alone.
    pub until_idle: bool,
}

/// Totals of a run, of any source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages taken from the source and finished there (settled and committed, or
    /// acked).
    pub messages: u64,
    /// What the settles did.
    pub settled: SettleSummary,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, other: Self) {
        self.messages += other.messages;
        self.settled += other.settled;
    }
}

impl Report {
    /// Log the totals as `what` (`"progress"`, `"inbox stopped"`).
    pub fn log(&self, source: &str, what: &str) {
        let s = &self.settled;
        let runs = s.runs();
        tracing::info!(
            source,
            messages = self.messages,
            handled = s.handled,
            retried = s.retried,
            dead = s.dead,
            duplicates = s.duplicates,
            runs = runs.runs,
            resolved = runs.resolved,
            rescheduled = runs.rescheduled,
            "{what}"
        );
    }
}

/// What the lanes of one run share: when it stops, and its totals.
pub struct Progress {
    /// The source's name in the progress lines.
    label: String,
    stop: StopWhen,
    started: Instant,
    /// The totals, and when progress was last logged.
    report: Mutex<(Report, Instant)>,
    /// Messages taken or being taken, against [`StopWhen::limit`] (untouched without one).
    reserved: AtomicU64,
    /// Batches being taken or taken and not yet finished, across the lanes.
    in_hand: AtomicUsize,
    /// Batches taken and then finished (or dropped), across the lanes.
    done: AtomicU64,
    /// Per lane, how many batches were done when its last take that came up empty began;
    /// and whether all were idle once (the run is over: the others stop on their next
    /// empty take).
    empty_at: Mutex<(Vec<Option<u64>>, bool)>,
    /// The next lane's place in `empty_at`.
    next_lane: AtomicUsize,
    /// Counts what may end an idle lane's wait in a run until idle: a batch done, the run
    /// found over.
    moved: watch::Sender<u64>,
    /// Takes running now, and takes begun so far, across the lanes.
    taking: AtomicUsize,
    takes: AtomicU64,
}

impl Progress {
    /// A run starting now, logged as `label`, that ends on `stop` (or shutdown).
    pub fn new(label: impl Into<String>, stop: StopWhen) -> Self {
        Self {
            label: label.into(),
            stop,
            started: Instant::now(),
            report: Mutex::new((Report::default(), Instant::now())),
            reserved: AtomicU64::new(0),
            in_hand: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            empty_at: Mutex::new((Vec::new(), false)),
            next_lane: AtomicUsize::new(0),
            moved: watch::Sender::new(0),
            taking: AtomicUsize::new(0),
            takes: AtomicU64::new(0),
        }
    }

    /// A run of `lanes` lanes: [`StopWhen::until_idle`] waits for each of them.
    pub fn lanes(self, lanes: usize) -> Self {
        self.empty_at.lock().expect("no lane panicked").0 = vec![None; lanes];
        self
    }

    /// The totals so far.
    pub fn report(&self) -> Report {
        self.report.lock().expect("no lane panicked").0.clone()
    }

    /// Whether a lane should stop: on shutdown or after the time limit.
    fn stops(&self, shutdown: &watch::Receiver<bool>) -> bool {
        *shutdown.borrow() || (self.stop.time_limit).is_some_and(|t| self.started.elapsed() >= t)
    }

    /// How many messages the next take may take: a batch, or what is left of the limit.
    fn reserve(&self, batch: u32) -> Option<u32> {
        let Some(limit) = self.stop.limit else {
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

    /// Give back reserved messages that were not taken.
    fn release(&self, n: u64) {
        if self.stop.limit.is_some() {
            self.reserved.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// A batch being taken, counted in [`Progress::in_hand`] until it is dropped (after
    /// its finish, or when the take comes up empty or fails).
    fn take_in_hand(&self) -> InHand<'_> {
        self.in_hand.fetch_add(1, Ordering::SeqCst);
        InHand {
            progress: self,
            taken: false,
        }
    }

    /// How many batches were done so far, to be given to [`Progress::idle`].
    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Whether `lane`, whose take that began when `done` batches were done came up empty,
    /// stops: on [`StopWhen::until_idle`], once every lane came up empty since the last
    /// batch was done (a batch that committed while a take ran may have made work for
    /// it) and no lane is taking or holding one.
    fn idle(&self, lane: usize, done: u64) -> bool {
        if !self.stop.until_idle {
            return false;
        }
        let mut guard = self.empty_at.lock().expect("no lane panicked");
        let (empty_at, over) = &mut *guard;
        if let Some(at) = empty_at.get_mut(lane) {
            *at = Some(done);
        }
        let now = self.done.load(Ordering::SeqCst);
        if !*over
            && empty_at.iter().all(|at| *at == Some(now))
            && self.in_hand.load(Ordering::SeqCst) == 0
        {
            *over = true;
            self.moved.send_modify(|n| *n += 1);
        }
        *over
    }

    /// Before a take: how many others were running, and how many had begun.
    fn begin_take(&self) -> (usize, u64) {
        (
            self.taking.fetch_add(1, Ordering::SeqCst),
            self.takes.fetch_add(1, Ordering::SeqCst),
        )
    }

    /// After the take `begun` ([`Progress::begin_take`]): whether it ran alone, no other
    /// take running at its start or begun during it.
    fn end_take(&self, (others, begun): (usize, u64)) -> bool {
        self.taking.fetch_sub(1, Ordering::SeqCst);
        others == 0 && self.takes.load(Ordering::SeqCst) == begun + 1
    }

    /// Until `moved` (subscribed before a take that came up empty) sees a batch done or
    /// the run over since, in a run until idle; never otherwise.
    async fn moves(&self, mut moved: watch::Receiver<u64>) {
        if !self.stop.until_idle || moved.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn add(&self, messages: u64, settled: SettleSummary) {
        let mut guard = self.report.lock().expect("no lane panicked");
        let (report, last_logged) = &mut *guard;
        *report += Report { messages, settled };
        if last_logged.elapsed() >= Duration::from_secs(5) {
            report.log(&self.label, "progress");
            *last_logged = Instant::now();
        }
    }
}

/// A batch counted as in hand by its run's lanes while this lives, and as done after
/// when it was `taken`.
struct InHand<'p> {
    progress: &'p Progress,
    taken: bool,
}

impl Drop for InHand<'_> {
    fn drop(&mut self) {
        if self.taken {
            self.progress.done.fetch_add(1, Ordering::SeqCst);
        }
        self.progress.in_hand.fetch_sub(1, Ordering::SeqCst);
        if self.taken {
            self.progress.moved.send_modify(|n| *n += 1);
        }
    }
}

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
