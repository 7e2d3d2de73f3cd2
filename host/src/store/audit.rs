//! The audit trail: one row per call that changed something through the HTTP API, who
//! made it (the token's name), what and on what, and how it ended.

use serde::Serialize;
use sqlx::QueryBuilder;

use super::Result;
use super::sql::{Sql, SqlStore, Statement};

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Row id (0 for one not yet written).
    pub id: i64,
    /// When (Unix ms; set by the store).
    pub at: i64,
    /// The token's name.
    pub who: String,
    /// What, e.g. `retry`, `delete`.
    pub action: String,
    /// On what, e.g. `failed message 42`.
    pub target: String,
    /// How it ended: `ok: ...`, or the error.
    pub result: String,
}

impl AuditEntry {
    fn of<DB: Sql>(row: &DB::Row) -> Self {
        Self {
            id: DB::column(row, "id"),
            at: DB::column(row, "at"),
            who: DB::column(row, "who"),
            action: DB::column(row, "action"),
            target: DB::column(row, "target"),
            result: DB::column(row, "result"),
        }
    }
}

/// The audit trail's part of a [`super::Store`].
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Record a call that changed something (its `id` and `at` are set by the store).
    async fn audit(&self, entry: &AuditEntry) -> Result<()>;

    /// The newest `limit` entries, newest first.
    async fn audit_list(&self, limit: u32) -> Result<Vec<AuditEntry>>;
}

#[async_trait::async_trait]
impl<S: SqlStore> AuditLog for S {
    async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        add::<S::DB>(&mut *self.pool().acquire().await?, entry).await
    }

    async fn audit_list(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        list::<S::DB>(&mut *self.pool().acquire().await?, limit).await
    }
}

/// Write `entry`, at the store's clock.
async fn add<DB: Sql>(conn: &mut DB::Connection, entry: &AuditEntry) -> Result<()> {
    let mut insert =
        QueryBuilder::<DB>::new("INSERT INTO audit (at, who, action, target, result) VALUES (");
    insert
        .now()
        .push(", ")
        .value(entry.who.as_str())
        .push(", ")
        .value(entry.action.as_str());
    insert
        .push(", ")
        .value(entry.target.as_str())
        .push(", ")
        .value(entry.result.as_str())
        .push(")");
    DB::execute(conn, &mut insert).await?;
    Ok(())
}

/// The newest `limit` entries, newest first.
async fn list<DB: Sql>(conn: &mut DB::Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut select = QueryBuilder::<DB>::new(
        "SELECT id, at, who, action, target, result FROM audit ORDER BY id DESC LIMIT ",
    );
    select.value(i64::from(limit));
    let rows = DB::fetch_all(conn, &mut select).await?;
    Ok(rows.iter().map(AuditEntry::of::<DB>).collect())
}
