//! Keeps a host's AMQP consumers running: one connection to the broker with the topology
//! declared on it, and `consumers` consumers per `[[amqp.consume]]`, each on a channel of
//! its own. When a channel or the connection is lost (broker restart, network cut, a
//! database that failed mid-batch), that consumer backs off and starts again; the first
//! one to find the connection gone reopens it (backing off while the broker is away) and
//! declares the topology again, since a restarted broker forgets what was not durable.
//! The broker redelivers what was not acked and the ledger catches what was already
//! settled. Errors only an operator can fix (access refused, a queue that does not exist,
//! arguments that conflict with the broker's) stop the supervisor with the reason.

use std::sync::Arc;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{Mutex, watch};

use super::consumer::{ConsumeError, ConsumeReport, Consumer};
use super::topology;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::retry::RetryPolicy;
use crate::store::Store;

/// Pauses between attempts to reconnect or to consume again: 100 ms doubling to 10 s.
const RECONNECT_BACKOFF: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    base_delay_ms: 100,
    multiplier: 2.0,
    max_delay_ms: 10_000,
    jitter: 0.2,
};

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
}

/// The consumers of one host.
pub struct Supervisor {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
}

impl Supervisor {
    /// Consumers of every `[[amqp.consume]]` of `config`, dispatching to `dispatcher`.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            config,
            store,
            dispatcher,
        }
    }

    /// Consume until `shutdown` turns true (each consumer finishes and acks the batch in
    /// hand), recovering from lost channels and connections. Returns the totals.
    pub async fn run(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ConsumeReport, SuperviseError> {
        let link = Link {
            config: &self.config,
            current: Mutex::new(None),
        };
        let consumers = self.config.amqp.consume.iter().flat_map(|spec| {
            (0..spec.consumers).map(|_| {
                let consumer = Consumer::new(
                    spec.clone(),
                    self.config.amqp.clone(),
                    self.store.clone(),
                    self.dispatcher.clone(),
                    self.config.runtime.concurrency,
                );
                keep_consuming(&link, consumer, spec.queue.as_str(), shutdown.clone())
            })
        });
        let reports = futures::future::try_join_all(consumers).await;
        link.close().await;
        let mut total = ConsumeReport::default();
        for report in reports? {
            total += report;
        }
        Ok(total)
    }
}

/// Run `consumer` until shutdown, starting it again after every transient failure.
async fn keep_consuming(
    link: &Link<'_>,
    consumer: Consumer,
    queue: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ConsumeReport, SuperviseError> {
    let mut report = ConsumeReport::default();
    let mut failures = 0;
    loop {
        let Some(connection) = link.connection(&mut shutdown).await? else {
            return Ok(report);
        };
        let acked = report.acked;
        let error = match consumer
            .run(&connection, shutdown.clone(), &mut report)
            .await
        {
            Ok(()) => return Ok(report),
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e.into()),
        };
        if report.acked > acked {
            failures = 0;
        }
        failures += 1;
        let delay = RECONNECT_BACKOFF.delay(failures, &mut rand::rng());
        tracing::warn!(
            queue,
            failures,
            ?delay,
            "AMQP consumer stopped: {error}; its unacked messages go back to the queue; consuming again"
        );
        if !pause(delay, &mut shutdown).await {
            return Ok(report);
        }
        report.restarts += 1;
    }
}

/// Sleep for `delay` unless shutdown comes first; false on shutdown.
async fn pause(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// The host's connection to the broker, reopened on demand by whichever consumer first
/// finds it gone.
struct Link<'a> {
    config: &'a Config,
    current: Mutex<Option<Arc<Connection>>>,
}

impl Link<'_> {
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
        let url = display_url(&self.config.amqp.url);
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
            let delay = RECONNECT_BACKOFF.delay(failures, &mut rand::rng());
            tracing::warn!(
                broker = url,
                failures,
                ?delay,
                "AMQP broker unreachable ({error}); is it up? retrying"
            );
            if !pause(delay, shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Connect and declare the configured exchanges and queues.
    async fn open(&self) -> Result<Connection, Opening> {
        let amqp = &self.config.amqp;
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
