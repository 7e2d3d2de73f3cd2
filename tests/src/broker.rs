//! A host wired to the real RabbitMQ for the AMQP tests: a fresh queue bound to a fresh
//! direct exchange, publishing with confirms, and running the host's consumer or
//! supervisor until a condition holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio::sync::watch;
use wharf_host::envelope::KEY_HEADER;
use wharf_host::transport::amqp::consumer::Consumer;
use wharf_host::transport::amqp::supervisor::{SuperviseReport, Supervisor};
use wharf_host::transport::amqp::topology;
use wharf_host::transport::pump::{Progress, Report, StopWhen};

use crate::{Backend, Host, confirming_channel, route_orders, unique_name};

/// A host consuming a fresh queue bound to a fresh direct exchange with key `orders`.
pub struct Broker {
    /// The host, its consumer on `queue`.
    pub host: Arc<Host>,
    /// The test's own connection to the broker.
    pub connection: lapin::Connection,
    /// A channel on it with publisher confirms.
    pub channel: Channel,
    /// The exchange the test publishes to (routing key `orders`).
    pub exchange: String,
    /// The queue the host consumes.
    pub queue: String,
}

impl Broker {
    /// A host with `plugins` on `backend`, consuming its fresh queue, the topology declared.
    pub async fn start(backend: Backend, plugins: &[&str]) -> Broker {
        Self::start_with(backend, plugins, |_| {}).await
    }

    /// Like [`Broker::start`], letting the test adjust the config.
    pub async fn start_with(
        backend: Backend,
        plugins: &[&str],
        adjust: impl FnOnce(&mut wharf_host::config::Config),
    ) -> Broker {
        let exchange = unique_name("ex");
        let queue = unique_name("q");
        let host = Host::start_with(backend, plugins, |c| {
            c.amqp.batch_size = 10;
            route_orders(c, &exchange, &queue);
            adjust(c);
        })
        .await;
        let (connection, channel) = confirming_channel().await;
        let amqp = &host.config.amqp;
        topology::declare(&channel, &amqp.exchanges, &amqp.queues)
            .await
            .unwrap();
        // Declaring twice is a no-op.
        topology::declare(&channel, &amqp.exchanges, &amqp.queues)
            .await
            .unwrap();
        Broker {
            host: Arc::new(host),
            connection,
            channel,
            exchange,
            queue,
        }
    }

    /// Publish to the exchange with routing key `orders`, confirmed.
    pub async fn publish(&self, kind: &str, id: Option<&str>, body: &[u8]) {
        let mut properties = BasicProperties::default().with_type(kind.into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        self.publish_with(properties, body).await;
    }

    /// Publish a message of `kind` with id `id` and ordering key `key` (the
    /// `partition_key` header), confirmed.
    pub async fn publish_keyed(&self, kind: &str, id: &str, key: &str, body: &[u8]) {
        let properties = keyed(kind, key).with_message_id(id.into());
        self.publish_with(properties, body).await;
    }

    /// Publish with `properties` to the exchange with routing key `orders`, confirmed.
    pub async fn publish_with(&self, properties: BasicProperties, body: &[u8]) {
        self.publish_all([(properties, body.to_vec())]).await;
    }

    /// Publish each (properties, body) to the exchange with routing key `orders`, all
    /// before waiting for their confirms.
    pub async fn publish_all(
        &self,
        messages: impl IntoIterator<Item = (BasicProperties, Vec<u8>)>,
    ) {
        publish_orders(&self.channel, &self.exchange, messages).await;
    }

    /// Run a consumer until `done` holds (panics after 20 s), then stop it.
    pub async fn consume_until(&self, what: &str, done: impl AsyncFn(&Host) -> bool) -> Report {
        let (stop, stopped) = watch::channel(false);
        let consumer = Consumer::new(
            self.host.config.amqp.consume[0].clone(),
            self.host.config.amqp.clone(),
            self.host.store.clone(),
            self.host.dispatcher.clone(),
        );
        let running = async {
            let progress = Progress::new("amqp", StopWhen::default());
            consumer
                .run(&self.connection, stopped, &progress)
                .await
                .map(|()| progress.report())
        };
        let watching = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(&self.host).await {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.send(true).unwrap();
        };
        let (report, ()) = tokio::join!(running, watching);
        report.expect("the consumer ran without errors")
    }

    /// Run the host's consumers (and relay) as `wharf run` does, with the supervisor,
    /// until `done` holds (panics after 20 s), then stop them.
    pub async fn supervise_until(
        &self,
        what: &str,
        done: impl AsyncFn(&Broker) -> bool,
    ) -> SuperviseReport {
        self.supervise_until_on(&self.host, what, done).await
    }

    /// [`Broker::supervise_until`] with the consumers of `host`.
    pub async fn supervise_until_on(
        &self,
        host: &Host,
        what: &str,
        done: impl AsyncFn(&Broker) -> bool,
    ) -> SuperviseReport {
        let (stop, stopped) = watch::channel(false);
        let supervisor = supervisor(host);
        let running = supervisor.run(stopped);
        let watching = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(self).await {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.send(true).unwrap();
        };
        let (report, ()) = tokio::join!(running, watching);
        report.expect("the consumers ran without errors")
    }

    /// Another host on the same database and broker topology, with other plugins.
    pub async fn second_host(&self, plugins: &[&str]) -> Host {
        self.host.second(plugins).await
    }

    /// Ready messages in a queue, asked on a connection of its own: the consumers share
    /// the broker's, and lapin may take all of its channels down with a consumer it is
    /// cancelling while its channel closes.
    pub async fn depth(&self, queue: &str) -> u32 {
        queue_depth(queue)
            .await
            .unwrap_or_else(|| panic!("queue {queue} cannot be looked up"))
    }
}

/// Run the AMQP supervisors and inbox workers of `hosts` until `done`.
pub async fn run_until(hosts: &[&Host], what: &str, done: impl AsyncFn() -> bool) {
    let limit = Duration::from_secs(40);
    crate::running::run_until(hosts, (what, limit), done, |host, shutdown| {
        let supervisor = supervisor(host);
        tokio::spawn(async move { supervisor.run(shutdown).await })
    })
    .await
}

/// Properties of a message of `kind` with ordering key `key` (in the `partition_key`
/// header) and a fresh id.
pub fn keyed(kind: &str, key: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(KEY_HEADER.into(), AMQPValue::LongString(key.into()));
    BasicProperties::default()
        .with_type(kind.into())
        .with_message_id(uuid::Uuid::now_v7().to_string().into())
        .with_headers(headers)
}

/// Publish each (properties, body) on `channel` to `exchange` with routing key `orders`,
/// all before waiting for their confirms.
pub async fn publish_orders(
    channel: &Channel,
    exchange: &str,
    messages: impl IntoIterator<Item = (BasicProperties, Vec<u8>)>,
) {
    let mut confirms = Vec::new();
    for (properties, body) in messages {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                "orders".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(
            confirm.await.unwrap().is_ack(),
            "the broker took the message"
        );
    }
}

/// The supervisor of `host`'s consumers and relay, as `wharf run` starts it.
pub fn supervisor(host: &Host) -> Supervisor {
    Supervisor::new(
        host.config.amqp.clone(),
        Duration::from_millis(host.config.inbox.poll_interval_ms),
        host.store.clone(),
        host.dispatcher.clone(),
    )
}

/// Ready messages in `queue`, on a connection of its own; `None` if it cannot be looked
/// up (broker down, queue not declared).
pub async fn queue_depth(queue: &str) -> Option<u32> {
    let url = crate::amqp_url();
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .ok()?;
    let channel = connection.create_channel().await.ok()?;
    let depth = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = connection.close(200, "looked".into()).await;
    depth
}
