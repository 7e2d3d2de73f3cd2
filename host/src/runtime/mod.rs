//! The sandbox: the only module where wasmtime types appear.
//!
//! One [`Runtime`] owns the engine (pooling allocator, epoch interruption, optional fuel),
//! the linker with the host imports, and the epoch ticker. A [`Plugin`] is a loaded
//! component with its `InstancePre`; [`Runtime::call`] runs `handle` for one message in a
//! fresh instance under the [`Limits`] and returns an [`Outcome`]. A trap (panic, memory
//! cap, deadline, fuel) is an outcome like any other and never stops the host.
//!
//! Calls are async, a long one a tokio task of its own: the epoch callback yields to tokio
//! every tick, so a long guest call holds neither a worker thread nor the futures of its
//! caller, and interrupts the call once its deadline has passed.

mod bindings;
mod budget;
mod cache;
mod config;
mod effect_limits;
mod host_state;
mod limits;
pub mod outbound;
mod plugin;
mod state;
mod stdio;
mod trap;
mod world;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Enabled, Engine, PoolingAllocationConfig, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::envelope::Envelope;
use crate::outcome::Outcome;
use crate::{text, trace};
use bindings::v0_2::wharf::plugin0_2_0::types;
use budget::Budget;
use host_state::HostState;
use limits::MemoryLimiter;
use outbound::OutboundCall;
use outbound::grants::Grant;
use stdio::Captured;

pub use budget::{Limit, LimitExceeded};
pub use config::{MAX_REASON_BYTES, MIN_REASON_BYTES, RuntimeConfig};
pub use effect_limits::{EffectLimits, EffectOverrides, ceiling};
pub use host_state::CallContext;
pub use limits::{Limits, Requested};
pub use outbound::Outbound;
pub use plugin::{LoadError, Manifest, Plugin};
pub use state::{NoState, StateError, StateReader};

/// How often the epoch advances: the granularity of deadlines and of yields to tokio.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Per memory or table of a finished instance, how many dirty bytes are reset in place
/// (copied back from the image) instead of being dropped with `madvise` and faulted in
/// again by the next instance. Only used where `PAGEMAP_SCAN` (Linux >= 6.7) finds the
/// dirty pages; without it wasmtime would reset this much from the start of memory.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// The most resources (WASI streams and pollables, HTTP requests, fields and bodies) one
/// call may hold at once: what a hostile guest can make the host hold is bounded by it.
const MAX_RESOURCES: usize = 512;

/// The wasmtime engine and linker shared by every plugin of a host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// The host's defaults and ceiling.
    limits: Limits,
    /// The operator's `[plugin.<name>]` limits, which win over a plugin's manifest.
    overrides: BTreeMap<String, Requested>,
    /// The hosts each plugin may call (`[plugin.<name>] allowed_hosts`).
    grants: BTreeMap<String, Arc<[Grant]>>,
    cache_dir: PathBuf,
    /// Stops the epoch ticker thread when the runtime is dropped.
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// An engine with the `[runtime]` limits (and handlers' publishes within
    /// `max_payload_bytes`), caching compiled plugins in `cache_dir`; a plugin named in
    /// `overrides` (the operator's `[plugin.<name>]` limits) runs under those rather than
    /// its manifest's, and may call the hosts `grants` gives it.
    pub fn new(
        config: &RuntimeConfig,
        max_payload_bytes: usize,
        cache_dir: PathBuf,
        overrides: BTreeMap<String, Requested>,
        grants: BTreeMap<String, Arc<[Grant]>>,
    ) -> anyhow::Result<Self> {
        let limits = Limits::from_config(config, max_payload_bytes);
        let mut pool = PoolingAllocationConfig::default();
        let slots = config.instance_pool;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memory_size(limits.memory_bytes)
            .max_memories_per_component(4)
            .max_core_instances_per_component(16)
            .max_tables_per_component(8);
        // The cost of a fresh instance is mostly the kernel's: decommitting the previous
        // instance's pages and faulting them in again. With PAGEMAP_SCAN wasmtime copies
        // back only the pages the guest wrote, and the slot stays resident (measured on
        // the noop guest: 32 -> 13 us per message).
        let pagemap_scan = PoolingAllocationConfig::is_pagemap_scan_available();
        if pagemap_scan {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES);
        }
        tracing::debug!(
            pagemap_scan,
            "instance slots are reset {}",
            if pagemap_scan {
                "in place"
            } else {
                "with madvise"
            }
        );
        let mut wasm = wasmtime::Config::new();
        wasm.allocation_strategy(pool)
            .epoch_interruption(true)
            .consume_fuel(limits.fuel.is_some())
            .concurrency_support(false)
            // Keep each memory's reservation small: many slots fit in the address space.
            .memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(64 << 10);
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // 0.3.0's imports are 0.2.0's and its own types; 0.4.0 adds its outbox, 0.5.0
        // its reply, 0.6.0 its outbox.
        bindings::v0_3::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        bindings::v0_4::wharf::plugin0_4_0::types::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_4::wharf::plugin0_4_0::outbox::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_5::wharf::plugin0_5_0::reply::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_6::wharf::plugin0_6_0::types::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_6::wharf::plugin0_6_0::outbox::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("wharf-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Self {
            engine,
            linker,
            limits,
            overrides,
            grants,
            cache_dir,
            ticker_stop,
        })
    }

    fn new_store(
        &self,
        call: CallContext,
        limits: &Limits,
        outbound: Arc<Outbound>,
        ticked: Arc<AtomicBool>,
    ) -> Store<HostState> {
        let deadline = Instant::now() + limits.deadline;
        let stdout = Captured::new(limits.effects.max_stdio_bytes);
        let stderr = Captured::new(limits.effects.max_stdio_bytes);
        // Clocks and random only: no preopened directories, no env, no args, and the
        // default socket policy refuses every address.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let mut table = wasmtime_wasi::ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
        http.set_field_size_limit(outbound::MAX_FIELDS_BYTES);
        let state = HostState {
            wasi,
            table,
            http,
            outbound: OutboundCall::new(outbound, deadline),
            limiter: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                exceeded: None,
            },
            stdout,
            stderr,
            effects: Default::default(),
            budget: Budget::new(limits.effects),
            rejection: None,
            call,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.limits.fuel.is_some() {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .expect("fuel is enabled in the engine when runtime.fuel is set");
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                ticked.store(true, Ordering::Relaxed);
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    /// Run `plugin`'s `handle` on `message` (attempt number `attempt`) in a fresh instance
    /// under the plugin's limits.
    ///
    /// A call whose guest code runs past an epoch tick becomes a tokio task of its own: a
    /// guest spinning until its deadline yields at every tick to whatever else the worker
    /// threads have to do, but a future polled in the same task (the other calls of a
    /// batch, the other inbox lanes, a settle's statements) would wait a whole tick for
    /// each step. Dropping the returned future stops the call.
    pub async fn call(
        &self,
        plugin: &Plugin,
        message: &Envelope,
        attempt: u32,
        call: CallContext,
    ) -> Outcome {
        let limits = plugin.limits;
        // The plugin sees its own call as the message's parent span.
        let traceparent = types::Header {
            key: trace::HEADER.to_owned(),
            value: call.trace.to_string(),
        };
        let ticked = Arc::new(AtomicBool::new(false));
        let store = self.new_store(call, &limits, plugin.outbound.clone(), ticked.clone());
        let input = types::Message {
            id: message.id.to_string(),
            kind: message.kind.clone(),
            source: message.source(),
            headers: message
                .headers
                .iter()
                .filter(|(k, _)| k.as_str() != trace::HEADER)
                .map(|(k, v)| types::Header {
                    key: k.clone(),
                    value: v.clone(),
                })
                .chain([traceparent])
                .collect(),
            payload: message.payload.clone(),
            attempt,
        };
        // Run here while the guest's own code has not yet run a whole epoch tick: most
        // calls end in their first poll, and one waiting in a host import (an HTTP
        // response, a state read) is woken straight in this task, saving a task's
        // hand-off between threads each way (~20 us of latency here). Once it yields at a
        // tick, it goes on as a task of its own.
        let key = message.key.clone();
        let mut call = Box::pin(run(plugin.pre().clone(), store, input, key, limits));
        let here = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
            Poll::Pending if ticked.load(Ordering::Relaxed) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        if let Some(outcome) = here.await {
            return outcome;
        }
        // In the caller's span, so its logs keep the message's fields and trace.
        let mut task = Task(tokio::spawn(call.in_current_span()));
        match (&mut task.0).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Outcome::Trap(format!("the call was cancelled: {e}")),
        }
    }
}

/// A spawned call, aborted when its caller stops waiting for it.
struct Task(tokio::task::JoinHandle<Outcome>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Instantiate `pre` in `store` and call `handle` with `input` under `limits`.
async fn run(
    pre: world::Pre,
    mut store: Store<HostState>,
    input: types::Message,
    key: Option<String>,
    limits: Limits,
) -> Outcome {
    // The epoch deadline interrupts guest code; this one also ends a call that waits in
    // the host past its deadline (a guest sleeping in a WASI poll).
    let call = pre.handle(&mut store, input, key);
    let result = match tokio::time::timeout(limits.deadline + EPOCH_TICK * 2, call).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Error::from(Trap::Interrupt)),
    };
    let state = store.into_data();
    forward_stdio(&state);
    // What the guest wrote is kept, logged and sent on in headers: one line, bounded,
    // with what its requests did (in at most half of the bound).
    let max = limits.effects.max_reason_bytes;
    let requests = (state.outbound.audit.describe()).map(|a| text::reason(&a, max / 2));
    let reason = |text: &str| match &requests {
        None => text::reason(text, max),
        Some(requests) => {
            let room = max.saturating_sub(requests.len() + 3);
            format!("{} ({requests})", text::reason(text, room))
        }
    };
    if let Some(rejection) = &state.rejection {
        return Outcome::Reject(reason(&rejection.to_string()));
    }
    match result {
        Ok(Ok(())) => Outcome::Ok(state.effects),
        Ok(Err(types::HandlerError::Retry(r))) => Outcome::Retry {
            reason: reason(&r.reason),
            delay: r.delay_ms.map(Duration::from_millis),
        },
        Ok(Err(types::HandlerError::Reject(text))) => Outcome::Reject(reason(&text)),
        Err(e) => Outcome::Trap(reason(&trap::describe(&e, &state, &limits))),
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Log what the guest wrote to stdout and stderr, and what it logged or wrote past its
/// limits (dropped).
fn forward_stdio(state: &HostState) {
    let plugin = &*state.call.plugin;
    let message_id = state.call.message_id;
    let limits = state.budget.limits();
    for (stream, pipe) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let (bytes, dropped) = pipe.contents();
        // A line of the log per line written, its control characters escaped, so what a
        // guest prints cannot pass for a line of the host's.
        for line in String::from_utf8_lossy(&bytes).trim_end().lines() {
            tracing::info!(plugin, %message_id, stream, "{}", text::escape_controls(line));
        }
        if dropped > 0 {
            tracing::warn!(
                plugin,
                %message_id,
                stream,
                "dropped {dropped} bytes of {stream} past the first {} of the call; raise [plugin.{plugin}] max_stdio_bytes (at most [runtime] max_stdio_bytes) to keep more",
                limits.max_stdio_bytes
            );
        }
    }
    let (lines, bytes) = state.budget.dropped_logs;
    if lines > 0 {
        tracing::warn!(
            plugin,
            %message_id,
            "dropped {lines} log lines ({bytes} bytes) past the call's limit of {} lines / {} bytes; raise [plugin.{plugin}] max_log_lines / max_log_bytes (at most [runtime]'s) to keep more",
            limits.max_log_lines,
            limits.max_log_bytes
        );
    }
}
