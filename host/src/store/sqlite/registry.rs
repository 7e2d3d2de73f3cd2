//! The plugin registry on SQLite, for a single host that deploys with `wharf plugins
//! deploy` rather than by copying files. Deploys and rollbacks take the write lock first
//! (`BEGIN IMMEDIATE`); hosts poll for changes.

use sqlx::{Sqlite, Transaction};

use super::SqliteStore;
use crate::store::Result;
use crate::store::registry::RegistrySql;
use crate::store::sql::SqlStore;

impl RegistrySql for SqliteStore {
    async fn begin_change(&self) -> Result<Transaction<'static, Sqlite>> {
        self.begin_write().await
    }
}
