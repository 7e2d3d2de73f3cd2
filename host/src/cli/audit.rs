//! `wharf audit`: what operators changed through the HTTP API, newest first.

use crate::config::Config;

pub async fn audit(config: Config, limit: u32, json: bool) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    let entries = store.audit_list(limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<24} {:<12} {:<8} {:<24} RESULT",
        "ID", "AT", "WHO", "ACTION", "TARGET"
    );
    for e in &entries {
        let at = chrono::DateTime::from_timestamp_millis(e.at).map_or_else(
            || e.at.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        );
        println!(
            "{:<6} {:<24} {:<12} {:<8} {:<24} {}",
            e.id, at, e.who, e.action, e.target, e.result
        );
    }
    if entries.is_empty() {
        println!(
            "(nothing yet: calls that change something through the HTTP API are recorded here)"
        );
    }
    Ok(())
}
