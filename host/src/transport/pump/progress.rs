//! What the lanes of one run share ([`Progress`]): when it stops ([`StopWhen`]), its
//! totals ([`Report`]), the batches in hand and done, and when every lane came up empty.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::SettleSummary;

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
    pub(super) stop: StopWhen,
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
    pub(super) next_lane: AtomicUsize,
    /// Counts what may end an idle lane's wait in a run until idle: a batch done, the run
    /// found over.
    pub(super) moved: watch::Sender<u64>,
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
    pub(super) fn stops(&self, shutdown: &watch::Receiver<bool>) -> bool {
        *shutdown.borrow() || (self.stop.time_limit).is_some_and(|t| self.started.elapsed() >= t)
    }

    /// How many messages the next take may take: a batch, or what is left of the limit.
    pub(super) fn reserve(&self, batch: u32) -> Option<u32> {
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
    pub(super) fn release(&self, n: u64) {
        if self.stop.limit.is_some() {
            self.reserved.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// A batch being taken, counted in [`Progress::in_hand`] until it is dropped (after
    /// its finish, or when the take comes up empty or fails).
    pub(super) fn take_in_hand(&self) -> InHand<'_> {
        self.in_hand.fetch_add(1, Ordering::SeqCst);
        InHand {
            progress: self,
            taken: false,
        }
    }

    /// How many batches were done so far, to be given to [`Progress::idle`].
    pub(super) fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Whether `lane`, whose take that began when `done` batches were done came up empty,
    /// stops: on [`StopWhen::until_idle`], once every lane came up empty since the last
    /// batch was done (a batch that committed while a take ran may have made work for
    /// it) and no lane is taking or holding one.
    pub(super) fn idle(&self, lane: usize, done: u64) -> bool {
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
    pub(super) fn begin_take(&self) -> (usize, u64) {
        (
            self.taking.fetch_add(1, Ordering::SeqCst),
            self.takes.fetch_add(1, Ordering::SeqCst),
        )
    }

    /// After the take `begun` ([`Progress::begin_take`]): whether it ran alone, no other
    /// take running at its start or begun during it.
    pub(super) fn end_take(&self, (others, begun): (usize, u64)) -> bool {
        self.taking.fetch_sub(1, Ordering::SeqCst);
        others == 0 && self.takes.load(Ordering::SeqCst) == begun + 1
    }

    /// Until `moved` (subscribed before a take that came up empty) sees a batch done or
    /// the run over since, in a run until idle; never otherwise.
    pub(super) async fn moves(&self, mut moved: watch::Receiver<u64>) {
        if !self.stop.until_idle || moved.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub(super) fn add(&self, messages: u64, settled: SettleSummary) {
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
pub(super) struct InHand<'p> {
    progress: &'p Progress,
    pub(super) taken: bool,
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
