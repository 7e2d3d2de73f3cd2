//! The host's one connection to the broker: opened with the topology declared on it,
//! reopened (and declared again) by whichever task first finds it gone, backing off while
//! the broker is away; shown to readiness as a [`BrokerLink`].

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{Mutex, watch};

use super::{AmqpConfig, topology};
use crate::shutdown::sleep_or_stop;
use crate::transport::OUTAGE_BACKOFF;

/// Why the connection cannot be opened, for a reason that will not go away by itself.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker refused the connection.
    #[error(
        "cannot connect to the AMQP broker at {url}: {source}; check amqp.url (user, password, virtual host)"
    )]
    Refused {
        /// The broker URL without its password.
        url: String,
        /// What lapin reported.
        source: lapin::Error,
    },
    /// The topology cannot be declared on it.
    #[error(transparent)]
    Declare(topology::DeclareError),
}

/// How long opening a connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The host's connection to the broker, reopened on demand by whichever consumer first
/// finds it gone.
pub(super) struct SharedConnection<'a> {
    config: &'a AmqpConfig,
    current: Mutex<Option<Arc<Connection>>>,
    /// Shows the current connection.
    link: &'a BrokerLink,
}

impl<'a> SharedConnection<'a> {
    /// Not connected yet: the first task to ask opens it.
    pub(super) fn new(config: &'a AmqpConfig, link: &'a BrokerLink) -> Self {
        Self {
            config,
            current: Mutex::new(None),
            link,
        }
    }

    /// The open connection; reopens it (and declares the topology) when it is gone,
    /// retrying with backoff while the broker is unreachable. `None` on shutdown.
    pub(super) async fn connection(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Arc<Connection>>, ConnectError> {
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
                    return Err(ConnectError::Refused { url, source: e });
                }
                Err(Opening::Declare(e)) if !e.is_transient() => {
                    return Err(ConnectError::Declare(e));
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
    pub(super) async fn close(&self) {
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
