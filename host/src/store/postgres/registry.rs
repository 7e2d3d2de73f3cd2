//! The fleet plugin registry on PostgreSQL. Deploys and rollbacks of any plugin are
//! serialized by a table lock (they are rare; reads are not blocked) and `NOTIFY` the
//! schema's plugin channel when they commit, so every host re-reads the active
//! deployments at once.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::store::registry::{
    Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, FORGET_HOSTS_AFTER, HANDLED_PER_MINUTE,
    HOST_PLUGIN_COLUMNS, HostPlugin, RATES_FRESH_FOR, Registry, Rollback, deployment, host_plugin,
    rollback_of, unchanged,
};
use crate::store::{Result, now_ms};

/// `plugin`'s standing deployments, newest first, at most `limit`.
async fn standing(
    tx: &mut Transaction<'_, Postgres>,
    plugin: &str,
    limit: i64,
) -> Result<Vec<Deployment>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments
         WHERE plugin = $1 AND rolled_back_at IS NULL ORDER BY id DESC LIMIT $2"
    )))
    .bind(plugin)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.iter().map(deployment).collect())
}

async fn begin_change(store: &PostgresStore) -> Result<Transaction<'static, Postgres>> {
    let mut tx = store.pool.begin().await?;
    sqlx::query("LOCK TABLE plugin_deployments IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[async_trait::async_trait]
impl Registry for PostgresStore {
    async fn deploy(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = begin_change(self).await?;
        if let Some(same) = unchanged(standing(&mut tx, &artifact.name, 1).await?.pop(), artifact) {
            return Ok(same);
        }
        sqlx::query(
            "INSERT INTO plugin_artifacts (sha256, name, version, wasm, created_at)
             VALUES ($1, $2, $3, $4, wharf_now_ms()) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&artifact.sha256)
        .bind(&artifact.name)
        .bind(&artifact.version)
        .bind(&artifact.wasm)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO plugin_deployments (plugin, version, sha256, deployed_at, deployed_by)
             VALUES ($1, $2, $3, wharf_now_ms(), $4) RETURNING {DEPLOYMENT_COLUMNS}"
        )))
        .bind(&artifact.name)
        .bind(&artifact.version)
        .bind(&artifact.sha256)
        .bind(by)
        .fetch_one(&mut *tx)
        .await?;
        super::notify(&mut tx, &self.plugins_channel).await?;
        tx.commit().await?;
        Ok(Deployed::New(deployment(&row)))
    }

    async fn rollback(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = begin_change(self).await?;
        let (from, to) = match rollback_of(standing(&mut tx, plugin, 2).await?) {
            Rollback::Done { from, to } => (from, to),
            nothing => return Ok(nothing),
        };
        let rolled_back_at: i64 = sqlx::query_scalar(
            "UPDATE plugin_deployments SET rolled_back_at = wharf_now_ms() WHERE id = $1
             RETURNING rolled_back_at",
        )
        .bind(from.id)
        .fetch_one(&mut *tx)
        .await?;
        super::notify(&mut tx, &self.plugins_channel).await?;
        tx.commit().await?;
        let from = Deployment {
            rolled_back_at: Some(rolled_back_at),
            ..from
        };
        Ok(Rollback::Done { from, to })
    }

    async fn history(&self, plugin: &str) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments WHERE plugin = $1
             ORDER BY id DESC"
        )))
        .bind(plugin)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deployment).collect())
    }

    async fn active_deployments(&self) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT ON (plugin) {DEPLOYMENT_COLUMNS} FROM plugin_deployments
             WHERE rolled_back_at IS NULL ORDER BY plugin, id DESC"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deployment).collect())
    }

    async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT wasm FROM plugin_artifacts WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn wait_for_deployments(&self, at_most: Duration) -> Result<()> {
        self.plugins_listener
            .wait(&self.pool, &self.plugins_channel, at_most)
            .await
    }

    async fn report_host(
        &self,
        host: &str,
        plugins: &[HostPlugin],
        handled: &[(String, u64)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["plugin_hosts", "host_queues"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE host = $1 OR reported_at < wharf_now_ms() - $2"
            )))
            .bind(host)
            .bind(FORGET_HOSTS_AFTER.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO host_queues (host, source, handled, reported_at)
             SELECT $1, s, n, wharf_now_ms() FROM UNNEST($2::text[], $3::bigint[]) AS t (s, n)",
        )
        .bind(host)
        .bind(handled.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>())
        .bind(handled.iter().map(|(_, n)| *n as i64).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        let column = |f: fn(&HostPlugin) -> &str| -> Vec<&str> { plugins.iter().map(f).collect() };
        sqlx::query(
            "INSERT INTO plugin_hosts (host, plugin, version, sha256, source, breaker, reported_at)
             SELECT $1, p, v, s, src, b, wharf_now_ms()
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  AS t (p, v, s, src, b)",
        )
        .bind(host)
        .bind(column(|p| &p.plugin))
        .bind(column(|p| &p.version))
        .bind(column(|p| &p.sha256))
        .bind(column(|p| &p.source))
        .bind(column(|p| &p.breaker))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_host(&self, host: &str) -> Result<()> {
        sqlx::query(
            "WITH queues AS (DELETE FROM host_queues WHERE host = $1)
             DELETE FROM plugin_hosts WHERE host = $1",
        )
        .bind(host)
        .execute(&self.pool)
        .await?;
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
