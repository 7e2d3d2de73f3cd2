//! Keeps a host's AMQP work running: one connection to the broker with the topology
//! declared on it, `consumers` consumers per `[[amqp.consume]]` and (with `amqp.relay`)
//! the outbox relay, each on a channel of its own. When a channel or the connection is
//! lost (broker restart, network cut, a database that failed mid-batch), that task backs
//! off and starts again; the first
//! one to find the connection gone reopens it (backing off while the broker is away) and
//! declares the topology again, since a restarted broker forgets what was not durable.
//! The broker redelivers what was not acked and the ledger catches what was already
//! settled. Errors only an operator can fix (access refused, a queue that does not exist,
//! arguments that conflict with the broker's) stop the supervisor with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{Mutex, watch};

use super::ConsumeSpec;
use super::consumer::{ConsumeReport, Consumer};
use super::relay::{Relay, RelayError, RelayReport};
use super::topology;
use super::{AmqpConfig, ConsumeError};
use crate::dispatch::Dispatcher;
use crate::shutdown::sleep_or_stop;
use crate::store::Store;
use crate::transport::OUTAGE_BACKOFF;

/// A task that ran this long before failing starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// How long opening a connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The broker refused the connection for a reason that will not go away by itself.
    #[error(
        "cannot connect to the AMQP broker at {url}: {source}; check amqp.url (user, password, virtual host)"
    )]
    Connect {
        /// The broker URL without its password.
        url: String,
        /// What lapin reported.
        source: lapin::Error,
    },
    /// The topology or a consumer failed for a reason that will not go away by itself.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The outbox relay failed for a reason that will not go away by itself.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

impl SuperviseError {
    /// Will the failed task work again once the broker or the database is back?
    pub fn is_transient(&self) -> bool {
        match self {
            SuperviseError::Connect { .. } => false,
            SuperviseError::Consume(e) => e.is_transient(),
            SuperviseError::Relay(e) => e.is_transient(),
        }
    }
}

/// The host's broker connection as others see it (readiness): whether it is open.
#[derive(Debug, Clone, Default)]
pub struct BrokerLink(Arc<ArcSwapOption<Connection>>);

impl BrokerLink {
    /// Whether the connection is open now.
    pub fn connected(&self) -> bool {
        self.0
            .load()
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }
}

/// The AMQP work of one host: its consumers and the outbox relay.
pub struct Supervisor {
    config: AmqpConfig,
    /// The connection, for readiness.
    link: BrokerLink,
    /// How often the outbox relay looks for new rows when idle.
    relay_poll: Duration,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
}

impl Supervisor {
    /// Consumers of every `[[amqp.consume]]` of `config`, dispatching to `dispatcher`;
    /// an idle outbox relay polls every `relay_poll`.
    pub fn new(
        config: AmqpConfig,
        relay_poll: Duration,
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        Self {
            config,
            link: BrokerLink::default(),
            relay_poll,
            store,
            dispatcher,
        }
    }

    /// Whether the connection is open, as it changes.
    pub fn link(&self) -> BrokerLink {
        self.link.clone()
    }

    /// Consume (and relay the outbox, with `amqp.relay`) until `shutdown` turns true
    /// (each consumer finishes and acks the batch in hand), recovering from lost
    /// channels and connections. Returns the totals.
    pub async fn run(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<SuperviseReport, SuperviseError> {
        let shared = SharedConnection {
            config: &self.config,
            current: Mutex::new(None),
            link: &self.link,
        };
        let mut consumers = Vec::new();
        for spec in &self.config.consume {
            for _ in 0..spec.consumers {
                consumers.push(self.consume(&shared, spec, shutdown.clone()));
            }
        }
        let relaying = self.relay(&shared, shutdown.clone());
        let result =
            futures::future::try_join(futures::future::try_join_all(consumers), relaying).await;
        shared.close().await;
        let (consumed, (relayed, relay_restarts)) = result?;
        let mut report = SuperviseReport {
            relayed,
            restarts: relay_restarts,
            ..SuperviseReport::default()
        };
        for (consumer, restarts) in consumed {
            report.consumed += consumer;
            report.restarts += restarts;
        }
        Ok(report)
    }

    /// One consumer of `spec.queue`, kept running; its totals and restarts.
    async fn consume(
        &self,
        shared: &SharedConnection<'_>,
        spec: &ConsumeSpec,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(ConsumeReport, u64), SuperviseError> {
        let consumer = Consumer::new(
            spec.clone(),
            self.config.clone(),
            self.store.clone(),
            self.dispatcher.clone(),
        );
        let mut task = Supervised::Consume(consumer, ConsumeReport::default());
        let what = format!("consumer of queue {}", spec.queue);
        let restarts = keep_running(shared, &what, shutdown, &mut task).await?;
        let Supervised::Consume(_, report) = task else {
            unreachable!("the task stays a consumer")
        };
        Ok((report, restarts))
    }

    /// The outbox relay (with `amqp.relay`), kept running; its totals and restarts.
    async fn relay(
        &self,
        shared: &SharedConnection<'_>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(RelayReport, u64), SuperviseError> {
        if !self.config.relays() {
            return Ok((RelayReport::default(), 0));
        }
        let relay = Relay::new(
            self.store.clone(),
            self.config.batch_size as u32,
            self.relay_poll,
        );
        let mut task = Supervised::Relay(relay, RelayReport::default());
        let restarts = keep_running(shared, "outbox relay", shutdown, &mut task).await?;
        let Supervised::Relay(_, report) = task else {
            unreachable!("the task stays the relay")
        };
        Ok((report, restarts))
    }
}

/// Totals of [`Supervisor::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuperviseReport {
    /// All consumers together.
    pub consumed: ConsumeReport,
    /// The outbox relay.
    pub relayed: RelayReport,
    /// Times a consumer or the relay started again after losing its channel or
    /// connection (a broker restart counts once per consumer).
    pub restarts: u64,
}

/// What the supervisor keeps running, with its totals.
enum Supervised {
    Consume(Consumer, ConsumeReport),
    Relay(Relay, RelayReport),
}

impl Supervised {
    async fn run(
        &mut self,
        connection: &Connection,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), SuperviseError> {
        match self {
            Supervised::Consume(consumer, report) => {
                Ok(consumer.run(connection, shutdown, report).await?)
            }
            Supervised::Relay(relay, report) => Ok(relay.run(connection, shutdown, report).await?),
        }
    }
}

/// Run `task` until shutdown, starting it again after each transient failure (backing
/// off; a task that ran a while without failing starts the backoff over). Returns how
/// many times it was restarted.
async fn keep_running(
    shared: &SharedConnection<'_>,
    what: &str,
    mut shutdown: watch::Receiver<bool>,
    task: &mut Supervised,
) -> Result<u64, SuperviseError> {
    let mut restarts = 0;
    let mut failures = 0;
    loop {
        let Some(connection) = shared.connection(&mut shutdown).await? else {
            return Ok(restarts);
        };
        let started = Instant::now();
        let error = match task.run(&connection, shutdown.clone()).await {
            Ok(()) => return Ok(restarts),
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        let delay = OUTAGE_BACKOFF.delay(failures, &mut rand::rng());
        tracing::warn!(
            failures,
            ?delay,
            "AMQP {what} stopped: {error}; what it had not finished goes back to the broker or the outbox; starting again"
        );
        if !sleep_or_stop(delay, &mut shutdown).await {
            return Ok(restarts);
        }
        restarts += 1;
    }
}

/// The host's connection to the broker, reopened on demand by whichever consumer first
/// finds it gone.
struct SharedConnection<'a> {
    config: &'a AmqpConfig,
    current: Mutex<Option<Arc<Connection>>>,
    /// Shows the current connection.
    link: &'a BrokerLink,
}

impl SharedConnection<'_> {
    /// The open connection; reopens it (and declares the topology) when it is gone,
    /// retrying with backoff while the broker is unreachable. `None` on shutdown.
    async fn connection(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Arc<Connection>>, SuperviseError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref().filter(|c| c.status().connected()) {
            return Ok(Some(connection.clone()));
        }
        let url = display_url(&self.config.url);
        let mut failures = 0;
        loop {
            if *shutdown.borrow() {
                return Ok(None);
            }
            let error = match self.open().await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    tracing::info!(
                        broker = url,
                        reconnected = current.is_some(),
                        "connected to the AMQP broker; topology declared"
                    );
                    *current = Some(connection.clone());
                    self.link.0.store(Some(connection.clone()));
                    return Ok(Some(connection));
                }
                Err(Opening::Connect(e)) if !super::is_transient(&e) => {
                    return Err(SuperviseError::Connect { url, source: e });
                }
                Err(Opening::Declare(e)) if !e.is_transient() => {
                    return Err(ConsumeError::Declare(e).into());
                }
                Err(Opening::Connect(e)) => e.to_string(),
                Err(Opening::Declare(e)) => e.to_string(),
            };
            failures += 1;
            let delay = OUTAGE_BACKOFF.delay(failures, &mut rand::rng());
            tracing::warn!(
                broker = url,
                failures,
                ?delay,
                "AMQP broker unreachable ({error}); is it up? retrying"
            );
            if !sleep_or_stop(delay, shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Connect and declare the configured exchanges and queues.
    async fn open(&self) -> Result<Connection, Opening> {
        let amqp = self.config;
        let properties = ConnectionProperties::default().with_connection_name("wharf".into());
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&amqp.url, properties))
                .await
                .unwrap_or_else(|_| {
                    Err(lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {CONNECT_TIMEOUT:?}"),
                    )))
                })
                .map_err(Opening::Connect)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(Opening::Connect)?;
        topology::declare(&channel, &amqp.exchanges, &amqp.queues)
            .await
            .map_err(Opening::Declare)?;
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(connection)
    }

    /// Close the connection, if open (on shutdown).
    async fn close(&self) {
        self.link.0.store(None);
        if let Some(connection) = self.current.lock().await.take()
            && connection.status().connected()
        {
            let _ = connection.close(200, "wharf stopping".into()).await;
        }
    }
}

/// Why opening the connection failed.
enum Opening {
    Connect(lapin::Error),
    Declare(topology::DeclareError),
}

/// `url` without its password, for logs and errors.
pub fn display_url(url: &str) -> String {
    match url.parse::<AMQPUri>() {
        Ok(uri) => format!(
            "{}://{}@{}:{}/{}",
            match uri.scheme {
                lapin::uri::AMQPScheme::AMQP => "amqp",
                lapin::uri::AMQPScheme::AMQPS => "amqps",
            },
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port,
            uri.vhost.replace('/', "%2f")
        ),
        Err(_) => "(unparsable amqp.url)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password() {
        assert_eq!(
            display_url("amqp://guest:secret@broker:5673/%2f"),
            "amqp://guest@broker:5673/%2f"
        );
        assert_eq!(
            display_url("amqps://app:pw@mq.example.com/orders"),
            "amqps://app@mq.example.com:5671/orders"
        );
    }
}
