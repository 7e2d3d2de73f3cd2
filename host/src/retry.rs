//! Retry policy: exponential backoff with a cap and jitter, and the rule that decides
//! between another attempt and a dead letter. Pure functions; the settler applies them.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// How a failed attempt is retried. Retry `n` (1-based) waits
/// `min(base_delay * multiplier^(n-1), max_delay)`, spread by +/- `jitter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts after the first; 0 sends the first failure to the failed messages.
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds.
    pub base_delay_ms: u64,
    /// Growth factor per retry (>= 1).
    pub multiplier: f64,
    /// Cap for any delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Random spread from 0.0 (none) to 1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay_ms: 1_000,
            multiplier: 2.0,
            max_delay_ms: 300_000,
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// Check the ranges; `section` names the config section in the error.
    pub fn validate(&self, section: &str) -> Result<(), InvalidSetting> {
        let problem = if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            "multiplier must be a finite number >= 1"
        } else if !(0.0..=1.0).contains(&self.jitter) {
            "jitter must be between 0.0 and 1.0"
        } else if self.max_delay_ms < self.base_delay_ms {
            "max_delay_ms must be >= base_delay_ms"
        } else {
            return Ok(());
        };
        Err(InvalidSetting::new(section, problem))
    }

    /// May a message that just failed its `attempt`-th attempt (1-based) be tried again?
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt <= self.max_retries
    }

    /// The wait before retry number `retry` (1 = the first retry).
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let exponent = retry.saturating_sub(1).min(1_000) as i32;
        let raw = self.base_delay_ms as f64 * self.multiplier.powi(exponent);
        let capped = raw.min(self.max_delay_ms as f64);
        let spread = if self.jitter > 0.0 {
            capped * self.jitter * rng.random_range(-1.0..=1.0)
        } else {
            0.0
        };
        Duration::from_millis((capped + spread).clamp(0.0, self.max_delay_ms as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            base_delay_ms: 100,
            multiplier: 2.0,
            max_delay_ms: 1_000,
            jitter,
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let mut rng = rand::rng();
        let delays: Vec<u128> = (1..=6)
            .map(|n| policy(0.0).delay(n, &mut rng).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_stays_within_its_spread_and_the_cap() {
        let mut rng = rand::rng();
        for _ in 0..1_000 {
            let d = policy(0.5).delay(2, &mut rng).as_millis();
            assert!((100..=300).contains(&d), "{d}");
            assert!(policy(1.0).delay(9, &mut rng).as_millis() <= 1_000);
        }
    }

    #[test]
    fn max_retries_counts_attempts_after_the_first() {
        let p = RetryPolicy {
            max_retries: 2,
            ..policy(0.0)
        };
        assert!(p.allows_another(1));
        assert!(p.allows_another(2));
        assert!(!p.allows_another(3));
    }
}
