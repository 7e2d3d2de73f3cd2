//! The plugin's self-description: name, version, subscriptions, default retry policy,
//! limits, the hosts it asks to call, and whether it handles the messages of a key in
//! order.

use std::time::Duration;

/// What the host learns about a plugin when it loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Plugin identity, unique in a host or fleet.
    pub name: String,
    /// Plugin version, recorded with every message it handles.
    pub version: String,
    /// Message kinds to receive: exact names or patterns (`*` one word, `#` any words).
    pub subscriptions: Vec<String>,
    /// Default retry policy; operator config may override it.
    pub retry: Option<RetryPolicy>,
    /// Resources the plugin asks for; operator config may override them.
    pub limits: Option<Limits>,
    /// Hosts the plugin asks to call (`https://api.example.com`), as an operator grants
    /// them in `[plugin.<name>] allowed_hosts`.
    pub allowed_hosts: Vec<String>,
    /// Handle the messages of one ordering key one at a time, in publish order; the
    /// operator's `[plugin.<name>] ordered` overrides it.
    pub ordered: bool,
}

/// Resources one plugin's calls may use. `None` fields take the host's defaults, and the
/// host's `[runtime]` settings are the most a plugin may ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Linear-memory cap of one instance, in MiB.
    pub memory_mib: Option<u32>,
    /// Wall-clock deadline of one `handle` call.
    pub deadline: Option<Duration>,
    /// Instruction budget of one call (only where the host meters fuel).
    pub fuel: Option<u64>,
    /// Calls of this plugin running at once on one host.
    pub max_concurrency: Option<u32>,
}

/// Exponential backoff for retries: `base * multiplier^(retry-1)`, capped, with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Growth factor per retry.
    pub multiplier: f64,
    /// Cap for any delay.
    pub max_delay: Duration,
    /// Random spread, 0.0..=1.0.
    pub jitter: f64,
}

impl Manifest {
    /// A manifest with no subscriptions yet.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            subscriptions: Vec::new(),
            retry: None,
            limits: None,
            allowed_hosts: Vec::new(),
            ordered: false,
        }
    }

    /// Subscribe to a kind or pattern.
    pub fn subscribe(mut self, pattern: &str) -> Self {
        self.subscriptions.push(pattern.to_owned());
        self
    }

    /// Set the plugin's default retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Ask for resource limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Ask to call `hosts` (`scheme://host[:port]`, `*` and `*.domain` patterns). Asking
    /// grants nothing: the host's operator grants them in `[plugin.<name>] allowed_hosts`,
    /// and the host says when it loads the plugin which of them are not granted.
    pub fn calls(mut self, hosts: &str) -> Self {
        self.allowed_hosts.push(hosts.to_owned());
        self
    }

    /// Ask for the messages of one ordering key one at a time, in the order they were
    /// published, across the fleet: a key's next message waits until this plugin handled
    /// the one before it (or, after a dead letter, until an operator releases the key).
    /// Messages without a key are not ordered. The operator's `[plugin.<name>] ordered`
    /// overrides it.
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }
}
