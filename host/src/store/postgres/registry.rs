//! The fleet plugin registry on PostgreSQL. Deploys and rollbacks of any plugin are
//! serialized by a table lock (they are rare; reads are not blocked) and `NOTIFY` the
//! schema's plugin channel when they commit, so every host re-reads the active
//! deployments at once.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::PostgresStore;
use crate::store::Result;
use crate::store::registry::RegistrySql;

impl RegistrySql for PostgresStore {
    async fn begin_change(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE plugin_deployments IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn commit_change(&self, mut tx: Transaction<'static, Postgres>) -> Result<()> {
        super::notify(&mut tx, &self.plugins_channel).await?;
        Ok(tx.commit().await?)
    }

    async fn wait_for_change(&self, at_most: Duration) -> Result<()> {
        self.plugins_listener
            .wait(&self.pool, &self.plugins_channel, at_most)
            .await
    }
}
