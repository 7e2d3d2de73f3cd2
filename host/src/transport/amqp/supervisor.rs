//! Keeps a host's AMQP work running: one connection to the broker with the topology
//! declared on it, `consumers` consumers per `[[amqp.consume]]` and (with `amqp.relay`)
//! the outbox relay, each on a channel of its own. When a channel or the connection is
//! lost (broker restart, network cut, a database that failed mid-batch), that task backs
//! off and starts again; the first one to find the connection gone reopens it
//! ([`super::connection`]: backing off while the broker is away) and declares the
//! topology again, since a restarted broker forgets what was not durable.
//! The broker redelivers what was not acked and the ledger catches what was already
//! settled. Errors only an operator can fix (access refused, a queue that does not exist,
//! arguments that conflict with the broker's) stop the supervisor with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::Connection;
use tokio::sync::watch;

use super::ConsumeSpec;
use super::connection::{BrokerLink, ConnectError, SharedConnection};
use super::consumer::Consumer;
use super::relay::{Relay, RelayError, RelayReport};
use super::{AmqpConfig, ConsumeError};
use crate::dispatch::Dispatcher;
use crate::store::{Store, Transport};
use crate::transport::Restarts;
use crate::transport::outbox::OutboxFeed;
use crate::transport::pump::{Progress, Report, StopWhen};

/// Why the supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The broker refused the connection for a reason that will not go away by itself.
    #[error(transparent)]
    Connect(ConnectError),
    /// The topology or a consumer failed for a reason that will not go away by itself.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The outbox relay failed for a reason that will not go away by itself.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

impl From<ConnectError> for SuperviseError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Declare(e) => Self::Consume(ConsumeError::Declare(e)),
            refused => Self::Connect(refused),
        }
    }
}

impl SuperviseError {
    /// Will the failed task work again once the broker or the database is back?
    pub fn is_transient(&self) -> bool {
        match self {
            SuperviseError::Connect(_) => false,
            SuperviseError::Consume(e) => e.is_transient(),
            SuperviseError::Relay(e) => e.is_transient(),
        }
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
        let shared = SharedConnection::new(&self.config, &self.link);
        let progress = Progress::new("amqp", StopWhen::default());
        let mut consumers = Vec::new();
        for spec in &self.config.consume {
            for _ in 0..spec.consumers {
                consumers.push(self.consume(&shared, spec, &progress, shutdown.clone()));
            }
        }
        let relaying = self.relay(&shared, shutdown.clone());
        let result =
            futures::future::try_join(futures::future::try_join_all(consumers), relaying).await;
        shared.close().await;
        let (restarts, (relayed, relay_restarts)) = result?;
        Ok(SuperviseReport {
            consumed: progress.report(),
            relayed,
            restarts: relay_restarts + restarts.iter().sum::<u64>(),
        })
    }

    /// One consumer of `spec.queue`, kept running, adding to `progress`; its restarts.
    async fn consume(
        &self,
        shared: &SharedConnection<'_>,
        spec: &ConsumeSpec,
        progress: &Progress,
        shutdown: watch::Receiver<bool>,
    ) -> Result<u64, SuperviseError> {
        let consumer = Consumer::new(
            spec.clone(),
            self.config.clone(),
            self.store.clone(),
            self.dispatcher.clone(),
        );
        let mut task = Supervised::Consume(consumer, progress);
        let what = format!("consumer of queue {}", spec.queue);
        keep_running(shared, &what, shutdown, &mut task).await
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
        let relay = Relay::new(OutboxFeed::new(
            self.store.clone(),
            Transport::Amqp,
            self.config.batch_size as u32,
            self.relay_poll,
            self.dispatcher.outbox_written(Transport::Amqp),
        ));
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
    pub consumed: Report,
    /// The outbox relay.
    pub relayed: RelayReport,
    /// Times a consumer or the relay started again after losing its channel or
    /// connection (a broker restart counts once per consumer).
    pub restarts: u64,
}

/// What the supervisor keeps running, with its totals.
enum Supervised<'a> {
    Consume(Consumer, &'a Progress),
    Relay(Relay, RelayReport),
}

impl Supervised<'_> {
    async fn run(
        &mut self,
        connection: &Connection,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), SuperviseError> {
        match self {
            Supervised::Consume(consumer, progress) => {
                // Boxed: the pump's future is deep, and proving it `Send` where the
                // supervisor is spawned overflowed the compiler's recursion limit.
                let consuming: Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(consumer.run(connection, shutdown, progress));
                Ok(consuming.await?)
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
    task: &mut Supervised<'_>,
) -> Result<u64, SuperviseError> {
    let mut restarts = 0;
    let mut restarting = Restarts::default();
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
        let stopped = format!("AMQP {what} stopped");
        let then = "what it had not finished goes back to the broker or the outbox; starting again";
        let failed = (stopped.as_str(), &error, then);
        if !restarting.back_off(started, failed, &mut shutdown).await {
            return Ok(restarts);
        }
        restarts += 1;
    }
}
