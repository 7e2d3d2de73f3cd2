//! `[database]`: which store a host opens.

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// Default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://wharf.db";

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing), `postgres://user@host/db` (the schema is
    /// the connection's `search_path`, e.g. `?options=-csearch_path%3Dwharf`) or
    /// `mysql://user:password@host/db` (MariaDB >= 10.6, MySQL >= 8.0.1).
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.to_owned(),
        }
    }
}

impl DatabaseConfig {
    /// The URL names a store wharf has.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if [
            "sqlite:",
            "postgres://",
            "postgresql://",
            "mysql://",
            "mariadb://",
        ]
        .iter()
        .any(|scheme| self.url.starts_with(scheme))
        {
            Ok(())
        } else {
            Err(InvalidSetting::new(
                "database.url",
                "must start with sqlite: (embedded), postgres:// or mysql:// (MariaDB/MySQL) (fleet)",
            ))
        }
    }
}
