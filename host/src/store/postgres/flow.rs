//! The flow history on PostgreSQL: a report's rows go in as one `INSERT ... ON CONFLICT`
//! that adds onto the host's rows of the same minute.

use super::PostgresStore;
use crate::store::flow::{FLOW_KEPT, FlowHistory, FlowRow, flow_row, flow_since_sql};
use crate::store::{Result, now_ms};

#[async_trait::async_trait]
impl FlowHistory for PostgresStore {
    async fn add_flow(&self, host: &str, rows: &[FlowRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM flow_minutes WHERE minute < $1")
            .bind(now_ms() - FLOW_KEPT.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        let count =
            |f: fn(&FlowRow) -> u64| -> Vec<i64> { rows.iter().map(|r| f(r) as i64).collect() };
        sqlx::query(
            "INSERT INTO flow_minutes (minute, host, source, plugin, handled, retried, dead,
                                       calls, call_us, call_us_max)
             SELECT m, $1, s, p, h, r, d, c, us, mx
             FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                         $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
                  AS t (m, s, p, h, r, d, c, us, mx)
             ON CONFLICT (minute, host, source, plugin) DO UPDATE SET
                 handled = flow_minutes.handled + excluded.handled,
                 retried = flow_minutes.retried + excluded.retried,
                 dead = flow_minutes.dead + excluded.dead,
                 calls = flow_minutes.calls + excluded.calls,
                 call_us = flow_minutes.call_us + excluded.call_us,
                 call_us_max = GREATEST(flow_minutes.call_us_max, excluded.call_us_max)",
        )
        .bind(host)
        .bind(rows.iter().map(|r| r.minute).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.plugin.as_str()).collect::<Vec<_>>())
        .bind(count(|r| r.counts.handled))
        .bind(count(|r| r.counts.retried))
        .bind(count(|r| r.counts.dead))
        .bind(count(|r| r.counts.calls))
        .bind(count(|r| r.counts.call_us))
        .bind(count(|r| r.counts.call_us_max))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn flow_since(&self, since: i64) -> Result<Vec<FlowRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(flow_since_sql("BIGINT", "$1")))
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(flow_row).collect())
    }
}
