//! The per-call store data (`HostState`) and the host side of the plugin's imports: log,
//! outbox, state and config. Publishes and state writes are buffered in [`Effects`].

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::bindings::wharf::plugin::{config, log, outbox, state, types};
use super::limits::MemoryLimiter;
use super::state::StateReader;
use crate::effects::{Destination, Effects, Publish};

/// What the host knows while one `handle` call runs.
pub(super) struct HostState {
    /// WASI context: clocks and random; stdio captured, nothing else granted.
    pub(super) wasi: WasiCtx,
    /// WASI resources.
    pub(super) table: ResourceTable,
    /// Memory cap enforcement.
    pub(super) limiter: MemoryLimiter,
    /// Guest stdout, logged after the call.
    pub(super) stdout: MemoryOutputPipe,
    /// Guest stderr, logged after the call; holds the panic message of a panicking guest.
    pub(super) stderr: MemoryOutputPipe,
    /// Buffered effects of this call.
    pub(super) effects: Effects,
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
    /// Largest payload a publish may carry.
    pub max_payload_bytes: usize,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(
        &mut self,
        level: types::Level,
        message: String,
        fields: Vec<types::Header>,
    ) -> wasmtime::Result<()> {
        let plugin = &*self.call.plugin;
        let id = self.call.message_id;
        let fields: BTreeMap<String, String> =
            fields.into_iter().map(|h| (h.key, h.value)).collect();
        match level {
            types::Level::Trace => tracing::trace!(plugin, message_id = %id, ?fields, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, message_id = %id, ?fields, "{message}"),
            types::Level::Info => tracing::info!(plugin, message_id = %id, ?fields, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, message_id = %id, ?fields, "{message}"),
            types::Level::Error => tracing::error!(plugin, message_id = %id, ?fields, "{message}"),
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
        let destination = match destination {
            types::Destination::Queue(q) if q.is_empty() => {
                return Ok(Err("destination queue name is empty".into()));
            }
            types::Destination::Queue(q) => Destination::Queue(q),
            types::Destination::Exchange(t) => Destination::Exchange {
                exchange: t.exchange,
                routing_key: t.routing_key,
            },
        };
        if kind.is_empty() {
            return Ok(Err("message kind is empty".into()));
        }
        if payload.len() > self.call.max_payload_bytes {
            return Ok(Err(format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                self.call.max_payload_bytes
            )));
        }
        let id = Uuid::now_v7();
        self.effects.publishes.push(Publish {
            id,
            destination,
            kind,
            headers: headers.into_iter().map(|h| (h.key, h.value)).collect(),
            payload,
        });
        Ok(Ok(id.to_string()))
    }
}

impl state::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(written) = self.effects.writes.get(&key) {
            return Ok(written.clone());
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
        self.effects.writes.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.effects.writes.insert(key, None);
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.call.config.get(&key).cloned())
    }
}
