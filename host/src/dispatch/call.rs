//! One handler call: a plugin's call slot and the host's, the breaker's admission, the
//! sandbox run with the message's trace, and the verdict the outcome comes to under the
//! plugin's retry policy, counted (metrics, flow) and logged.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::breaker::Admission;
use super::{Delays, Dispatcher, span};
use crate::envelope::Envelope;
use crate::outcome::{Outcome, Verdict, decide};
use crate::retry::RetryPolicy;
use crate::runtime::{CallContext, Plugin, StateReader};
use crate::store::{PluginResult, PluginVersion};
use crate::trace::{self, TraceContext};

impl Dispatcher {
    pub(super) async fn call(
        &self,
        plugin: &Plugin,
        message: &Envelope,
        delays: Delays,
        state: Arc<dyn StateReader>,
    ) -> PluginResult {
        let attempt = message.attempts + 1;
        let name = plugin.name();
        let trace = TraceContext::for_call(&message.headers);
        // Opened at debug only: at info, the span's fields formatted for every call cost
        // ~2 us of host CPU per message (the bench's profile); the lines a call logs
        // carry its message id, plugin and trace ids themselves.
        let span = tracing::debug_span!("message", message_id = %message.id, kind = message.kind, plugin = name, version = plugin.manifest.version, attempt, trace_id = %trace.trace_id(), span_id = %trace.span_id());
        async {
            let admission = self.breakers.admit(name);
            let verdict = match admission {
                Admission::Wait(delay) => {
                    tracing::debug!(?delay, "circuit breaker open: the message waits");
                    Verdict::Deferred { delay }
                }
                Admission::Go | Admission::Trial => {
                    let trial = (admission == Admission::Trial).then(|| self.breakers.trial(name));
                    let began = trace::export::enabled().then(SystemTime::now);
                    let (outcome, elapsed) = self.run(plugin, message, attempt, state, trace).await;
                    let failed = matches!(outcome, Outcome::Trap(_) | Outcome::Retry { .. });
                    match trial {
                        Some(trial) => trial.record(failed),
                        None => self.breakers.record(name, failed),
                    }
                    let mut policy = self.policy(plugin).clone();
                    if delays == Delays::Exact {
                        policy.jitter = 0.0;
                    }
                    let verdict = decide(outcome, attempt, &policy, &mut rand::rng());
                    crate::metrics::handler_call(name, &verdict, elapsed);
                    self.flow.call(name, elapsed);
                    // A line about the call, with its ids (the call's span is off at info).
                    macro_rules! about_call {
                        ($level:expr, $($message:tt)+) => {
                            tracing::event!(
                                $level,
                                message_id = %message.id,
                                plugin = name,
                                attempt,
                                trace_id = %trace.trace_id(),
                                span_id = %trace.span_id(),
                                ?elapsed,
                                $($message)+
                            )
                        };
                    }
                    match &verdict {
                        Verdict::Handled(_) => tracing::debug!(?elapsed, "handled"),
                        Verdict::Retry { error, delay } => about_call!(
                            tracing::Level::WARN,
                            ?delay,
                            "attempt failed, will retry: {error}"
                        ),
                        Verdict::Dead { error } => about_call!(
                            tracing::Level::ERROR,
                            "gave up on the message (a dead letter, unless the settle finds what it read changed and runs it again): {error}"
                        ),
                        Verdict::Deferred { .. } | Verdict::RunAtSettle | Verdict::Waits => {}
                    }
                    if let Some(began) = began {
                        span::export(message, plugin, attempt, trace, began, &verdict);
                    }
                    verdict
                }
            };
            PluginResult {
                plugin: version_of(plugin),
                attempt,
                verdict,
            }
        }
        .instrument(span)
        .await
    }

    /// Call `plugin` under its limits: its own concurrency, then the host-wide call budget.
    /// The outcome and how long the call itself took (the wait for the slots is counted
    /// apart: `wharf_handler_slot_wait_seconds`).
    async fn run(
        &self,
        plugin: &Plugin,
        message: &Envelope,
        attempt: u32,
        state: Arc<dyn StateReader>,
        trace: TraceContext,
    ) -> (Outcome, Duration) {
        let name = plugin.name();
        let context = CallContext {
            plugin: Arc::from(name),
            message_id: message.id,
            config: self.plugin_config.get(name).cloned().unwrap_or_default(),
            state,
            trace,
            request: message.reply_to().is_some(),
        };
        let queued = Instant::now();
        let _plugin_permit = self
            .plugin_slots(name, plugin.limits.max_concurrency)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let _permit = self
            .calls
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let started = Instant::now();
        crate::metrics::slot_wait(name, started - queued);
        let outcome = self.runtime.call(plugin, message, attempt, context).await;
        (outcome, started.elapsed())
    }

    /// `plugin`'s concurrency permits, `max` of them. A new maximum (a new version, a
    /// new manifest) starts a new set; calls holding the old set's permits finish.
    fn plugin_slots(&self, plugin: &str, max: usize) -> Arc<Semaphore> {
        let mut slots = self.plugin_calls.lock().expect("no panics under this lock");
        match slots.get(plugin) {
            Some((n, semaphore)) if *n == max => semaphore.clone(),
            _ => {
                let semaphore = Arc::new(Semaphore::new(max));
                slots.insert(plugin.to_owned(), (max, semaphore.clone()));
                semaphore
            }
        }
    }

    /// Calls of `plugin` running (or holding its permit) now.
    pub fn in_flight(&self, plugin: &str) -> usize {
        let slots = self.plugin_calls.lock().expect("no panics under this lock");
        slots
            .get(plugin)
            .map_or(0, |(n, s)| n - s.available_permits())
    }

    /// Operator config for the plugin wins, then the plugin's manifest, then the default.
    fn policy<'a>(&'a self, plugin: &'a Plugin) -> &'a RetryPolicy {
        self.config
            .plugin
            .get(plugin.name())
            .and_then(|c| c.retry.as_ref())
            .or(plugin.manifest.retry.as_ref())
            .unwrap_or(&self.config.retry)
    }
}

/// The exact version of `plugin`, as the store records it.
pub(super) fn version_of(plugin: &Plugin) -> PluginVersion {
    PluginVersion {
        name: plugin.name().to_owned(),
        version: plugin.manifest.version.clone(),
        sha256: plugin.sha256.clone(),
    }
}
