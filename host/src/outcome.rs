//! What a handler call produced, and the one place that turns it into a verdict for the
//! settler: handled, retry later (with which delay), or dead letter.

use std::time::Duration;

use rand::Rng;

use crate::effects::Effects;
use crate::retry::RetryPolicy;

/// The raw result of one sandboxed call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `handle` returned ok; its effects are to be committed.
    Ok(Effects),
    /// The handler asked for a retry.
    Retry {
        /// Its reason.
        reason: String,
        /// Its delay hint, which wins over the backoff (up to the policy's `max_delay_ms`).
        delay: Option<Duration>,
    },
    /// The handler rejected the message for good.
    Reject(String),
    /// The call trapped (panic, deadline, memory cap, fuel) or could not start.
    Trap(String),
}

/// What the settler does with one (message, plugin) pair.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Record in the ledger and commit the effects.
    Handled(Effects),
    /// Keep the message; try again after `delay`.
    Retry {
        /// The attempt's error, kept in the history.
        error: String,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// Move to the failed messages.
    Dead {
        /// The final error.
        error: String,
    },
    /// The plugin was not called (its circuit breaker is open): try again after `delay`
    /// without counting an attempt.
    Deferred {
        /// Wait before the next try.
        delay: Duration,
    },
    /// The plugin was not called yet: its state keys are contended, so it runs inside
    /// the settle, over the committed state under the keys' locks. One the settle could
    /// not run (its budget was spent) is tried again without counting an attempt.
    RunAtSettle,
    /// The plugin was not called: it keeps the order of the message's key, and an earlier
    /// message of the key is not settled for it yet (or a dead letter holds the key). The
    /// message waits, parked, without counting an attempt.
    Waits,
}

/// Classify `outcome` of attempt number `attempt` (1-based) under `policy`.
pub fn decide(outcome: Outcome, attempt: u32, policy: &RetryPolicy, rng: &mut impl Rng) -> Verdict {
    let (error, hint) = match outcome {
        Outcome::Ok(effects) => return Verdict::Handled(effects),
        Outcome::Reject(reason) => {
            return Verdict::Dead {
                error: format!("rejected: {reason}"),
            };
        }
        Outcome::Retry { reason, delay } => (format!("retry requested: {reason}"), delay),
        Outcome::Trap(reason) => (format!("trapped: {reason}"), None),
    };
    if !policy.allows_another(attempt) {
        return Verdict::Dead {
            error: format!(
                "{error} (retries exhausted after {attempt} attempt{})",
                if attempt == 1 { "" } else { "s" }
            ),
        };
    }
    // A hint is capped like the backoff: no message is parked longer than `max_delay_ms`.
    let delay = match hint {
        Some(hint) => hint.min(Duration::from_millis(policy.max_delay_ms)),
        None => policy.delay(attempt, rng),
    };
    Verdict::Retry { error, delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            base_delay_ms: 10,
            multiplier: 3.0,
            max_delay_ms: 1_000,
            jitter: 0.0,
        }
    }

    #[test]
    fn retries_until_the_budget_is_spent() {
        let rng = &mut rand::rng();
        let trap = || Outcome::Trap("boom".into());
        assert_eq!(
            decide(trap(), 1, &policy(), rng),
            Verdict::Retry {
                error: "trapped: boom".into(),
                delay: Duration::from_millis(10)
            }
        );
        assert!(
            matches!(decide(trap(), 2, &policy(), rng), Verdict::Retry { delay, .. } if delay == Duration::from_millis(30))
        );
        assert_eq!(
            decide(trap(), 3, &policy(), rng),
            Verdict::Dead {
                error: "trapped: boom (retries exhausted after 3 attempts)".into()
            }
        );
    }

    #[test]
    fn the_handlers_delay_hint_wins_and_reject_is_final() {
        let rng = &mut rand::rng();
        let hinted = Outcome::Retry {
            reason: "busy".into(),
            delay: Some(Duration::from_millis(700)),
        };
        assert!(
            matches!(decide(hinted, 1, &policy(), rng), Verdict::Retry { delay, .. } if delay == Duration::from_millis(700))
        );
        let ten_years = Outcome::Retry {
            reason: "busy".into(),
            delay: Some(Duration::from_secs(10 * 365 * 86_400)),
        };
        assert!(
            matches!(decide(ten_years, 1, &policy(), rng), Verdict::Retry { delay, .. } if delay == Duration::from_millis(1_000)),
            "a hint is capped at the policy's max_delay_ms"
        );
        assert_eq!(
            decide(Outcome::Reject("bad".into()), 1, &policy(), rng),
            Verdict::Dead {
                error: "rejected: bad".into()
            }
        );
    }
}
