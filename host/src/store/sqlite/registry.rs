//! The plugin registry on SQLite, for a single host that deploys with `wharf plugins
//! deploy` rather than by copying files. Deploys and rollbacks take the write lock first
//! (`BEGIN IMMEDIATE`); hosts poll for changes.

use std::time::Duration;

use super::SqliteStore;
use crate::store::registry::{
    self, Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, RegistrySql, Rollback, rollback_of,
    unchanged,
};
use crate::store::{Result, now_ms};

/// How often a host polls for deploys.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[async_trait::async_trait]
impl RegistrySql for SqliteStore {
    async fn deploy_artifact(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
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

    async fn roll_back(&self, plugin: &str) -> Result<Rollback> {
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

    async fn wait_for_change(&self, at_most: Duration) -> Result<()> {
        tokio::time::sleep(at_most.min(POLL_EVERY)).await;
        Ok(())
    }
}
