//! # wharf: a host runtime for message handlers shipped as WebAssembly components
//!
//! The path of one message through this crate:
//!
//! ```text
//! wharf publish / a handler's publish
//!   -> store::Inbox::enqueue          dedup on arrival (message id), row in the inbox
//!   -> transport::pump                the one loop over every transport::source::Source:
//!                                     transport::inbox claims a batch of a lane's queues
//!                                     (held transaction or lease); transport::amqp::consumer
//!                                     takes a batch of deliveries, minus plugins the
//!                                     ledger has settled
//!   -> dispatch::Dispatcher::handle_batch
//!                                     route, call, classify; circuit breaker, the plugin's
//!                                     own permits, then the host-wide call budget; a
//!                                     contended plugin is left to run in the settle
//!   -> plugins::Catalog::route        the live plugin set (directory watch + fleet
//!                                     registry, swapped atomically) for the kind (router)
//!   -> runtime::Runtime::call         fresh sandboxed instance, memory cap, epoch deadline,
//!                                     effects buffered by the host imports (effects),
//!                                     each charged to the call's limits (runtime::budget)
//!                                     and its names checked (names) as it is made;
//!                                     HTTP requests only to granted hosts
//!                                     (runtime::outbound), sent as the guest makes them
//!   -> outcome::decide                ok | retry (backoff, retry) | dead letter
//!   -> settle::claimed                ONE transaction per batch, one sequence for every
//!                                     store (settle::delivered for AMQP, then ack):
//!                                     fence, lock the state keys, then
//!   -> settle::resolve                run stale and contended handlers again over
//!                                     committed state + batch writes (the dispatcher)
//!   -> store::settle::SettlePlan      what the batch writes, decided once for every store
//!   -> store::SettleTransaction       each store writes it: ledger rows + effects,
//!                                     retries, failed messages with attempt history, and
//!                                     a request's answer for the caller waiting on it
//!                                     (requester, store::Replies) or as a message to
//!                                     its reply queue (reply)
//! ```
//!
//! `server` puts a host together from its config and runs it; `cli` is the `wharf`
//! binary's front end, which only parses; `config` loads and validates its settings;
//! `http` serves the admin API (health probes, `/metrics`, and the CLI's operations behind
//! tokens); `metrics` names what the message path counts; `trace` carries a message's W3C
//! trace context through each handler call to what it publishes.
//!
//! ## Glossary
//!
//! - **transport**: where messages come from: the inbox table (`transport::inbox`) or
//!   RabbitMQ (`transport::amqp`), each a **source** driven by the one **pump**.
//! - **attempt**: one run of one plugin on one message; a retry counts one, a stale read
//!   or an open breaker does not.
//! - **verdict**: what a (message, plugin) pair comes to: handled, retry, dead, deferred,
//!   or run at settle (a contended plugin, run inside the settle).
//! - **dead letter** (verdict `Dead`, counters `dead`): a pair that gave up (rejected,
//!   retries exhausted) or a message refused before any plugin ran (no handler, unreadable
//!   delivery). Dead letters are kept as the **failed messages** (table `failed_messages`,
//!   the seed's name; `wharf failed list|show|retry|delete`) with every attempt's error;
//!   an AMQP consumer also copies them to `<queue>.dlq`.
//! - **ledger** (table `processed`): the pairs handled; a redelivered message skips them.
//!   **received** is the inbox's dedup on arrival.
//! - **settle**: the one transaction that writes a batch's verdicts (`settle`); the
//!   **settle plan** (`store::settle`) decides its rows.
//! - **claim**: how a batch of inbox rows is kept from other hosts until it settles: a
//!   **held** transaction or a **lease** fenced by a lock token.
//! - **stale read**: a state key a handler read that changed before its settle; the
//!   handler runs again inside the settle (**resolved**), or past the settle's budget in
//!   the next round (**rescheduled**).
//! - **limit**: what one call may do (time, memory, publishes, bytes, state reads and
//!   writes, logs; one table of them in `runtime::effect_limits`, charged by
//!   `runtime::budget`); a call over an effect limit is rejected, naming the setting. **quota**: what one plugin's state may hold in all, checked at settle
//!   (`store::settle::quota`). **names**: the rules for kinds, queues, headers and keys.
//! - **request**: a message whose caller waits for its answer (`reply-to`: a caller on a
//!   host, an inbox queue, or an AMQP queue; `reply`); the first answer committed is the
//!   one (a handler's, or why it was dead-lettered or refused).
//! - **contended plugin**: one whose messages mostly read keys earlier messages of their
//!   batch wrote; its messages run inside the settle, in order (`dispatch::contention`).

pub mod cli;
pub mod config;
pub mod dead_letter_topic;
pub mod dispatch;
pub mod effects;
pub mod envelope;
pub mod http;
pub mod metrics;
pub mod names;
pub mod outcome;
pub mod plugins;
pub mod reply;
pub mod requester;
pub mod retry;
pub mod router;
pub mod runtime;
pub mod server;
pub mod setting;
pub mod settle;
pub mod shutdown;
pub mod store;
pub mod text;
pub mod trace;
pub mod transport;
