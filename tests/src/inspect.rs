//! Looking into a test host's database: portable SQL on its inspection pool, and the
//! failed messages as the store lists them.

use sqlx::Row;
use wharf_host::store::{FailedFilter, FailedMessage, PageRequest};

use crate::Host;

impl Host {
    /// Every failed message, newest first (up to 1,000).
    pub async fn failed(&self) -> Vec<FailedMessage> {
        let page = PageRequest {
            before: None,
            limit: 1000,
        };
        let all = FailedFilter::default();
        self.store.failed_list(&all, page).await.unwrap().items
    }

    /// Run a scalar COUNT query.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query(sql).fetch_one(&self.db).await.unwrap().get(0)
    }

    /// What the plugins' state holds in all, (keys, bytes of keys and values), and what
    /// their `plugin_state_usage` rows say it holds: equal when the usage is exact.
    pub async fn state_usage(&self) -> ((i64, i64), (i64, i64)) {
        let int = if self.config.database.url.starts_with("mysql:") {
            "SIGNED"
        } else {
            "BIGINT"
        };
        let rows = self
            .query_rows(format!(
                r#"SELECT (SELECT COUNT(*) FROM plugin_state),
                        (SELECT CAST(COALESCE(SUM(LENGTH("key") + LENGTH(value)), 0) AS {int})
                         FROM plugin_state),
                        (SELECT CAST(COALESCE(SUM("keys"), 0) AS {int}) FROM plugin_state_usage),
                        (SELECT CAST(COALESCE(SUM(bytes), 0) AS {int}) FROM plugin_state_usage)"#
            ))
            .await;
        let get = |i| rows[0].get::<i64, _>(i);
        ((get(0), get(1)), (get(2), get(3)))
    }

    /// Run a query (portable SQL) and return its rows.
    pub async fn rows(&self, sql: &'static str) -> Vec<sqlx::any::AnyRow> {
        sqlx::query(sql).fetch_all(&self.db).await.unwrap()
    }

    /// [`Host::rows`] of a query built at run time (e.g. with [`Host::uuid_text`]).
    pub async fn query_rows(&self, sql: String) -> Vec<sqlx::any::AnyRow> {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    /// A UUID `column` as hyphenated text, in this host's database's SQL (MariaDB/MySQL
    /// keep ids as 16 bytes).
    pub fn uuid_text(&self, column: &str) -> String {
        if self.config.database.url.starts_with("mysql:") {
            format!(
                "LOWER(INSERT(INSERT(INSERT(INSERT(HEX({column}), 9, 0, '-'), 14, 0, '-'), 19, 0, '-'), 24, 0, '-'))"
            )
        } else {
            format!("CAST({column} AS TEXT)")
        }
    }

    /// A JSON `column` (`jsonb` on PostgreSQL) as text, in this host's database's SQL.
    pub fn json_text(&self, column: &str) -> String {
        if self.config.database.url.starts_with("mysql:") {
            column.to_owned()
        } else {
            format!("CAST({column} AS TEXT)")
        }
    }
}
