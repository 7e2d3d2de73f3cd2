//! `wharf queues`.

use crate::config::Config;
use crate::store::{QueueSource, QueueStats};
use crate::transport::amqp::connection::display_url;
use crate::transport::amqp::depth::depths;

pub async fn queues(config: Config, json: bool) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    let (inbox, amqp_failed): (Vec<QueueStats>, Vec<QueueStats>) = store
        .queue_stats()
        .await?
        .into_iter()
        .partition(|q| q.source == QueueSource::Inbox);
    let failed = |queue: &str| {
        amqp_failed
            .iter()
            .find(|q| q.queue == queue)
            .map_or(0, |q| q.failed)
    };
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
        let all = serde_json::json!({ "inbox": inbox, "amqp": amqp });
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
    Ok(())
}
