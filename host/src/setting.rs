//! A setting that cannot be used: the one error every configuration section's check
//! returns. Each section lives with the module it configures and checks itself; `config`
//! only assembles them.

/// A value out of range, or settings that disagree: names the key and what would be
/// accepted.
#[derive(Debug, thiserror::Error)]
#[error("{key} {problem}")]
pub struct InvalidSetting {
    /// The offending key, e.g. `inbox.lease_ms` or `plugin.<name>`.
    pub key: String,
    /// What is wrong with it and what would be accepted.
    pub problem: String,
}

impl InvalidSetting {
    /// `key` is invalid: `problem`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
