//! The seam between the SDK and whoever runs the handler: the wharf host (through the WIT
//! imports) on `wasm32`, or [`crate::testing::TestHost`] natively.

use std::time::Duration;

use crate::bindings::wharf::plugin::types as wit;
use crate::{Error, Manifest, Message, Plugin};

/// The `manifest` export: convert the plugin's manifest to the WIT type.
pub fn guest_manifest<P: Plugin>() -> wit::Manifest {
    let Manifest {
        name,
        version,
        subscriptions,
        retry,
        limits,
    } = P::manifest();
    wit::Manifest {
        name,
        version,
        subscriptions,
        retry: retry.map(|r| wit::RetryPolicy {
            max_retries: r.max_retries,
            base_delay_ms: millis(r.base_delay),
            multiplier: r.multiplier,
            max_delay_ms: millis(r.max_delay),
            jitter: r.jitter,
        }),
        limits: limits.map(|l| wit::Limits {
            memory_mib: l.memory_mib,
            deadline_ms: l.deadline.map(millis),
            fuel: l.fuel,
            max_concurrency: l.max_concurrency,
        }),
    }
}

/// `duration` in whole milliseconds, at most `u64::MAX` (a longer one is that, not its
/// low bits): the host caps a retry's delay at the policy's `max_delay` anyway.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The `handle` export: convert the message in and the outcome out.
pub fn guest_handle<P: Plugin>(message: wit::Message) -> Result<(), wit::HandlerError> {
    let message = Message {
        id: message.id,
        kind: message.kind,
        source: message.source,
        headers: message
            .headers
            .into_iter()
            .map(|h| (h.key, h.value))
            .collect(),
        payload: message.payload,
        attempt: message.attempt,
    };
    P::handle(&message).map_err(|e| match e {
        Error::Retry { reason, delay } => wit::HandlerError::Retry(wit::RetryRequest {
            reason,
            delay_ms: delay.map(millis),
        }),
        Error::Reject(reason) => wit::HandlerError::Reject(reason),
    })
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::wit;
    use crate::bindings::wharf::plugin::{config, log, outbox, state};
    use crate::requests::{Destination, Level};

    fn headers(pairs: &[(&str, &str)]) -> Vec<wit::Header> {
        pairs
            .iter()
            .map(|(k, v)| wit::Header {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect()
    }

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        log::log(level, message, &headers(fields));
    }

    pub fn publish(
        destination: Destination,
        kind: &str,
        headers_: &[(&str, &str)],
        payload: &[u8],
    ) -> crate::Result<String> {
        let destination = match destination {
            Destination::Queue(q) => wit::Destination::Queue(q),
            Destination::Exchange {
                exchange,
                routing_key,
            } => wit::Destination::Exchange(wit::ExchangeTarget {
                exchange,
                routing_key,
            }),
        };
        outbox::publish(&destination, kind, &headers(headers_), payload).map_err(crate::reject)
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }

    pub fn state_set(key: &str, value: &[u8]) {
        state::set(key, value)
    }

    pub fn state_delete(key: &str) {
        state::delete(key)
    }

    pub fn config_get(key: &str) -> Option<String> {
        config::get(key)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::requests::{Destination, Level};
    use crate::testing::with_current;

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        with_current(|h| h.log(level, message, fields))
    }

    pub fn publish(
        destination: Destination,
        kind: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> crate::Result<String> {
        with_current(|h| h.publish(destination, kind, headers, payload))
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        with_current(|h| h.state_get(key))
    }

    pub fn state_set(key: &str, value: &[u8]) {
        with_current(|h| h.state_set(key, value))
    }

    pub fn state_delete(key: &str) {
        with_current(|h| h.state_delete(key))
    }

    pub fn config_get(key: &str) -> Option<String> {
        with_current(|h| h.config_get(key))
    }
}

pub use imp::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_longer_than_the_host_takes_is_the_most_it_takes() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_secs(u64::MAX / 999)), u64::MAX);
    }
}
