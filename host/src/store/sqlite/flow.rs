//! The flow history on SQLite: a report's rows go in one write transaction, each an
//! `INSERT ... ON CONFLICT` that adds onto the host's row of the same minute.

use super::SqliteStore;
use crate::store::flow::{FLOW_KEPT, FlowHistory, FlowRow, flow_row, flow_since_sql};
use crate::store::{Result, now_ms};

#[async_trait::async_trait]
impl FlowHistory for SqliteStore {
    async fn add_flow(&self, host: &str, rows: &[FlowRow]) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM flow_minutes WHERE minute < ?")
            .bind(now_ms() - FLOW_KEPT.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        for row in rows {
            let c = &row.counts;
            sqlx::query(
                "INSERT INTO flow_minutes (minute, host, source, plugin, handled, retried, dead,
                                           calls, call_us, call_us_max)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (minute, host, source, plugin) DO UPDATE SET
                     handled = handled + excluded.handled,
                     retried = retried + excluded.retried,
                     dead = dead + excluded.dead,
                     calls = calls + excluded.calls,
                     call_us = call_us + excluded.call_us,
                     call_us_max = MAX(call_us_max, excluded.call_us_max)",
            )
            .bind(row.minute)
            .bind(host)
            .bind(&row.source)
            .bind(&row.plugin)
            .bind(c.handled as i64)
            .bind(c.retried as i64)
            .bind(c.dead as i64)
            .bind(c.calls as i64)
            .bind(c.call_us as i64)
            .bind(c.call_us_max as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn flow_since(&self, since: i64) -> Result<Vec<FlowRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(flow_since_sql("BIGINT", "?")))
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(flow_row).collect())
    }
}
