//! # wharf: a host runtime for message handlers shipped as WebAssembly components
//!
//! The path of one message through this crate:
//!
//! ```text
//! wharf publish / a handler's publish
//!   -> store::Store::enqueue          dedup on arrival (message id), row in the inbox
//!   -> transport::inbox::Worker       claim a batch of a lane's queues (held transaction
//!                                     or lease); or transport::amqp::consumer: a batch
//!                                     of deliveries, minus plugins the ledger has settled
//!   -> dispatch::Dispatcher::handle_batch
//!                                     route, call, classify; circuit breaker, the plugin's
//!                                     own permits, then the host-wide call budget
//!   -> plugins::Catalog::route        the live plugin set (directory watch + fleet
//!                                     registry, swapped atomically) for the kind (router)
//!   -> runtime::Runtime::call         fresh sandboxed instance, memory cap, epoch deadline,
//!                                     effects buffered by the host imports (effects)
//!   -> outcome::decide                ok | retry (backoff, retry) | dead letter
//!   -> store::settle::SettlePlan      what the batch writes, decided once for every store
//!   -> store::Store::settle           ONE transaction per batch: ledger rows + effects,
//!                                     retries, failed messages with attempt history
//!                                     (settle_delivered for AMQP, then ack)
//! ```
//!
//! `cli` is the `wharf` binary's front end; `config` loads and validates its settings.

pub mod cli;
pub mod config;
pub mod dispatch;
pub mod effects;
pub mod envelope;
pub mod outcome;
pub mod plugins;
pub mod retry;
pub mod router;
pub mod runtime;
pub mod shutdown;
pub mod store;
pub mod transport;
