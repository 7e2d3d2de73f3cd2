//! The transport conformance suite's harness: a host whose messages come through one
//! transport (the inbox table, or a RabbitMQ queue consumed by the host), so a scenario
//! is written once and run over every transport and every store
//! ([`transport_conformance!`](crate::transport_conformance)). A new transport joins by
//! adding a variant here.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use uuid::Uuid;
use wharf_host::config::Config;
use wharf_host::envelope::NewMessage;
use wharf_host::transport::pump::{Report, StopWhen};

use crate::broker::Broker;
use crate::{Backend, Host};

/// Where a scenario's messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The inbox table, queue `test`.
    Inbox,
    /// A fresh RabbitMQ queue.
    Amqp,
}

/// A host with its messages coming through one transport.
pub enum Through {
    /// Messages enqueued in the inbox.
    Inbox(Box<Host>),
    /// Messages published to the broker.
    Amqp(Box<Broker>),
}

impl Through {
    /// A host with `plugins` on `backend`, its messages coming through `transport`.
    pub async fn start(transport: Transport, backend: Backend, plugins: &[&str]) -> Self {
        Self::start_with(transport, backend, plugins, |_| {}).await
    }

    /// Like [`Through::start`], letting the test adjust the config.
    pub async fn start_with(
        transport: Transport,
        backend: Backend,
        plugins: &[&str],
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        match transport {
            Transport::Inbox => {
                Self::Inbox(Box::new(Host::start_with(backend, plugins, adjust).await))
            }
            Transport::Amqp => {
                Self::Amqp(Box::new(Broker::start_with(backend, plugins, adjust).await))
            }
        }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        match self {
            Self::Inbox(host) => host,
            Self::Amqp(broker) => &broker.host,
        }
    }

    /// The source the host records for these messages (`inbox:test`, `amqp:<queue>`).
    pub fn source(&self) -> String {
        match self {
            Self::Inbox(_) => "inbox:test".to_owned(),
            Self::Amqp(broker) => format!("amqp:{}", broker.queue),
        }
    }

    /// Send a message of `kind` with id `id` and a JSON `payload`.
    pub async fn send(&self, id: Uuid, kind: &str, payload: serde_json::Value) {
        let body = payload.to_string().into_bytes();
        match self {
            Self::Inbox(host) => {
                let message = NewMessage {
                    id,
                    ..NewMessage::new("test", kind, body)
                };
                host.store
                    .enqueue(std::slice::from_ref(&message))
                    .await
                    .unwrap();
            }
            Self::Amqp(broker) => {
                let properties = BasicProperties::default()
                    .with_type(kind.into())
                    .with_message_id(id.to_string().into());
                broker.publish_with(properties, &body).await;
            }
        }
    }

    /// Messages sent and not yet finished at their source: rows in the inbox, or
    /// deliveries ready in the queue.
    pub async fn waiting(&self) -> u64 {
        match self {
            Self::Inbox(host) => {
                host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'test'")
                    .await as u64
            }
            Self::Amqp(broker) => u64::from(broker.depth(&broker.queue).await),
        }
    }

    /// Handle messages until `done` holds (panics after 20 s); the totals.
    pub async fn run_until(&self, what: &str, done: impl AsyncFn(&Through) -> bool) -> Report {
        match self {
            Self::Inbox(host) => {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut total = Report::default();
                let until_idle = StopWhen {
                    until_idle: true,
                    ..StopWhen::default()
                };
                loop {
                    let (_, shutdown) = tokio::sync::watch::channel(false);
                    total += host.worker.run(until_idle, shutdown).await.unwrap();
                    if done(self).await {
                        return total;
                    }
                    assert!(Instant::now() < deadline, "timed out waiting for {what}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Self::Amqp(broker) => broker.consume_until(what, async |_| done(self).await).await,
        }
    }
}

/// Run a scenario `async fn name(transport: Transport, backend: Backend)` over every
/// transport and store, as the tests `inbox::sqlite::name`, ..., `amqp::mysql_leased::name`.
#[macro_export]
macro_rules! transport_conformance {
    ($($name:ident),* $(,)?) => {
        mod inbox {
            $(async fn $name(backend: $crate::Backend) {
                super::$name($crate::transports::Transport::Inbox, backend).await
            })*
            $crate::conformance!($($name),*);
        }
        mod amqp {
            $(async fn $name(backend: $crate::Backend) {
                super::$name($crate::transports::Transport::Amqp, backend).await
            })*
            $crate::conformance!($($name),*);
        }
    };
}
