//! The audit trail: one row per call that changed something through the HTTP API, who
//! made it (the token's name), what and on what, and how it ended.

use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Row, Type};

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

/// An entry from a row of `id, at, who, action, target, result`, on either database.
pub(super) fn audit_entry<R: Row>(row: &R) -> AuditEntry
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    AuditEntry {
        id: row.get("id"),
        at: row.get("at"),
        who: row.get("who"),
        action: row.get("action"),
        target: row.get("target"),
        result: row.get("result"),
    }
}
