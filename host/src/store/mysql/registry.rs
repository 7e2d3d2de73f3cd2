//! The fleet plugin registry on MariaDB/MySQL. Deploys and rollbacks of any plugin lock
//! the one row of `registry_lock` first, so they are serialized; hosts poll for changes
//! (there is no `NOTIFY`).

use std::time::Duration;

use sqlx::{MySql, MySqlConnection};

use super::{MySqlStore, now};
use crate::store::Result;
use crate::store::registry::{
    self, Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, RegistrySql, Rollback, rollback_of,
    unchanged,
};

/// How often a host polls for deploys.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Serialize registry changes: lock the registry's row until the transaction ends.
async fn lock_registry(conn: &mut MySqlConnection) -> Result<()> {
    sqlx::query("SELECT id FROM registry_lock WHERE id = 1 FOR UPDATE")
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl RegistrySql for MySqlStore {
    async fn deploy_artifact(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = self.pool.begin().await?;
        lock_registry(&mut tx).await?;
        if let Some(same) = unchanged(
            registry::standing::<MySql>(&mut tx, &artifact.name, 1)
                .await?
                .pop(),
            artifact,
        ) {
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
        Ok(Deployed::New(Deployment::of::<MySql>(&row)))
    }

    async fn roll_back(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = self.pool.begin().await?;
        lock_registry(&mut tx).await?;
        let (from, to) = match rollback_of(registry::standing::<MySql>(&mut tx, plugin, 2).await?) {
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

    async fn wait_for_change(&self, at_most: Duration) -> Result<()> {
        tokio::time::sleep(at_most.min(POLL_EVERY)).await;
        Ok(())
    }
}
