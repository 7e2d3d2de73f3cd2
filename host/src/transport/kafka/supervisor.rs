//! Keeps a host's Kafka work running: a consumer per `[[kafka.consume]]` topic and (with
//! `kafka.relay`) the outbox relay. A consumer that failed (brokers away past
//! librdkafka's own reconnecting, a database that failed mid-batch, a dead letter the
//! brokers refused) leaves the group and, after a backoff, joins again: it reads from the
//! offsets committed, and the ledger skips what was settled. A relay that failed starts
//! again after a backoff: what it had not marked sent is produced again. Errors only an
//! operator can fix (a missing topic, refused credentials, a bad client property) stop
//! the supervisor with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::client;
use super::consumer::Consumer;
use super::relay::{Relay, RelayError, RelayReport};
use super::{ConsumeError, KafkaConfig, KafkaLink, KafkaView, Lags, TopicSpec};
use crate::dispatch::Dispatcher;
use crate::store::{Store, Transport};
use crate::transport::Restarts;
use crate::transport::outbox::OutboxFeed;
use crate::transport::pump::{Progress, Report, StopWhen};

/// Why the Kafka work of a host stopped.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A consumer failed for a reason that will not go away by itself.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The outbox relay failed for a reason that will not go away by itself.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// Totals of [`Supervisor::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuperviseReport {
    /// All consumers together.
    pub consumed: Report,
    /// The outbox relay.
    pub relayed: RelayReport,
}

/// The Kafka work of one host.
pub struct Supervisor {
    config: KafkaConfig,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    relay_poll: Duration,
    link: KafkaLink,
    lags: Lags,
}

impl Supervisor {
    /// Consumers of every `[[kafka.consume]]` of `config`, dispatching to `dispatcher`,
    /// and the outbox relay (polling every `relay_poll` while idle) when `config` relays.
    pub fn new(
        config: KafkaConfig,
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        relay_poll: Duration,
    ) -> Self {
        Self {
            config,
            store,
            dispatcher,
            relay_poll,
            link: KafkaLink::default(),
            lags: Lags::default(),
        }
    }

    /// Whether a broker is reachable and the lag of the partitions this host owns, as
    /// they change.
    pub fn view(&self) -> KafkaView {
        KafkaView {
            link: self.link.clone(),
            lags: self.lags.clone(),
        }
    }

    /// Consume and relay until `shutdown` turns true (each consumer finishes and commits
    /// the batch in hand, the relay the batch it produced), starting them again after
    /// failures that pass. Returns the totals.
    pub async fn run(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<SuperviseReport, SuperviseError> {
        let progress = Progress::new("kafka", StopWhen::default());
        let consumers = (self.config.consume.iter())
            .map(|spec| self.consume(spec, &progress, shutdown.clone()));
        let consuming = async {
            futures::future::try_join_all(consumers).await?;
            Ok::<_, SuperviseError>(())
        };
        let relaying = async { Ok::<_, SuperviseError>(self.relay(shutdown.clone()).await?) };
        let ((), relayed) = tokio::try_join!(consuming, relaying)?;
        Ok(SuperviseReport {
            consumed: progress.report(),
            relayed,
        })
    }

    /// The outbox relay (when `kafka.relay`), kept running; its totals.
    async fn relay(&self, mut shutdown: watch::Receiver<bool>) -> Result<RelayReport, RelayError> {
        let mut report = RelayReport::default();
        if !self.config.relays() {
            return Ok(report);
        }
        let mut restarting = Restarts::default();
        loop {
            let started = Instant::now();
            let relaying = async {
                let producer = client::producer(&self.config, &self.link, &self.lags)?;
                let feed = OutboxFeed::new(
                    self.store.clone(),
                    Transport::Kafka,
                    u32::try_from(self.config.batch_size).unwrap_or(u32::MAX),
                    self.relay_poll,
                    self.dispatcher.outbox_written(Transport::Kafka),
                );
                let relay = Relay::new(feed, producer, &self.config.brokers);
                relay.run(shutdown.clone(), &mut report).await
            };
            let error = match relaying.await {
                Ok(()) => return Ok(report),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            let then = "what it did not mark sent is produced again; starting again";
            let failed = ("Kafka outbox relay stopped", &error, then);
            if !restarting.back_off(started, failed, &mut shutdown).await {
                return Ok(report);
            }
        }
    }

    /// One consumer of `spec.topic`, kept running, adding to `progress`.
    async fn consume(
        &self,
        spec: &TopicSpec,
        progress: &Progress,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConsumeError> {
        let consumer = Consumer::new(
            spec.clone(),
            self.config.clone(),
            self.store.clone(),
            self.dispatcher.clone(),
            (self.link.clone(), self.lags.clone()),
        );
        let stopped = format!("Kafka consumer of topic {} stopped", spec.topic);
        let then = "its records not committed are read again; joining the group again";
        let mut restarting = Restarts::default();
        loop {
            let started = Instant::now();
            // Boxed as a `dyn Future`: the pump's future is deep, and proving it `Send`
            // where the supervisor is spawned overflows the compiler's recursion limit.
            let running: Pin<Box<dyn Future<Output = _> + Send + '_>> =
                Box::pin(consumer.run(shutdown.clone(), progress));
            let error = match running.await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            let failed = (stopped.as_str(), &error, then);
            if !restarting.back_off(started, failed, &mut shutdown).await {
                return Ok(());
            }
        }
    }
}
