//! Dispatch: route one message to the plugins subscribed to its kind, call each in the
//! sandbox under the host-wide call budget, and classify each outcome into a verdict
//! (`outcome::decide`) for the settle. Shared by every source: the inbox worker and the
//! AMQP consumers.
//!
//! A batch's messages run concurrently, except a contended plugin's, which are left to
//! run inside the settle (`contention`), and an ordered plugin's on a key's later messages
//! of the batch (`order`), and those an earlier message of the key holds
//! ([`Verdict::Waits`]). The settle (`crate::settle`) runs those, and
//! handlers whose state reads went stale, through [`Dispatcher::call_again`]. One call,
//! from its slots to its verdict, is `call`; what the host counts per minute for the flow
//! history, `flow`.

pub mod breaker;
mod call;
mod contention;
mod flow;
mod order;
pub mod report;
mod span;
mod throughput;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};

use crate::envelope::{DeadLetterKey, Envelope};
use crate::outcome::Verdict;
use crate::plugins::{Catalog, PluginConfig};
use crate::reply::{CALLER, REPLY_TO_HEADER, ReplyTo};
use crate::retry::RetryPolicy;
use crate::runtime::{Plugin, Runtime, StateError, StateReader};
use crate::store::{
    KeyOrder, Ledger, PluginResult, SettleBudget, SettleSummary, Settlement, StateQuota, Transport,
};
use breaker::Breakers;
use call::version_of;
use contention::{Contention, FIRST_LOOK, by_plugin};
pub use flow::Flow;
pub use throughput::Throughput;

/// How retry delays are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delays {
    /// The policy's delay spread by its jitter (the inbox schedules any delay).
    Jittered,
    /// The policy's delay without jitter, so retries share a few delay queues (AMQP).
    Exact,
}

/// What dispatch is configured with (assembled by `Config::dispatch`).
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// `runtime.concurrency`: handler calls at once on this host.
    pub concurrency: usize,
    /// `runtime.breaker_failures`: failures in a row that open a plugin's breaker.
    pub breaker_failures: u32,
    /// `runtime.breaker_cool_down_ms`.
    pub breaker_cool_down: Duration,
    /// `runtime.settle_runs` and `runtime.settle_runs_ms`.
    pub settle_runs: SettleBudget,
    /// `inbox.max_payload_bytes`: the largest payload a delivery may carry.
    pub max_payload_bytes: usize,
    /// `runtime.max_state_keys` and `max_state_bytes`: the state quota of plugins that
    /// set none.
    pub state_quota: StateQuota,
    /// `[retry]`: the policy of plugins that set none.
    pub retry: RetryPolicy,
    /// `[plugin.<name>]`: config values and retry policies per plugin.
    pub plugin: BTreeMap<String, PluginConfig>,
}

/// Calls plugins for messages of any source.
pub struct Dispatcher {
    /// The store as the sandbox's state reader.
    state: Arc<dyn StateReader>,
    runtime: Arc<Runtime>,
    plugins: Arc<Catalog>,
    config: DispatchConfig,
    /// Each plugin's `[plugin.<name>].config`, shared by its calls rather than copied.
    plugin_config: BTreeMap<String, Arc<BTreeMap<String, String>>>,
    /// `runtime.concurrency` permits, shared by every call on this host.
    calls: Semaphore,
    /// Each plugin's `max_concurrency` permits, with their number; taken before a host
    /// permit, so a plugin waiting for its own never holds one of the host's.
    plugin_calls: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    /// One circuit breaker per plugin.
    breakers: Breakers,
    /// Which plugins run a batch's messages in order.
    contention: Contention,
    /// Messages handled per queue over the last minute.
    throughput: Throughput,
    flow: Flow,
    /// Notified when a settle wrote to the outbox, so this host's relays (AMQP, Kafka)
    /// send it at once.
    outbox: [Arc<Notify>; 2],
}

impl Dispatcher {
    /// A dispatcher over the plugins `plugins` serves at each message; handlers read
    /// their state from `store`.
    pub fn new(
        store: Arc<dyn Ledger>,
        runtime: Arc<Runtime>,
        plugins: Arc<Catalog>,
        config: DispatchConfig,
    ) -> Self {
        let plugin_config = config
            .plugin
            .iter()
            .map(|(name, c)| (name.clone(), Arc::new(c.config.clone())))
            .collect();
        Self {
            state: Arc::new(StoreState(store)),
            runtime,
            plugins,
            calls: Semaphore::new(config.concurrency),
            plugin_calls: Mutex::default(),
            breakers: Breakers::new(config.breaker_failures, config.breaker_cool_down),
            contention: Contention::default(),
            throughput: Throughput::default(),
            flow: Flow::default(),
            outbox: Default::default(),
            config,
            plugin_config,
        }
    }

    /// The plugins this dispatcher serves.
    pub fn plugins(&self) -> &Arc<Catalog> {
        &self.plugins
    }

    /// Whether `plugin` keeps the order of keys (`[plugin.<name>] ordered`, else its
    /// manifest's), and if so what its dead letters do to a key.
    pub fn ordered(&self, plugin: &Plugin) -> Option<DeadLetterKey> {
        let config = self.config.plugin.get(plugin.name());
        let ordered = config.and_then(|c| c.ordered);
        (ordered.unwrap_or(plugin.manifest.ordered))
            .then(|| config.map(|c| c.dead_letter_key).unwrap_or_default())
    }

    /// Whether a plugin that keeps the order of keys is routed one of the keyed
    /// `messages`: only then must a broker consumer keep their keys' order across
    /// batches (wait for the batch before, send a key waiting in the inbox there).
    pub fn orders_any(&self, messages: &[Envelope]) -> bool {
        self.key_order() == KeyOrder::Keep
            && (messages.iter().filter(|m| m.key.is_some()))
                .any(|m| (self.plugins.route(&m.kind).iter()).any(|p| self.ordered(p).is_some()))
    }

    /// How claims treat keys: kept in order while a served plugin keeps it.
    pub fn key_order(&self) -> KeyOrder {
        if self
            .plugins
            .current()
            .iter()
            .any(|p| self.ordered(p).is_some())
        {
            KeyOrder::Keep
        } else {
            KeyOrder::Ignore
        }
    }

    /// The largest payload a message may carry into a handler, or a handler publish
    /// (`inbox.max_payload_bytes`).
    pub fn max_payload_bytes(&self) -> usize {
        self.config.max_payload_bytes
    }

    /// The plugins' circuit breakers.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Messages this host handled per queue over the last minute.
    pub fn throughput(&self) -> &Throughput {
        &self.throughput
    }

    /// Notified when a settle of this host wrote to the outbox: the relay of `transport`
    /// waits on it.
    pub fn outbox_written(&self, transport: Transport) -> Arc<Notify> {
        self.outbox[transport as usize].clone()
    }

    /// What this host settled and called per minute since its last report.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// Run every plugin still owing a verdict on each of `messages`, up to
    /// `runtime.concurrency` messages at once (a slow one does not hold up the start of
    /// the others). A contended plugin is not run here: its messages run inside the
    /// settle ([`Verdict::RunAtSettle`]). When a plugin no batch has shown yet is due,
    /// the first `FIRST_LOOK` messages run first and are measured, then the rest. The
    /// settlements come back in the order of `messages`.
    pub async fn handle_batch(
        &self,
        mut messages: Vec<Envelope>,
        delays: Delays,
    ) -> Vec<Settlement> {
        order::in_key_order(self, &mut messages);
        let mut settlements = Vec::with_capacity(messages.len());
        if self.owes_a_first_look(&messages) {
            let rest = messages.split_off(FIRST_LOOK.min(messages.len()));
            settlements = self.handle_concurrently(messages, delays).await;
            self.first_look(&settlements);
            messages = rest;
        }
        settlements.extend(self.handle_concurrently(messages, delays).await);
        settlements
    }

    /// Whether a plugin subscribed to a kind of `messages` has not been measured yet:
    /// each kind routed once, not each message (a batch holds a few kinds).
    fn owes_a_first_look(&self, messages: &[Envelope]) -> bool {
        let mut kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds.iter().any(|kind| {
            self.plugins
                .route(kind)
                .iter()
                .any(|p| !self.contention.seen(p.name()))
        })
    }

    /// [`Dispatcher::handle_batch`] without the first look.
    async fn handle_concurrently(
        &self,
        messages: Vec<Envelope>,
        delays: Delays,
    ) -> Vec<Settlement> {
        let mut settlements: Vec<(usize, Settlement)> =
            futures::stream::iter(messages.into_iter().enumerate())
                .map(|(i, message)| async move { (i, self.handle(message, delays).await) })
                .buffer_unordered(self.config.concurrency)
                .collect()
                .await;
        settlements.sort_unstable_by_key(|(i, _)| *i);
        settlements.into_iter().map(|(_, s)| s).collect()
    }

    /// Run every plugin still owing a verdict on `message`, except the ordered ones an
    /// earlier message of its key holds ([`Verdict::Waits`]).
    async fn handle(&self, mut message: Envelope, delays: Delays) -> Settlement {
        if let Some(refused) = unanswerable(&message) {
            tracing::warn!(message_id = %message.id, kind = message.kind, "{refused}; moving it to the failed messages");
            return Settlement {
                message,
                results: Vec::new(),
                refused: Some(refused),
            };
        }
        let routed = self.plugins.route(&message.kind);
        if let Some(turn) = &mut message.turn {
            turn.ordered = (routed.iter())
                .filter_map(|p| Some((p.name().to_owned(), self.ordered(p)?)))
                .collect();
        }
        let refused = routed.is_empty().then(|| {
            tracing::warn!(message_id = %message.id, kind = message.kind, "no plugin subscribes to this kind; moving it to the failed messages");
            format!(
                "no handler for kind {}: no loaded plugin subscribes to it",
                message.kind
            )
        });
        let pending: Vec<Arc<Plugin>> = routed
            .into_iter()
            .filter(|p| !message.settled_plugins.contains(p.name()))
            .collect();
        let waits = |name: &str| {
            (message.turn.as_ref())
                .is_some_and(|t| t.ordered.contains_key(name) && t.waits_for.contains(name))
        };
        let calls = pending.iter().map(|p| async {
            if waits(p.name()) {
                PluginResult {
                    plugin: version_of(p),
                    attempt: message.attempts + 1,
                    verdict: Verdict::Waits,
                }
            } else if self.contention.at_settle(p.name())
                || (message.turn.as_ref()).is_some_and(|t| t.runs_after.contains(p.name()))
            {
                PluginResult {
                    plugin: version_of(p),
                    attempt: message.attempts + 1,
                    verdict: Verdict::RunAtSettle,
                }
            } else {
                self.call(p, &message, delays, self.state.clone()).await
            }
        });
        let results = futures::future::join_all(calls).await;
        Settlement {
            message,
            results,
            refused,
        }
    }

    /// Learn from a settled batch which plugins contend for state keys, and on which;
    /// count its messages that every plugin handled, and what its settle (`summary`)
    /// brought to a verdict.
    pub fn observe(&self, batch: &[Settlement], summary: &SettleSummary) {
        self.throughput.record_handled(batch);
        self.flow.settled(summary);
        if summary.outboxed > 0 {
            self.outbox.iter().for_each(|relay| relay.notify_one());
        }
        for (name, results) in by_plugin(batch) {
            self.contention.observe(name, results);
        }
    }

    /// The first measure of the plugins `batch` ran that had none.
    fn first_look(&self, batch: &[Settlement]) {
        for (name, results) in by_plugin(batch) {
            self.contention.first_look(name, results);
        }
    }

    /// How much running a settle may do while it holds its batch's state keys.
    pub fn settle_budget(&self) -> SettleBudget {
        self.config.settle_runs
    }

    /// The keys `plugin`'s messages are expected to touch: those its recent batches'
    /// messages shared.
    pub fn expected_keys(&self, plugin: &str) -> Vec<String> {
        self.contention.expected_keys(plugin)
    }

    /// How many state keys and bytes `plugin` may hold in all.
    pub fn state_quota(&self, plugin: &str) -> StateQuota {
        let host = self.config.state_quota;
        match self.config.plugin.get(plugin) {
            Some(config) => config.state_quota(host),
            None => host,
        }
    }

    /// Run `plugin` as served now on `message` again, as attempt `attempt`, with delays
    /// drawn as `delays` says, reading state through `state` (the settle's view); `None`
    /// when the plugin is no longer served.
    pub async fn call_again(
        &self,
        message: &Envelope,
        plugin: &str,
        attempt: u32,
        delays: Delays,
        state: Arc<dyn StateReader>,
    ) -> Option<PluginResult> {
        let plugin = self.plugins.current().get(plugin)?.clone();
        let mut result = self.call(&plugin, message, delays, state).await;
        result.attempt = attempt;
        Some(result)
    }
}

/// The store as the sandbox's state reader.
struct StoreState(Arc<dyn Ledger>);

#[async_trait::async_trait]
impl StateReader for StoreState {
    async fn read(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>, StateError> {
        Ok(self.0.state_get(plugin, key).await?)
    }
}

/// Why `message` is a request that must not be handled, if it is one: its caller stopped
/// waiting, or its reply address names no queue an answer could go to.
fn unanswerable(message: &Envelope) -> Option<String> {
    if let Some(Err(invalid)) = message.reply_to().map(ReplyTo::check) {
        let to = crate::text::bounded(message.headers[REPLY_TO_HEADER].clone(), 300);
        return Some(format!(
            "reply-to {to:?} names nowhere an answer can go ({invalid}); it was not handled. Send the request again with reply-to naming an inbox queue, amqp:<queue>, or {CALLER}"
        ));
    }
    let at = message.expires_at()?;
    let now = crate::store::now_ms();
    (at <= now).then(|| {
        format!(
            "expired: its requester stopped waiting {} ms before it was handled (expires-at {at}); it was not handled",
            now - at
        )
    })
}
