//! The outbox relay: messages handlers published to AMQP exchanges were committed to the
//! outbox with their handler's results; the relay takes them oldest first, publishes
//! them (persistent, `message_id` kept so consumers can deduplicate) on a confirming
//! channel, and marks them sent only once the broker confirmed them. At least once: a
//! relay that dies between the confirm and the mark sends them again. A message to an
//! exchange the broker does not have (a passive declare says so before the batch is
//! published; publishing would close the channel) goes to the failed messages with the
//! broker's reason, and the messages behind it go on; a retry puts it back in the outbox.

use std::collections::{BTreeMap, HashSet};

use lapin::options::ExchangeDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};
use tokio::sync::watch;

use super::publish::{Outgoing, Published, answer, confirming_channel, send};
use crate::reply::STATUS_HEADER;
use crate::store::{OutboxMessage, StoreError, Undeliverable};
use crate::transport::outbox::OutboxFeed;

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker or the connection failed; unconfirmed messages stay unsent.
    #[error("AMQP error while relaying the outbox: {0}")]
    Amqp(#[from] lapin::Error),
    /// The database failed; the batch stays unsent.
    #[error("database error while relaying the outbox: {0}")]
    Store(#[from] StoreError),
}

impl RelayError {
    /// Should the relay try again after a pause? Every broker error: a missing exchange
    /// or refused access is for the operator to fix (declare the exchange in
    /// `[[amqp.exchanges]]`), but the host keeps consuming meanwhile and the messages
    /// wait in the outbox; the relay logs the error at each attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            RelayError::Amqp(_) => true,
            RelayError::Store(e) => e.is_transient(),
        }
    }
}

/// Totals of the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Messages the broker confirmed.
    pub sent: u64,
    /// Messages the broker accepted but routed to no queue (nothing bound matched).
    pub unroutable: u64,
    /// Messages to an exchange the broker does not have, moved to the failed messages.
    pub undeliverable: u64,
}

/// Relays the outbox to the broker.
pub struct Relay {
    feed: OutboxFeed,
}

impl Relay {
    /// A relay of the AMQP rows of `feed` (an answer waits in it to be sent, too).
    pub fn new(feed: OutboxFeed) -> Self {
        Self { feed }
    }

    /// Relay until `shutdown` (the batch in hand is finished) or a failure, adding to
    /// `report`.
    pub async fn run(
        &self,
        connection: &Connection,
        shutdown: watch::Receiver<bool>,
        report: &mut RelayReport,
    ) -> Result<(), RelayError> {
        let channel = confirming_channel(connection).await?;
        let result = self.relay(connection, &channel, shutdown, report).await;
        if channel.status().connected() {
            let _ = channel.close(200, "relay stopped".into()).await;
        }
        result
    }

    async fn relay(
        &self,
        connection: &Connection,
        channel: &Channel,
        mut shutdown: watch::Receiver<bool>,
        report: &mut RelayReport,
    ) -> Result<(), RelayError> {
        // Exchanges the broker had when last asked; asked again after a restart (one
        // deleted meanwhile closes the channel, and the relay restarts).
        let mut known = HashSet::new();
        while let Some(claim) = self.feed.next(&mut shutdown).await? {
            let missing = missing_exchanges(connection, &claim.messages, &mut known).await?;
            let (deliverable, undeliverable): (Vec<_>, Vec<_>) = claim
                .messages
                .iter()
                .partition(|m| !missing.contains_key(m.exchange.as_str()));
            let undeliverable: Vec<Undeliverable> = undeliverable
                .into_iter()
                .map(|m| {
                    let error = &missing[m.exchange.as_str()];
                    tracing::warn!(
                        message_id = %m.id,
                        exchange = m.exchange,
                        routing_key = m.routing_key,
                        "outbox message moved to the failed messages: {error}"
                    );
                    Undeliverable {
                        seq: m.seq,
                        error: error.clone(),
                    }
                })
                .collect();
            report.undeliverable += undeliverable.len() as u64;
            let sent = self.publish(channel, &deliverable, report).await?;
            (self.feed).done(claim.hold, &sent, &undeliverable).await?;
        }
        Ok(())
    }

    /// Publish `messages` and wait for the confirms; returns the seqs to mark sent.
    async fn publish(
        &self,
        channel: &Channel,
        messages: &[&OutboxMessage],
        report: &mut RelayReport,
    ) -> Result<Vec<i64>, RelayError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let outgoing = Outgoing {
                id: m.id,
                exchange: &m.exchange,
                routing_key: &m.routing_key,
                kind: &m.kind,
                headers: &m.headers,
                payload: &m.payload,
            };
            confirms.push(send(channel, outgoing).await?);
        }
        let mut sent = Vec::with_capacity(confirms.len());
        for (message, confirm) in messages.iter().zip(confirms) {
            match answer(confirm).await? {
                Published::Stored => report.sent += 1,
                Published::Unroutable if message.headers.contains_key(STATUS_HEADER) => {
                    tracing::info!(
                        message_id = %message.id,
                        "an answer found no queue {:?}: its requester left (its reply queue or Direct Reply-To channel is gone); counted in wharf_replies_late_total",
                        message.routing_key
                    );
                    crate::metrics::late_replies("unroutable", 1);
                    report.unroutable += 1;
                }
                Published::Unroutable => {
                    tracing::warn!(
                        message_id = %message.id,
                        exchange = message.exchange,
                        routing_key = message.routing_key,
                        "outbox message routed to no queue: nothing is bound for it, so the broker dropped it; bind a queue to keep such messages"
                    );
                    report.unroutable += 1;
                }
                Published::Refused => {
                    tracing::warn!(message_id = %message.id, "the broker refused an outbox message (nack); it will be sent again");
                    continue;
                }
            }
            sent.push(message.seq);
        }
        Ok(sent)
    }
}

/// The exchanges of `messages` the broker does not have, each with the reason to record;
/// the ones it has join `known`. Each unknown exchange is asked about with a passive
/// declare on a channel of its own (the broker closes a channel that asks about a missing
/// one). The default exchange (`""`) always exists.
async fn missing_exchanges(
    connection: &Connection,
    messages: &[OutboxMessage],
    known: &mut HashSet<String>,
) -> Result<BTreeMap<String, String>, RelayError> {
    let mut missing = BTreeMap::new();
    for message in messages {
        let exchange = message.exchange.as_str();
        if exchange.is_empty() || known.contains(exchange) || missing.contains_key(exchange) {
            continue;
        }
        let probe = connection.create_channel().await?;
        let declared = probe
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(()) => {
                known.insert(exchange.to_owned());
                let _ = probe.close(200, "exchange found".into()).await;
            }
            Err(e) if is_not_found(&e) => {
                missing.insert(
                    exchange.to_owned(),
                    format!(
                        "the broker has no exchange {exchange:?} ({e}); declare it in [[amqp.exchanges]] (or on the broker), then retry this failed message"
                    ),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(missing)
}

/// Whether the broker answered 404 NOT_FOUND.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}
