//! The fleet plugin registry on PostgreSQL. Deploys and rollbacks of any plugin are
//! serialized by a table lock (they are rare; reads are not blocked) and `NOTIFY` the
//! schema's plugin channel when they commit, so every host re-reads the active
//! deployments at once.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::store::Result;
use crate::store::registry::{
    self, Artifact, DEPLOYMENT_COLUMNS, Deployed, Deployment, HostPlugin, Registry, Rollback,
    rollback_of, unchanged,
};

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

    async fn rollback(&self, plugin: &str) -> Result<Rollback> {
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

    async fn history(&self, plugin: &str) -> Result<Vec<Deployment>> {
        registry::history::<Postgres>(&mut *self.pool.acquire().await?, plugin).await
    }
    async fn active_deployments(&self) -> Result<Vec<Deployment>> {
        registry::active_deployments::<Postgres>(&mut *self.pool.acquire().await?).await
    }
    async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        registry::artifact::<Postgres>(&mut *self.pool.acquire().await?, sha256).await
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
        registry::report_host::<Postgres>(&mut tx, host, plugins, handled).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn forget_host(&self, host: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        registry::forget_host::<Postgres>(&mut tx, host).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn host_reports(&self) -> Result<Vec<HostPlugin>> {
        registry::host_reports::<Postgres>(&mut *self.pool.acquire().await?).await
    }
    async fn handled_per_minute(&self) -> Result<Vec<(String, u64)>> {
        registry::handled_per_minute::<Postgres>(&mut *self.pool.acquire().await?).await
    }
}
