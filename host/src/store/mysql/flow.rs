//! The flow history on MariaDB/MySQL: a report's rows go in as one multi-row `INSERT ...
//! ON DUPLICATE KEY UPDATE` that adds onto the host's rows of the same minute.

use sqlx::{MySql, QueryBuilder};

use super::MySqlStore;
use crate::store::flow::{FLOW_KEPT, FlowHistory, FlowRow, flow_row, flow_since_sql};
use crate::store::{Result, now_ms};

#[async_trait::async_trait]
impl FlowHistory for MySqlStore {
    async fn add_flow(&self, host: &str, rows: &[FlowRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM flow_minutes WHERE minute < ?")
            .bind(now_ms() - FLOW_KEPT.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        if !rows.is_empty() {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO flow_minutes (minute, host, source, plugin, handled, retried, dead,
                                           calls, call_us, call_us_max) ",
            );
            insert.push_values(rows, |mut values, row| {
                let c = &row.counts;
                values
                    .push_bind(row.minute)
                    .push_bind(host)
                    .push_bind(&row.source)
                    .push_bind(&row.plugin)
                    .push_bind(c.handled as i64)
                    .push_bind(c.retried as i64)
                    .push_bind(c.dead as i64)
                    .push_bind(c.calls as i64)
                    .push_bind(c.call_us as i64)
                    .push_bind(c.call_us_max as i64);
            });
            insert.push(
                " ON DUPLICATE KEY UPDATE
                     handled = handled + VALUES(handled),
                     retried = retried + VALUES(retried),
                     dead = dead + VALUES(dead),
                     calls = calls + VALUES(calls),
                     call_us = call_us + VALUES(call_us),
                     call_us_max = GREATEST(call_us_max, VALUES(call_us_max))",
            );
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn flow_since(&self, since: i64) -> Result<Vec<FlowRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(flow_since_sql("SIGNED", "?")))
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(flow_row).collect())
    }
}
