//! Circuit breakers, one per plugin: after `failures` consecutive calls that trapped or
//! asked for a retry, the plugin is not fed for a cool-down; its messages wait, without
//! using up attempts. After the cool-down one trial call goes ahead (half-open): success
//! closes the breaker, another failure opens it for a new cool-down; a trial cancelled
//! before its result (a settle that failed mid-run) lets the next message try. Rejections
//! are verdicts about a message, not a sick plugin: they close the breaker like successes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long messages wait while the trial call of a half-open breaker runs.
const TRIAL_WAIT: Duration = Duration::from_millis(250);

/// What a breaker is doing, as shown by `wharf plugins list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go ahead.
    Closed,
    /// No calls until the cool-down ends.
    Open,
    /// One trial call decides.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// May a call go ahead?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Go,
    /// Yes, as the half-open breaker's trial: report its result with `trial = true`.
    Trial,
    /// No: the message waits this long (not an attempt).
    Wait(Duration),
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    trial_running: bool,
}

/// The breakers of one host.
#[derive(Debug)]
pub struct Breakers {
    /// Failures in a row that open a breaker; 0 never opens one.
    failures: u32,
    cool_down: Duration,
    breakers: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Breakers opening after `failures` consecutive failures (0: never) for `cool_down`.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Self {
            failures,
            cool_down,
            breakers: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.breakers.lock().expect("breaker updates do not panic")
    }

    /// Ask before calling `plugin`.
    pub fn admit(&self, plugin: &str) -> Admission {
        let mut breakers = self.lock();
        let Some(b) = breakers.get_mut(plugin) else {
            return Admission::Go;
        };
        match b.open_until {
            None => Admission::Go,
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    Admission::Wait(until - now)
                } else if b.trial_running {
                    Admission::Wait(TRIAL_WAIT.min(self.cool_down))
                } else {
                    b.trial_running = true;
                    Admission::Trial
                }
            }
        }
    }

    /// Report how a call [`Breakers::admit`] let go ahead ([`Admission::Go`]) went:
    /// `failed` when it trapped or asked for a retry.
    pub fn record(&self, plugin: &str, failed: bool) {
        self.report(plugin, false, failed);
    }

    fn report(&self, plugin: &str, trial: bool, failed: bool) {
        if self.failures == 0 {
            return;
        }
        let mut breakers = self.lock();
        if !failed {
            // A plugin with no entry is closed with no failures: a success on the hot path
            // neither allocates nor keeps an entry.
            if breakers
                .remove(plugin)
                .is_some_and(|b| b.open_until.is_some())
            {
                crate::metrics::breaker(plugin, false);
                tracing::info!(
                    plugin,
                    "circuit breaker closed: a call succeeded, messages flow again"
                );
            }
            return;
        }
        let b = breakers.entry(plugin.to_owned()).or_default();
        if trial {
            b.trial_running = false;
        }
        b.consecutive_failures += 1;
        let reopen = trial && b.open_until.is_some();
        if reopen || (b.open_until.is_none() && b.consecutive_failures >= self.failures) {
            b.open_until = Some(Instant::now() + self.cool_down);
            crate::metrics::breaker(plugin, true);
            tracing::warn!(
                plugin,
                consecutive_failures = b.consecutive_failures,
                cool_down = ?self.cool_down,
                "circuit breaker open: {}; its messages wait (not failed) until a trial call after the cool-down succeeds",
                if reopen { "the trial call failed too" } else { "too many failures in a row" }
            );
        }
    }

    /// The trial call [`Breakers::admit`] let go ahead ([`Admission::Trial`]): its result
    /// is to be recorded with [`TrialCall::record`].
    pub fn trial<'a>(&'a self, plugin: &'a str) -> TrialCall<'a> {
        TrialCall {
            breakers: self,
            plugin,
            recorded: false,
        }
    }

    /// The state of `plugin`'s breaker.
    pub fn state(&self, plugin: &str) -> BreakerState {
        match self.lock().get(plugin).and_then(|b| b.open_until) {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

/// A half-open breaker's trial call under way. Dropped before its result was recorded
/// (the call was cancelled: its settle failed, its consumer stopped), it lets the next
/// message be the trial; otherwise the breaker would wait for a result that never comes,
/// and the plugin's messages with it.
pub struct TrialCall<'a> {
    breakers: &'a Breakers,
    plugin: &'a str,
    recorded: bool,
}

impl TrialCall<'_> {
    /// Report how the trial went: `failed` when it trapped or asked for a retry.
    pub fn record(mut self, failed: bool) {
        self.recorded = true;
        self.breakers.report(self.plugin, true, failed);
    }
}

impl Drop for TrialCall<'_> {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        if let Some(b) = self.breakers.lock().get_mut(self.plugin) {
            b.trial_running = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_then_a_trial_decides() {
        let b = Breakers::new(3, Duration::from_millis(40));
        for _ in 0..2 {
            assert_eq!(b.admit("p"), Admission::Go);
            b.record("p", true);
        }
        assert_eq!(b.state("p"), BreakerState::Closed);
        b.record("p", true);
        assert_eq!(b.state("p"), BreakerState::Open);
        assert!(matches!(b.admit("p"), Admission::Wait(d) if d <= Duration::from_millis(40)));
        assert_eq!(b.admit("other"), Admission::Go);

        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.state("p"), BreakerState::HalfOpen);
        assert_eq!(b.admit("p"), Admission::Trial);
        // Only one trial at a time.
        assert!(matches!(b.admit("p"), Admission::Wait(_)));
        b.trial("p").record(true);
        assert_eq!(b.state("p"), BreakerState::Open, "a failed trial reopens");

        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.admit("p"), Admission::Trial);
        b.trial("p").record(false);
        assert_eq!(b.state("p"), BreakerState::Closed);
        assert_eq!(b.admit("p"), Admission::Go);
    }

    #[test]
    fn a_success_resets_the_count_and_zero_never_opens() {
        let b = Breakers::new(2, Duration::from_secs(60));
        b.record("p", true);
        b.record("p", false);
        b.record("p", true);
        assert_eq!(b.state("p"), BreakerState::Closed);

        let off = Breakers::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            off.record("p", true);
        }
        assert_eq!(off.admit("p"), Admission::Go);
    }

    #[test]
    fn a_trial_call_dropped_before_its_result_lets_the_next_one_try() {
        let b = Breakers::new(1, Duration::from_millis(10));
        b.record("p", true);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.admit("p"), Admission::Trial);
        drop(b.trial("p"));
        assert_eq!(
            b.admit("p"),
            Admission::Trial,
            "not waiting for the dropped one"
        );
        b.trial("p").record(false);
        assert_eq!(b.state("p"), BreakerState::Closed);
    }
}
