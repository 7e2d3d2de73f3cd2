//! `wharf queues`: the inbox queues, the consumed AMQP queues' depths and the consumed
//! Kafka topics' lag by partition, with their dead letters.

use crate::config::Config;
use crate::store::{QueueSource, QueueStats};
use crate::transport::amqp::connection::display_url;
use crate::transport::amqp::depth::depths;
use crate::transport::kafka::lag::{self, LagError, TopicLag};

pub async fn queues(config: Config, json: bool) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    let (inbox, brokers_failed): (Vec<QueueStats>, Vec<QueueStats>) = store
        .queue_stats()
        .await?
        .into_iter()
        .partition(|q| q.source == QueueSource::Inbox);
    let failed_of = |source: QueueSource, queue: &str| {
        (brokers_failed.iter())
            .find(|q| q.source == source && q.queue == queue)
            .map_or(0, |q| q.failed)
    };
    let failed = |queue: &str| failed_of(QueueSource::Amqp, queue);
    let kafka = lag::lags(&config.kafka).await;
    let amqp = if config.amqp.consume.is_empty() {
        None
    } else {
        Some(depths(&config.amqp).await.map_err(|e| {
            format!(
                "AMQP broker {} unreachable: {e}",
                display_url(&config.amqp.url)
            )
        }))
    };
    if json {
        let amqp = match &amqp {
            None => serde_json::Value::Array(Vec::new()),
            Some(Ok(depths)) => depths
                .iter()
                .map(|d| {
                    let mut row = serde_json::to_value(d)?;
                    row["failed"] = failed(&d.queue).into();
                    Ok(row)
                })
                .collect::<serde_json::Result<_>>()?,
            Some(Err(e)) => serde_json::json!({ "error": e }),
        };
        let kafka: Vec<serde_json::Value> = (kafka.iter())
            .map(|(topic, lag)| {
                let failed = failed_of(QueueSource::Kafka, topic);
                match lag {
                    Ok(lag) => {
                        let mut row = serde_json::to_value(lag)?;
                        row["failed"] = failed.into();
                        Ok(row)
                    }
                    Err(e) => Ok(serde_json::json!({ "topic": topic, "failed": failed, "error": e.to_string() })),
                }
            })
            .collect::<serde_json::Result<_>>()?;
        let all = serde_json::json!({ "inbox": inbox, "amqp": amqp, "kafka": kafka });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "QUEUE", "PENDING", "IN-FLIGHT", "SCHEDULED", "FAILED"
    );
    for q in &inbox {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9}",
            q.queue, q.pending, q.in_flight, q.scheduled, q.failed
        );
    }
    match amqp {
        None => {}
        Some(Err(e)) => println!("\n{e}"),
        Some(Ok(depths)) => {
            let show = |n: Option<u32>| n.map_or_else(|| "missing".to_owned(), |n| n.to_string());
            println!(
                "\n{:<24} {:>9} {:>9} {:>9} {:>9}",
                "AMQP QUEUE", "READY", "CONSUMERS", "DLQ", "FAILED"
            );
            for d in &depths {
                println!(
                    "{:<24} {:>9} {:>9} {:>9} {:>9}",
                    d.queue,
                    show(d.ready),
                    show(d.consumers),
                    show(d.dead_letters),
                    failed(&d.queue)
                );
            }
        }
    }
    if !kafka.is_empty() {
        print_kafka(&kafka, |topic| failed_of(QueueSource::Kafka, topic));
    }
    Ok(())
}

/// The Kafka topics' lag, total and by partition (high watermark, committed offset).
fn print_kafka(kafka: &[(String, Result<TopicLag, LagError>)], failed: impl Fn(&str) -> u64) {
    println!(
        "\n{:<24} {:>9} {:>9} {:>12} {:>12}",
        "KAFKA TOPIC", "LAG", "FAILED", "HIGH", "COMMITTED"
    );
    for (topic, lag) in kafka {
        match lag {
            Err(e) => println!("{topic:<24} {e}"),
            Ok(lag) => {
                println!("{topic:<24} {:>9} {:>9}", lag.lag, failed(topic));
                for (partition, p) in &lag.partitions {
                    let committed = match p.committed {
                        -1 => "none".to_owned(),
                        at => at.to_string(),
                    };
                    println!(
                        "{:<24} {:>9} {:>9} {:>12} {committed:>12}",
                        format!("  partition {partition}"),
                        p.lag,
                        "",
                        p.high
                    );
                }
            }
        }
    }
}
