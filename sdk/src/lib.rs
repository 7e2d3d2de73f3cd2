//! # wharf-sdk: write wharf message handlers in Rust
//!
//! A plugin is a plain Rust type implementing [`Plugin`], exported with [`export!`], and
//! built with `cargo build --target wasm32-wasip2`. The host calls [`Plugin::handle`] once per
//! message in a fresh sandbox; everything the handler does through this crate — [`publish`],
//! [`state`], [`log`] — is buffered by the host and committed only if the handler returns
//! `Ok`, in the same transaction that marks the message handled. Handlers therefore get
//! exactly-once effects without writing idempotency code. For effects outside the host (an
//! HTTP call made by another service on the handler's behalf, say) use
//! [`Message::idempotency_key`].
//!
//! ```no_run
//! use wharf_sdk::{Manifest, Message, Plugin, Result};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn manifest() -> Manifest {
//!         Manifest::new("hello", env!("CARGO_PKG_VERSION")).subscribe("greeting.*")
//!     }
//!     fn handle(message: &Message) -> Result<()> {
//!         wharf_sdk::log::info(&format!("hello from {}", message.id));
//!         Ok(())
//!     }
//! }
//!
//! wharf_sdk::export!(Hello);
//! ```
//!
//! Unit-test the logic natively, without wasm, with [`testing::TestHost`].

extern crate self as wharf_sdk;

mod error;
mod host;
pub mod http;
mod manifest;
mod message;
mod publish;
mod requests;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use error::{Error, Result, reject, retry, retry_after};
pub use manifest::{Limits, Manifest, RetryPolicy};
pub use message::Message;
pub use publish::{Outgoing, publish, publish_to_exchange, publish_to_topic};

/// Generated bindings of the `wharf:plugin` world. Plugin authors do not need these.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        // 0.6.0 imports the unchanged interfaces of 0.2.0 to 0.5.0: generate them too.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "::wharf_sdk::bindings",
        runtime_path: "::wharf_sdk::__private::wit_bindgen::rt",
    });
}

/// Implementation details used by [`export!`].
#[doc(hidden)]
pub mod __private {
    pub use crate::host::{guest_handle, guest_manifest};
    pub use wit_bindgen;
}

/// A message handler. Implement it on a unit struct and export it with [`export!`].
pub trait Plugin {
    /// Name, version and subscriptions of the plugin; read once when the host loads it.
    fn manifest() -> Manifest;

    /// Handle one message. Return [`retry`]/[`retry_after`] for a transient failure and
    /// [`reject`] for a permanent one. A panic is treated as a failed attempt.
    fn handle(message: &Message) -> Result<()>;
}

/// Export a [`Plugin`] type as the component's `wharf:plugin/plugin` world.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WharfExport;

            impl $crate::bindings::Guest for WharfExport {
                fn manifest() -> $crate::bindings::wharf::plugin0_4_0::types::Manifest {
                    $crate::__private::guest_manifest::<$plugin>()
                }

                fn handle(
                    message: $crate::bindings::wharf::plugin0_4_0::types::Message,
                ) -> ::core::result::Result<
                    (),
                    $crate::bindings::wharf::plugin0_2_0::types::HandlerError,
                > {
                    $crate::__private::guest_handle::<$plugin>(message)
                }
            }

    $crate::bindings::export_world!(WharfExport with_types_in $crate::bindings);
        };
    };
}

/// Key/value state private to this plugin, committed with the message's outcome.
///
/// The host limits what one call may read and write (keys read, writes, bytes of a value)
/// and what a plugin may hold in all; going over a limit ends the call and rejects the
/// message, naming the setting an operator can raise (see "Limits and quotas" in wharf's
/// README).
pub mod state {
    use crate::host;

    /// Read a raw value.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::state_get(key)
    }

    /// Write a raw value.
    pub fn set(key: &str, value: &[u8]) {
        host::state_set(key, value)
    }

    /// Remove a value.
    pub fn delete(key: &str) {
        host::state_delete(key)
    }

    /// Read a JSON value; `Ok(None)` when absent, a *reject* when it does not decode.
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> crate::Result<Option<T>> {
        get(key)
            .map(|raw| serde_json::from_slice(&raw))
            .transpose()
            .map_err(|e| crate::reject(format!("state key {key:?} does not decode: {e}")))
    }

    /// Write a JSON value.
    pub fn set_json<T: serde::Serialize>(key: &str, value: &T) {
        set(
            key,
            &serde_json::to_vec(value).expect("serialising to a Vec cannot fail"),
        )
    }
}

/// Values the operator configured for this plugin.
pub mod config {
    /// Read a config value.
    pub fn get(key: &str) -> Option<String> {
        crate::host::config_get(key)
    }

    /// Read and parse a config value, falling back to `default` when it is absent.
    /// A value that does not parse is a *reject* naming the key.
    pub fn get_or<T: std::str::FromStr>(key: &str, default: T) -> crate::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| crate::reject(format!("config key {key:?} = {raw:?}: {e}"))),
        }
    }
}

/// Logging into the host's tracing, tagged with the message id and plugin.
pub mod log {
    pub use crate::requests::Level;

    /// Log at any level with structured fields.
    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        crate::host::log(level, message, fields)
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[])
    }

    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message, &[])
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[])
    }

    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message, &[])
    }
}
