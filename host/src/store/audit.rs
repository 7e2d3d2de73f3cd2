//! The audit trail: one row per call that changed something through the HTTP API, who
//! made it (the token's name), what and on what, and how it ended.

use serde::Serialize;

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
