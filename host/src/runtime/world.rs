//! Which version of the `wharf:plugin` world a component was built against, and calling
//! its exports as that version: `manifest` read into one [`Manifest`] shape, `handle`
//! given the message as that version has it (0.4.0 on: with its ordering key; 0.5.0 and
//! 0.6.0 have 0.4.0's message and manifest).

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{v0_2, v0_3, v0_4, v0_5, v0_6};
use super::limits::Requested;
use super::{HostState, Manifest};
use crate::retry::RetryPolicy;

use v0_2::wharf::plugin0_2_0::types;
use v0_4::wharf::plugin0_4_0::types as v0_4_types;

/// A component pre-linked as the world version it implements; instantiating it per
/// message is cheap.
#[derive(Clone)]
pub(super) enum Pre {
    /// Built against `wharf:plugin@0.2.0`.
    V0_2(v0_2::PluginPre<HostState>),
    /// Built against `wharf:plugin@0.3.0`.
    V0_3(v0_3::PluginPre<HostState>),
    /// Built against `wharf:plugin@0.4.0`.
    V0_4(v0_4::PluginPre<HostState>),
    /// Built against `wharf:plugin@0.5.0`.
    V0_5(v0_5::PluginPre<HostState>),
    /// Built against `wharf:plugin@0.6.0`.
    V0_6(v0_6::PluginPre<HostState>),
}

impl Pre {
    /// The newest version whose exports `pre` has and whose interfaces it imports; the
    /// error is the newest version's. 0.5.0's and 0.6.0's exports are 0.4.0's: a
    /// component is 0.6.0's when it imports what 0.6.0 adds (its `outbox`), else 0.5.0's
    /// when it imports what 0.5.0 adds (`reply`). One built against 0.6.0 that never
    /// publishes imports nothing of its outbox (unused imports are left out of a
    /// component) and is served as, and said to be, 0.5.0's or 0.4.0's: the same calls.
    pub(super) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        let imports = |prefix: &str| {
            (pre.component().component_type())
                .imports(pre.engine())
                .any(|(name, _)| name.starts_with(prefix))
        };
        let (publishes, answers) = (
            imports("wharf:plugin/outbox@0.6."),
            imports("wharf:plugin/reply@0.5."),
        );
        let newest = match v0_6::PluginPre::new(pre.clone()) {
            Ok(pre) if publishes => return Ok(Self::V0_6(pre)),
            Ok(_) => None,
            Err(newest) => Some(newest),
        };
        let newest = match v0_5::PluginPre::new(pre.clone()) {
            Ok(pre) if answers => return Ok(Self::V0_5(pre)),
            Ok(_) => newest,
            Err(e) => newest.or(Some(e)),
        };
        v0_4::PluginPre::new(pre.clone())
            .map(Self::V0_4)
            .or_else(|_| v0_3::PluginPre::new(pre.clone()).map(Self::V0_3))
            .or_else(|_| v0_2::PluginPre::new(pre).map(Self::V0_2))
            .map_err(|e| newest.unwrap_or(e))
    }

    /// The version, as the WIT package writes it.
    pub(super) fn version(&self) -> &'static str {
        match self {
            Self::V0_2(_) => "0.2.0",
            Self::V0_3(_) => "0.3.0",
            Self::V0_4(_) => "0.4.0",
            Self::V0_5(_) => "0.5.0",
            Self::V0_6(_) => "0.6.0",
        }
    }

    /// Instantiate and call `manifest`.
    pub(super) async fn manifest(&self, store: &mut Store<HostState>) -> Result<Manifest, String> {
        // Each version's bindings are types of their own: the same two calls on each.
        macro_rules! call_manifest {
            ($pre:expr) => {
                $pre.instantiate_async(&mut *store)
                    .await
                    .map_err(|e| format!("instantiation failed: {e:#}"))?
                    .call_manifest(&mut *store)
                    .await
                    .map_err(|e| format!("manifest() trapped: {e:#}"))?
            };
        }
        Ok(match self {
            Self::V0_2(pre) => {
                let m = call_manifest!(pre);
                read(
                    m.name,
                    m.version,
                    m.subscriptions,
                    m.retry,
                    m.limits,
                    vec![],
                )
            }
            Self::V0_3(pre) => {
                let m = call_manifest!(pre);
                let hosts = m.allowed_hosts;
                read(m.name, m.version, m.subscriptions, m.retry, m.limits, hosts)
            }
            Self::V0_4(pre) => read_0_4(call_manifest!(pre)),
            Self::V0_5(pre) => read_0_4(call_manifest!(pre)),
            Self::V0_6(pre) => read_0_4(call_manifest!(pre)),
        })
    }

    /// Instantiate and call `handle` with `message` and, from 0.4.0 on, its `key`.
    pub(super) async fn handle(
        &self,
        store: &mut Store<HostState>,
        message: types::Message,
        key: Option<String>,
    ) -> wasmtime::Result<Result<(), types::HandlerError>> {
        match self {
            Self::V0_2(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_handle(store, &message).await
            }
            Self::V0_3(pre) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_handle(store, &message).await
            }
            Self::V0_4(pre) => {
                let message = with_key(message, key);
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_handle(store, &message).await
            }
            Self::V0_5(pre) => {
                let message = with_key(message, key);
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_handle(store, &message).await
            }
            Self::V0_6(pre) => {
                let message = with_key(message, key);
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_handle(store, &message).await
            }
        }
    }
}

/// The message as 0.4.0 has it: with its ordering `key`.
fn with_key(message: types::Message, key: Option<String>) -> v0_4_types::Message {
    v0_4_types::Message {
        id: message.id,
        kind: message.kind,
        source: message.source,
        headers: message.headers,
        payload: message.payload,
        attempt: message.attempt,
        key,
    }
}

/// A 0.4.0 manifest (0.5.0's and 0.6.0's too) as the component returned it, before it is checked.
fn read_0_4(m: v0_4_types::Manifest) -> Manifest {
    let hosts = m.allowed_hosts;
    Manifest {
        ordered: m.ordered,
        ..read(m.name, m.version, m.subscriptions, m.retry, m.limits, hosts)
    }
}

/// A manifest as the component returned it, before it is checked.
fn read(
    name: String,
    version: String,
    subscriptions: Vec<String>,
    retry: Option<types::RetryPolicy>,
    limits: Option<types::Limits>,
    allowed_hosts: Vec<String>,
) -> Manifest {
    Manifest {
        name,
        version,
        subscriptions,
        retry: retry.map(|r| RetryPolicy {
            max_retries: r.max_retries,
            base_delay_ms: r.base_delay_ms,
            multiplier: r.multiplier,
            max_delay_ms: r.max_delay_ms,
            jitter: r.jitter,
        }),
        limits: limits.map_or_else(Requested::default, |l| Requested {
            memory_mib: l.memory_mib.map(u64::from),
            deadline_ms: l.deadline_ms,
            fuel: l.fuel,
            max_concurrency: l.max_concurrency.map(|n| n as usize),
            ..Requested::default()
        }),
        allowed_hosts,
        ordered: false,
    }
}
