//! The fleet plugin registry on PostgreSQL. Deploys and rollbacks of any plugin are
//! serialized by a table lock (they are rare; reads are not blocked) and `NOTIFY` the
//! schema's plugin channel when they commit, so every host re-reads the active
//! deployments at once.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::store::Result;
use crate::store::registry::{
    self, Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, RegistrySql, Rollback, rollback_of,
    unchanged,
};

async fn begin_change(store: &PostgresStore) -> Result<Transaction<'static, Postgres>> {
    let mut tx = store.pool.begin().await?;
    sqlx::query("LOCK TABLE plugin_deployments IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[async_trait::async_trait]
impl RegistrySql for PostgresStore {
    async fn deploy_artifact(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = begin_change(self).await?;
        if let Some(same) = unchanged(
            registry::standing::<Postgres>(&mut tx, &artifact.name, 1)
                .await?
                .pop(),
            artifact,
        ) {
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
        Ok(Deployed::New(Deployment::of::<Postgres>(&row)))
    }

    async fn roll_back(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = begin_change(self).await?;
        let (from, to) =
            match rollback_of(registry::standing::<Postgres>(&mut tx, plugin, 2).await?) {
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

    async fn wait_for_change(&self, at_most: Duration) -> Result<()> {
        self.plugins_listener
            .wait(&self.pool, &self.plugins_channel, at_most)
            .await
    }
}
