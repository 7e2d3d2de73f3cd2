//! The plugin registry on SQLite, for a single host that deploys with `wharf plugins
//! deploy` rather than by copying files. Deploys and rollbacks take the write lock first
//! (`BEGIN IMMEDIATE`); hosts poll for changes.

use std::time::Duration;

use super::SqliteStore;
use crate::store::registry::{
    Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, FORGET_HOSTS_AFTER, HANDLED_PER_MINUTE,
    HOST_PLUGIN_COLUMNS, HostPlugin, RATES_FRESH_FOR, Registry, Rollback, deployment, host_plugin,
    rollback_of, unchanged,
};
use crate::store::{Result, now_ms};

/// How often a host polls for deploys.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// `plugin`'s standing deployments, newest first, at most `limit`.
async fn standing(
    conn: &mut sqlx::SqliteConnection,
    plugin: &str,
    limit: i64,
) -> Result<Vec<Deployment>> {
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

#[async_trait::async_trait]
impl Registry for SqliteStore {
    async fn deploy(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(same) = unchanged(standing(&mut tx, &artifact.name, 1).await?.pop(), artifact) {
            return Ok(same);
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO plugin_artifacts (sha256, name, version, wasm, created_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&artifact.sha256)
        .bind(&artifact.name)
        .bind(&artifact.version)
        .bind(&artifact.wasm)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO plugin_deployments (plugin, version, sha256, deployed_at, deployed_by)
             VALUES (?, ?, ?, ?, ?) RETURNING {DEPLOYMENT_COLUMNS}"
        )))
        .bind(&artifact.name)
        .bind(&artifact.version)
        .bind(&artifact.sha256)
        .bind(now)
        .bind(by)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Deployed::New(deployment(&row)))
    }

    async fn rollback(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (from, to) = match rollback_of(standing(&mut tx, plugin, 2).await?) {
            Rollback::Done { from, to } => (from, to),
            nothing => return Ok(nothing),
        };
        let now = now_ms();
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
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for table in ["plugin_hosts", "host_queues"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE host = ? OR reported_at < ?"
            )))
            .bind(host)
            .bind(now - FORGET_HOSTS_AFTER.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        }
        for (source, n) in handled {
            sqlx::query(
                "INSERT INTO host_queues (host, source, handled, reported_at) VALUES (?, ?, ?, ?)",
            )
            .bind(host)
            .bind(source)
            .bind(*n as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for p in plugins {
            sqlx::query(
                "INSERT INTO plugin_hosts
                     (host, plugin, version, sha256, source, breaker, reported_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(host)
            .bind(&p.plugin)
            .bind(&p.version)
            .bind(&p.sha256)
            .bind(&p.source)
            .bind(&p.breaker)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn forget_host(&self, host: &str) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let since = now_ms() - RATES_FRESH_FOR.as_millis() as i64;
        let rows: Vec<(String, i64)> = sqlx::query_as(HANDLED_PER_MINUTE)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
    }
}
