//! What the `sequence-a` / `sequence-b` fixtures keep: the last `n` each handled per key
//! (state `last:<key>`).

use std::collections::BTreeMap;

use sqlx::Row;

use crate::Host;

/// The last `n` `plugin` handled, by key.
pub async fn last(host: &Host, plugin: &str) -> BTreeMap<String, u64> {
    let rows = host
        .query_rows(format!(
            r#"SELECT "key", value FROM plugin_state WHERE plugin = '{plugin}'"#
        ))
        .await;
    rows.iter()
        .map(|r| {
            let key: String = r.get(0);
            let value: Vec<u8> = r.get(1);
            let key = key.strip_prefix("last:").unwrap().to_owned();
            (key, serde_json::from_slice(&value).unwrap())
        })
        .collect()
}
