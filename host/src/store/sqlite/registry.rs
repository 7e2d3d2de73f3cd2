//! The plugin registry on SQLite, for a single host that deploys with `wharf plugins
//! deploy` rather than by copying files. Deploys and rollbacks take the write lock first
//! (`BEGIN IMMEDIATE`); hosts poll for changes.

use std::time::Duration;

use super::SqliteStore;
use crate::store::registry::{
    self, Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, HostPlugin, Registry, Rollback,
    rollback_of, unchanged,
};
use crate::store::{Result, now_ms};

/// How often a host polls for deploys.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[async_trait::async_trait]
impl Registry for SqliteStore {
    async fn deploy(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(same) = unchanged(
            registry::standing::<sqlx::Sqlite>(&mut tx, &artifact.name, 1)
                .await?
                .pop(),
            artifact,
        ) {
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
        Ok(Deployed::New(Deployment::of::<sqlx::Sqlite>(&row)))
    }

    async fn rollback(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (from, to) =
            match rollback_of(registry::standing::<sqlx::Sqlite>(&mut tx, plugin, 2).await?) {
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
        registry::history::<sqlx::Sqlite>(&mut *self.pool.acquire().await?, plugin).await
    }
    async fn active_deployments(&self) -> Result<Vec<Deployment>> {
        registry::active_deployments::<sqlx::Sqlite>(&mut *self.pool.acquire().await?).await
    }
    async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        registry::artifact::<sqlx::Sqlite>(&mut *self.pool.acquire().await?, sha256).await
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        registry::report_host::<sqlx::Sqlite>(&mut tx, host, plugins, handled).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn forget_host(&self, host: &str) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        registry::forget_host::<sqlx::Sqlite>(&mut tx, host).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn host_reports(&self) -> Result<Vec<HostPlugin>> {
        registry::host_reports::<sqlx::Sqlite>(&mut *self.pool.acquire().await?).await
    }
    async fn handled_per_minute(&self) -> Result<Vec<(String, u64)>> {
        registry::handled_per_minute::<sqlx::Sqlite>(&mut *self.pool.acquire().await?).await
    }
}
