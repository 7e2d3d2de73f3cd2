//! The fleet plugin registry on MariaDB/MySQL. Deploys and rollbacks of any plugin lock
//! the one row of `registry_lock` first, so they are serialized; hosts poll for changes
//! (there is no `NOTIFY`).

use sqlx::{MySql, Transaction};

use super::MySqlStore;
use crate::store::Result;
use crate::store::registry::RegistrySql;

impl RegistrySql for MySqlStore {
    async fn begin_change(&self) -> Result<Transaction<'static, MySql>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT id FROM registry_lock WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}
