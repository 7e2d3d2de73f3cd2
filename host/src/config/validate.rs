//! The checks a configuration passes before it is used: ranges that types cannot express
//! and settings that must agree with each other (a plugin's limits within the runtime's).
//! Each failure names the key and says what would be accepted.

use super::{Config, ConfigError};

impl Config {
    /// Check ranges that types cannot express and settings that must agree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let url = &self.database.url;
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return invalid(
                "database.url",
                "must start with sqlite: (embedded) or postgres:// (fleet)",
            );
        }
        if self.runtime.memory_limit_mib == 0 || self.runtime.memory_limit_mib > 4096 {
            return invalid("runtime.memory_limit_mib", "must be between 1 and 4096");
        }
        if self.runtime.deadline_ms == 0 {
            return invalid("runtime.deadline_ms", "must be greater than 0");
        }
        if self.runtime.concurrency == 0 {
            return invalid("runtime.concurrency", "must be greater than 0");
        }
        if (self.runtime.instance_pool as usize) < self.runtime.concurrency {
            return invalid(
                "runtime.instance_pool",
                "must be at least runtime.concurrency",
            );
        }
        if self.inbox.batches_in_flight == 0 {
            return invalid("inbox.batches_in_flight", "must be greater than 0");
        }
        if self.inbox.batch_size == 0 {
            return invalid("inbox.batch_size", "must be greater than 0");
        }
        if self.inbox.lease_ms < 30 {
            return invalid(
                "inbox.lease_ms",
                "must be at least 30 (the lease is renewed every third of it)",
            );
        }
        for (name, plugin) in &self.plugin {
            let r = &self.runtime;
            let above =
                |value: Option<u64>, min: u64, max: u64| value.is_some_and(|v| v < min || v > max);
            let problem = if above(plugin.memory_limit_mib, 1, r.memory_limit_mib) {
                Some(format!(
                    "memory_limit_mib must be between 1 and runtime.memory_limit_mib ({}); raise the runtime's to give this plugin more",
                    r.memory_limit_mib
                ))
            } else if above(plugin.deadline_ms, 1, r.deadline_ms) {
                Some(format!(
                    "deadline_ms must be between 1 and runtime.deadline_ms ({}); raise the runtime's to give this plugin longer",
                    r.deadline_ms
                ))
            } else if plugin.fuel.is_some() && r.fuel.is_none() {
                Some("fuel needs fuel metering: set runtime.fuel too".to_owned())
            } else if above(plugin.fuel, 1, r.fuel.unwrap_or(u64::MAX)) {
                Some("fuel must be between 1 and runtime.fuel".to_owned())
            } else if above(
                plugin.max_concurrency.map(|n| n as u64),
                1,
                r.concurrency as u64,
            ) {
                Some(format!(
                    "max_concurrency must be between 1 and runtime.concurrency ({})",
                    r.concurrency
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ConfigError::Invalid {
                    key: "plugin",
                    problem: format!("(plugin.{name}): {problem}"),
                });
            }
        }
        if let Err(e) = self.amqp.url.parse::<lapin::uri::AMQPUri>() {
            return Err(ConfigError::Invalid {
                key: "amqp.url",
                problem: format!(
                    "is not an AMQP URL ({e}); expected amqp://user:password@host:5672/vhost"
                ),
            });
        }
        if self.amqp.batch_size == 0 {
            return invalid("amqp.batch_size", "must be greater than 0");
        }
        for c in &self.amqp.consume {
            if c.consumers == 0 || c.prefetch == 0 {
                return Err(ConfigError::Invalid {
                    key: "amqp.consume",
                    problem: format!(
                        "(queue {}): consumers and prefetch must be greater than 0",
                        c.queue
                    ),
                });
            }
        }
        self.retry.validate("retry")?;
        for (name, plugin) in &self.plugin {
            if let Some(policy) = &plugin.retry {
                policy
                    .validate("plugin.<name>.retry")
                    .map_err(|e| ConfigError::Invalid {
                        key: "plugin.<name>.retry",
                        problem: format!("(plugin {name}): {e}"),
                    })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_amqp_url_names_the_key() {
        let mut config = Config::default();
        config.amqp.url = "http://broker".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("amqp.url"), "{error}");
    }
}
