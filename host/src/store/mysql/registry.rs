//! The fleet plugin registry on MariaDB/MySQL. Deploys and rollbacks of any plugin lock
//! the one row of `registry_lock` first, so they are serialized; hosts poll for changes
//! (there is no `NOTIFY`).

use std::time::Duration;

use sqlx::{MySql, MySqlConnection, QueryBuilder};

use super::{MySqlStore, now};
use crate::store::Result;
use crate::store::registry::{
    Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, FORGET_HOSTS_AFTER, HOST_PLUGIN_COLUMNS,
    HostPlugin, RATES_FRESH_FOR, Registry, Rollback, deployment, host_plugin, rollback_of,
    unchanged,
};

/// How often a host polls for deploys.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// `plugin`'s standing deployments, newest first, at most `limit`.
async fn standing(conn: &mut MySqlConnection, plugin: &str, limit: i64) -> Result<Vec<Deployment>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments
         WHERE plugin = ? AND rolled_back_at IS NULL ORDER BY id DESC LIMIT ?"
    )))
    .bind(plugin)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(deployment).collect())
}

/// Serialize registry changes: lock the registry's row until the transaction ends.
async fn lock_registry(conn: &mut MySqlConnection) -> Result<()> {
    sqlx::query("SELECT id FROM registry_lock WHERE id = 1 FOR UPDATE")
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Registry for MySqlStore {
    async fn deploy(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = self.pool.begin().await?;
        lock_registry(&mut tx).await?;
        if let Some(same) = unchanged(standing(&mut tx, &artifact.name, 1).await?.pop(), artifact) {
            return Ok(same);
        }
        let now = now(&mut tx).await?;
        sqlx::query(
            "INSERT IGNORE INTO plugin_artifacts (sha256, name, version, wasm, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&artifact.sha256)
        .bind(&artifact.name)
        .bind(&artifact.version)
        .bind(&artifact.wasm)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let id = sqlx::query(
            "INSERT INTO plugin_deployments (plugin, version, sha256, deployed_at, deployed_by)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&artifact.name)
        .bind(&artifact.version)
        .bind(&artifact.sha256)
        .bind(now)
        .bind(by)
        .execute(&mut *tx)
        .await?
        .last_insert_id();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments WHERE id = ?"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Deployed::New(deployment(&row)))
    }

    async fn rollback(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = self.pool.begin().await?;
        lock_registry(&mut tx).await?;
        let (from, to) = match rollback_of(standing(&mut tx, plugin, 2).await?) {
            Rollback::Done { from, to } => (from, to),
            nothing => return Ok(nothing),
        };
        let now = now(&mut tx).await?;
        sqlx::query("UPDATE plugin_deployments SET rolled_back_at = ? WHERE id = ?")
            .bind(now)
            .bind(from.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let from = Deployment {
            rolled_back_at: Some(now),
            ..from
        };
        Ok(Rollback::Done { from, to })
    }

    async fn history(&self, plugin: &str) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments WHERE plugin = ?
             ORDER BY id DESC"
        )))
        .bind(plugin)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deployment).collect())
    }

    async fn active_deployments(&self) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments WHERE id IN (
                 SELECT MAX(id) FROM plugin_deployments WHERE rolled_back_at IS NULL
                 GROUP BY plugin)
             ORDER BY plugin"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deployment).collect())
    }

    async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT wasm FROM plugin_artifacts WHERE sha256 = ?")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn wait_for_deployments(&self, at_most: Duration) -> Result<()> {
        tokio::time::sleep(at_most.min(POLL_EVERY)).await;
        Ok(())
    }

    async fn report_host(
        &self,
        host: &str,
        plugins: &[HostPlugin],
        handled: &[(String, u64)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = now(&mut tx).await?;
        for table in ["plugin_hosts", "host_queues"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE host = ? OR reported_at < ?"
            )))
            .bind(host)
            .bind(now - FORGET_HOSTS_AFTER.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        }
        if !handled.is_empty() {
            let mut rows = QueryBuilder::<MySql>::new(
                "INSERT INTO host_queues (host, source, handled, reported_at) ",
            );
            rows.push_values(handled, |mut row, (source, n)| {
                row.push_bind(host)
                    .push_bind(source)
                    .push_bind(*n as i64)
                    .push_bind(now);
            });
            rows.build().execute(&mut *tx).await?;
        }
        if !plugins.is_empty() {
            let mut rows = QueryBuilder::<MySql>::new(
                "INSERT INTO plugin_hosts (host, plugin, version, sha256, source, breaker, reported_at) ",
            );
            rows.push_values(plugins, |mut row, p| {
                row.push_bind(host)
                    .push_bind(&p.plugin)
                    .push_bind(&p.version)
                    .push_bind(&p.sha256)
                    .push_bind(&p.source)
                    .push_bind(&p.breaker)
                    .push_bind(now);
            });
            rows.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn forget_host(&self, host: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["plugin_hosts", "host_queues"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE host = ?"
            )))
            .bind(host)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn host_reports(&self) -> Result<Vec<HostPlugin>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_PLUGIN_COLUMNS} FROM plugin_hosts ORDER BY host, plugin"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(host_plugin).collect())
    }

    async fn handled_per_minute(&self) -> Result<Vec<(String, u64)>> {
        let mut conn = self.pool.acquire().await?;
        let since = now(&mut conn).await? - RATES_FRESH_FOR.as_millis() as i64;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT source, CAST(SUM(handled) AS SIGNED) AS handled
             FROM host_queues WHERE reported_at >= ? GROUP BY source ORDER BY source",
        )
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
    }
}
