//! The real PostgreSQL and RabbitMQ the tests run against: where they are, a fresh schema
//! or uniquely named queues per test, and sweeping what earlier test processes left.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use wharf_host::config::Config;

/// The PostgreSQL the tests use: `WHARF_TEST_POSTGRES_URL`, by default the local server.
pub fn postgres_url() -> String {
    std::env::var("WHARF_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Create an empty schema for one test and return a `database.url` that uses it, with the
/// schema's name as `application_name` (so a test can find its connections). Schemas
/// left by earlier test processes that are no longer running are dropped first.
pub async fn fresh_postgres_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let base = postgres_url();
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {base}: {e}. Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set WHARF_TEST_POSTGRES_URL"
        )
    });
    SWEPT
        .get_or_init(|| async {
            let schemas: Vec<String> = sqlx::query_scalar(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'wharf\\_t\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for schema in schemas {
                let pid = schema.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                let alive =
                    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                }
            }
        })
        .await;
    let schema = format!(
        "wharf_t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}&application_name={schema}")
}

/// The MariaDB (or MySQL) the tests use: `WHARF_TEST_MYSQL_URL`, by default the local
/// server's `test` database.
pub fn mysql_url() -> String {
    std::env::var("WHARF_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// Create an empty database for one test and return a `database.url` that uses it.
/// Databases left by earlier test processes that are no longer running are dropped first.
pub async fn fresh_mysql_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let base = mysql_url();
    let mut conn = sqlx::MySqlConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!(
            "MariaDB is not reachable at {base}: {e}. Start it (start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd) or set WHARF_TEST_MYSQL_URL"
        )
    });
    SWEPT
        .get_or_init(|| async {
            let databases: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata
                 WHERE schema_name LIKE 'wharf!_t!_%' ESCAPE '!'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for database in databases {
                let pid = database
                    .split('_')
                    .nth(2)
                    .and_then(|p| p.parse::<u32>().ok());
                let alive =
                    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS `{database}`"
                    )))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                }
            }
        })
        .await;
    let database = format!(
        "wharf_t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    format!("{server}/{database}")
}

/// The RabbitMQ the tests use: `WHARF_TEST_AMQP_URL`, by default the local broker.
pub fn amqp_url() -> String {
    std::env::var("WHARF_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A connection to the tests' RabbitMQ; panics with how to start it. The first call in
/// a test process deletes the queues and exchanges that earlier test processes left.
pub async fn amqp_connection() -> lapin::Connection {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let url = amqp_url();
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {url}: {e}. Start it (rabbitmq-server -detached; rabbitmqctl await_startup) or set WHARF_TEST_AMQP_URL"
            )
        });
    SWEPT.get_or_init(|| sweep_amqp(&connection)).await;
    connection
}

/// A connection to the test broker and a channel on it with publisher confirms.
pub async fn confirming_channel() -> (lapin::Connection, lapin::Channel) {
    let connection = amqp_connection().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    (connection, channel)
}

/// Delete the `wharf_t_<pid>_...` queues and exchanges of test processes that are gone.
/// Needs `rabbitmqctl` (to list them); without it, nothing is swept.
async fn sweep_amqp(connection: &lapin::Connection) {
    let list = |what: &str| {
        std::process::Command::new("rabbitmqctl")
            .args([what, "-q", "--no-table-headers", "name"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    let stale = |name: &&str| {
        name.strip_prefix("wharf_t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let channel = connection.create_channel().await.unwrap();
    for queue in list("list_queues").lines().filter(stale) {
        channel
            .queue_delete(queue.into(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting stale test queue {queue}: {e}"));
    }
    for exchange in list("list_exchanges").lines().filter(stale) {
        channel
            .exchange_delete(exchange.into(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting stale test exchange {exchange}: {e}"));
    }
    let _ = channel.close(200, "swept".into()).await;
}

/// Route `exchange` (durable, direct) -> `queue` (durable) with routing key `orders`, and
/// consume the queue (prefetch 100, one consumer): the topology of the AMQP tests.
pub fn route_orders(config: &mut Config, exchange: &str, queue: &str) {
    use wharf_host::envelope::KEY_HEADER;
    use wharf_host::transport::amqp::topology::{BindingSpec, ExchangeSpec, QueueSpec};
    use wharf_host::transport::amqp::{ConsumeSpec, KindFrom};
    config.amqp.url = amqp_url();
    // And `audit`, where fixture-once publishes: the relay delivers what the fixtures
    // publish rather than moving it to the failed messages.
    config.amqp.exchanges = vec![
        ExchangeSpec {
            name: exchange.to_owned(),
            kind: Default::default(),
            durable: true,
        },
        ExchangeSpec {
            name: "audit".into(),
            kind: wharf_host::transport::amqp::topology::ExchangeType::Topic,
            durable: true,
        },
    ];
    config.amqp.queues = vec![QueueSpec {
        name: queue.to_owned(),
        durable: true,
        queue_type: Default::default(),
        message_ttl_ms: None,
        max_length: None,
        overflow: None,
        dead_letter_exchange: None,
        dead_letter_routing_key: None,
        single_active_consumer: false,
        bindings: vec![BindingSpec {
            exchange: exchange.to_owned(),
            routing_key: "orders".into(),
            headers: Default::default(),
        }],
    }];
    config.amqp.consume = vec![ConsumeSpec {
        queue: queue.to_owned(),
        prefetch: 100,
        consumers: 1,
        kind_from: KindFrom::Type,
        to_inbox: None,
        key_header: KEY_HEADER.into(),
        ordered: false,
    }];
}

/// A name no other test (or test process) uses, for queues and exchanges.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "wharf_t_{}_{}_{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
