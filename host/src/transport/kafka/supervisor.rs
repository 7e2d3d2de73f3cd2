//! Keeps a host's Kafka work running: a consumer per `[[kafka.consume]]` topic. A
//! consumer that failed (brokers away past librdkafka's own reconnecting, a database
//! that failed mid-batch, a dead letter the brokers refused) leaves the group and, after
//! a backoff, joins again: it reads from the offsets committed, and the ledger skips
//! what was settled. Errors only an operator can fix (a missing topic, refused
//! credentials, a bad client property) stop the supervisor with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::consumer::Consumer;
use super::{ConsumeError, KafkaConfig, KafkaLink, KafkaView, Lags, TopicSpec};
use crate::dispatch::Dispatcher;
use crate::shutdown::sleep_or_stop;
use crate::store::Store;
use crate::transport::Restarts;
use crate::transport::pump::{Progress, Report, StopWhen};

/// The Kafka work of one host.
pub struct Supervisor {
    config: KafkaConfig,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    link: KafkaLink,
    lags: Lags,
}

impl Supervisor {
    /// Consumers of every `[[kafka.consume]]` of `config`, dispatching to `dispatcher`.
    pub fn new(config: KafkaConfig, store: Arc<dyn Store>, dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            config,
            store,
            dispatcher,
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

    /// Consume until `shutdown` turns true (each consumer finishes and commits the batch
    /// in hand), starting consumers again after failures that pass. Returns the totals.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) -> Result<Report, ConsumeError> {
        let progress = Progress::new("kafka", StopWhen::default());
        let consumers = (self.config.consume.iter())
            .map(|spec| self.consume(spec, &progress, shutdown.clone()));
        futures::future::try_join_all(consumers).await?;
        Ok(progress.report())
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
            let (failures, delay) = restarting.failed(started);
            tracing::warn!(
                topic = spec.topic,
                failures,
                ?delay,
                "Kafka consumer stopped: {error}; its records not committed are read again; joining the group again"
            );
            if !sleep_or_stop(delay, &mut shutdown).await {
                return Ok(());
            }
        }
    }
}
