//! The per-call store data (`HostState`) and the host side of the plugin's imports: log,
//! outbox, reply, state and config. Publishes and state writes are buffered in [`Effects`],
//! each charged to the call's [`Budget`] first; names are checked by [`crate::names`].
//! A charge the budget refuses, or a malformed state key (the state imports return no
//! errors), ends the call: a trap the runtime reports as the [`Rejection`] recorded here,
//! and rejects. A malformed publish is an error the guest sees. Each world version's
//! outbox is one publish here.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::v0_2::wharf::plugin0_2_0::{config, log, outbox, state, types};
use super::bindings::v0_4::wharf::plugin0_4_0 as v0_4;
use super::bindings::v0_5::wharf::plugin0_5_0::reply;
use super::bindings::v0_6::wharf::plugin0_6_0 as v0_6;
use super::budget::{Budget, LimitExceeded, Refused};
use super::limits::MemoryLimiter;
use super::outbound::OutboundCall;
use super::state::StateReader;
use super::stdio::Captured;
use crate::effects::{Destination, Effects, Publish, Reply};
use crate::envelope::KEY_HEADER;
use crate::names::{self, InvalidName};
use crate::text;
use crate::trace::{self, TraceContext};

/// What the host knows while one `handle` call runs.
pub(super) struct HostState {
    /// WASI context: clocks and random; stdio captured, nothing else granted.
    pub(super) wasi: WasiCtx,
    /// WASI resources.
    pub(super) table: ResourceTable,
    /// `wasi:http`'s own settings.
    pub(super) http: WasiHttpCtx,
    /// The call's outgoing requests: what it may call, and how many it has made.
    pub(super) outbound: OutboundCall,
    /// Memory cap enforcement.
    pub(super) limiter: MemoryLimiter,
    /// Guest stdout, logged after the call.
    pub(super) stdout: Captured,
    /// Guest stderr, logged after the call; holds the panic message of a panicking guest.
    pub(super) stderr: Captured,
    /// Buffered effects of this call.
    pub(super) effects: Effects,
    /// What the effects may still grow by.
    pub(super) budget: Budget,
    /// Why the host ended the call, if it did.
    pub(super) rejection: Option<Rejection>,
    /// Call context shared with the imports.
    pub(super) call: CallContext,
}

/// Inputs of one call that the imports need.
#[derive(Clone)]
pub struct CallContext {
    /// Plugin name, scoping state and tagging logs.
    pub plugin: Arc<str>,
    /// Message id, tagging logs.
    pub message_id: Uuid,
    /// Operator config for this plugin.
    pub config: Arc<BTreeMap<String, String>>,
    /// Where committed state is read from.
    pub state: Arc<dyn StateReader>,
    /// The call's trace context: the plugin sees it as the message's `traceparent`, and
    /// its publishes carry it unless they set their own.
    pub trace: TraceContext,
    /// Whether someone waits for an answer to the message (it carries a reply address):
    /// only then may the handler reply.
    pub request: bool,
}

/// Why the host ended a call: it would end the same way again, so it is a reject.
#[derive(Debug, thiserror::Error)]
pub(super) enum Rejection {
    /// It went over one of its limits.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// It used a malformed state key.
    #[error(transparent)]
    Name(#[from] InvalidName),
}

impl HostState {
    /// End the call for `rejection`.
    fn end(&mut self, rejection: impl Into<Rejection>) -> wasmtime::Error {
        let rejection = rejection.into();
        let error = wasmtime::Error::msg(rejection.to_string());
        self.rejection = Some(rejection);
        error
    }

    /// End the call: it went over a limit.
    fn over(&mut self, (limit, what): Refused) -> wasmtime::Error {
        let plugin = self.call.plugin.clone();
        self.end(LimitExceeded {
            limit,
            plugin,
            what,
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.outbound,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl types::Host for HostState {}

impl super::bindings::v0_3::wharf::plugin0_3_0::types::Host for HostState {}

impl v0_4::types::Host for HostState {}

impl v0_6::types::Host for HostState {}

impl log::Host for HostState {
    fn log(
        &mut self,
        level: types::Level,
        message: String,
        fields: Vec<types::Header>,
    ) -> wasmtime::Result<()> {
        let bytes = message.len()
            + fields
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>();
        if !self.budget.log(bytes) {
            return Ok(());
        }
        let plugin = &*self.call.plugin;
        let id = self.call.message_id;
        let trace = self.call.trace;
        // Control characters escaped: a line break in a plugin's message cannot start a
        // line of its own that passes for the host's, nor an escape sequence reach a
        // terminal; the fields are printed escaped (`Debug`).
        let message = text::escape_controls(&message);
        let fields: BTreeMap<String, String> =
            fields.into_iter().map(|h| (h.key, h.value)).collect();
        // The trace ids are formatted only for a line the filter lets through.
        macro_rules! log {
            ($level:expr) => {
                tracing::event!($level, plugin, message_id = %id, trace_id = %trace.trace_id(), span_id = %trace.span_id(), ?fields, "{message}")
            };
        }
        match level {
            types::Level::Trace => log!(tracing::Level::TRACE),
            types::Level::Debug => log!(tracing::Level::DEBUG),
            types::Level::Info => log!(tracing::Level::INFO),
            types::Level::Warn => log!(tracing::Level::WARN),
            types::Level::Error => log!(tracing::Level::ERROR),
        }
        Ok(())
    }
}

impl outbox::Host for HostState {
    fn publish(
        &mut self,
        destination: types::Destination,
        kind: String,
        headers: Vec<types::Header>,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<String, String>> {
        self.publish(destination.into(), kind, headers, payload, None)
    }
}

impl v0_4::outbox::Host for HostState {
    fn publish(
        &mut self,
        message: v0_4::types::Outgoing,
    ) -> wasmtime::Result<Result<String, String>> {
        let v0_4::types::Outgoing {
            destination,
            kind,
            headers,
            payload,
            key,
        } = message;
        self.publish(destination.into(), kind, headers, payload, key)
    }
}

impl v0_6::outbox::Host for HostState {
    fn publish(
        &mut self,
        message: v0_6::types::Outgoing,
    ) -> wasmtime::Result<Result<String, String>> {
        let v0_6::types::Outgoing {
            destination,
            kind,
            headers,
            payload,
            key,
        } = message;
        let destination = match destination {
            v0_6::types::Destination::Queue(queue) => Destination::Queue(queue),
            v0_6::types::Destination::Exchange(target) => {
                types::Destination::Exchange(target).into()
            }
            v0_6::types::Destination::Topic(topic) => Destination::Topic(topic),
        };
        self.publish(destination, kind, headers, payload, key)
    }
}

impl From<types::Destination> for Destination {
    fn from(destination: types::Destination) -> Self {
        match destination {
            types::Destination::Queue(queue) => Destination::Queue(queue),
            types::Destination::Exchange(t) => Destination::Exchange {
                exchange: t.exchange,
                routing_key: t.routing_key,
            },
        }
    }
}

impl HostState {
    /// Buffer a publish of any world version; to an exchange, its key goes in the
    /// [`KEY_HEADER`] header, where a consumer of the queue reads it (to a topic it is the
    /// record's key).
    fn publish(
        &mut self,
        destination: Destination,
        kind: String,
        headers: Vec<types::Header>,
        payload: Vec<u8>,
        key: Option<String>,
    ) -> wasmtime::Result<Result<String, String>> {
        let route_bytes = destination.bytes();
        let mut headers = self.traced(headers);
        let to_exchange = matches!(destination, Destination::Exchange { .. });
        if let (true, Some(key)) = (to_exchange, &key) {
            headers.insert(KEY_HEADER.to_owned(), key.clone());
        }
        if let Err(invalid) = names::publish(&destination, &kind, &headers, key.as_deref()) {
            return Ok(Err(invalid.to_string()));
        }
        let key = key.filter(|_| !to_exchange);
        let key_bytes = key.as_ref().map_or(0, String::len);
        let bytes = route_bytes + kind.len() + header_bytes(&headers) + key_bytes + payload.len();
        if let Err(refused) = self.budget.publish(payload.len(), bytes) {
            return Err(self.over(refused));
        }
        let id = Uuid::now_v7();
        self.effects.publishes.push(Publish {
            id,
            destination,
            kind,
            headers,
            payload,
            key,
        });
        Ok(Ok(id.to_string()))
    }
}

impl HostState {
    /// A handler's headers as a map, carrying the call's trace unless they carry one.
    fn traced(&self, headers: Vec<types::Header>) -> BTreeMap<String, String> {
        let mut headers: BTreeMap<String, String> =
            headers.into_iter().map(|h| (h.key, h.value)).collect();
        headers
            .entry(trace::HEADER.to_owned())
            .or_insert_with(|| self.call.trace.to_string());
        headers
    }
}

/// What `headers` weigh against a call's publish budget.
fn header_bytes(headers: &BTreeMap<String, String>) -> usize {
    headers.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl reply::Host for HostState {
    /// Checked as a publish is (headers, then the call's limits) before whether there is
    /// a request to answer, so an answer breaking the rules fails the same either way.
    fn send(&mut self, answer: reply::Answer) -> wasmtime::Result<Result<(), String>> {
        let reply::Answer { headers, payload } = answer;
        let headers = self.traced(headers);
        if let Err(invalid) = names::header_map(&headers) {
            return Ok(Err(invalid.to_string()));
        }
        // Charged as one more message published: it is one.
        let bytes = header_bytes(&headers) + payload.len();
        if let Err(refused) = self.budget.publish(payload.len(), bytes) {
            return Err(self.over(refused));
        }
        if !self.call.request {
            return Ok(Err(
                "this message is not a request: no one waits for an answer".to_owned(),
            ));
        }
        if self.effects.reply.is_some() {
            return Ok(Err("this call answered the request already".to_owned()));
        }
        self.effects.reply = Some(Reply { headers, payload });
        Ok(Ok(()))
    }
}

impl state::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(written) = self.effects.writes.get(&key) {
            return Ok(written.clone());
        }
        if let Err(invalid) = names::state_key(&key) {
            return Err(self.end(invalid));
        }
        if !self.effects.reads.contains_key(&key)
            && let Err(refused) = self.budget.state_read()
        {
            return Err(self.over(refused));
        }
        let found = self
            .call
            .state
            .read(&self.call.plugin, &key)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("state read of key {key:?} failed: {e}")))?;
        let (value, version) = match found {
            Some((value, version)) => (Some(value), version),
            None => (None, 0),
        };
        self.effects.reads.entry(key).or_insert(version);
        Ok(value)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.write(key, Some(value))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.write(key, None)
    }
}

impl HostState {
    /// Buffer a state write (`None` deletes), within the budget.
    fn write(&mut self, key: String, value: Option<Vec<u8>>) -> wasmtime::Result<()> {
        if let Err(invalid) = names::state_key(&key) {
            return Err(self.end(invalid));
        }
        let replaced = self
            .effects
            .writes
            .get(&key)
            .map_or(0, |v| key.len() + v.as_ref().map_or(0, Vec::len));
        let charged = self
            .budget
            .state_write(key.len(), value.as_ref().map(Vec::len), replaced);
        if let Err(refused) = charged {
            return Err(self.over(refused));
        }
        self.effects.writes.insert(key, value);
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.call.config.get(&key).cloned())
    }
}
