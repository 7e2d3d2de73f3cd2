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

impl Host {
    /// What the inbox holds, key by key, and the keys' rows (turns, holds): printed when a
    /// test times out waiting for its messages, to tell a stalled key from a slow one.
    pub async fn inbox_report(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let key = match self.config.database.url.starts_with("mysql:") {
            true => "`key`",
            false => "\"key\"",
        };
        let rows = self
            .query_rows(format!(
                "SELECT {id}, queue, COALESCE(ordering_key, ''), COALESCE(seq, -1),
                        CASE WHEN parked THEN 1 ELSE 0 END, COALESCE(holds, '-'), attempts,
                        available_at - {now}, COALESCE(locked_until - {now}, 0)
                 FROM inbox ORDER BY queue, ordering_key, seq LIMIT 200",
                id = self.uuid_text("id"),
            ))
            .await;
        let mut report = format!("inbox ({} rows shown):\n", rows.len());
        for r in &rows {
            report += &format!(
                "  {} {} key={} seq={} parked={} holds={} attempts={} due_in={}ms lease_left={}ms\n",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<String, _>(2),
                r.get::<i64, _>(3),
                r.get::<i32, _>(4),
                r.get::<String, _>(5),
                r.get::<i32, _>(6),
                r.get::<i64, _>(7),
                r.get::<i64, _>(8),
            );
        }
        let keys = self
            .query_rows(format!(
                "SELECT queue, {key}, last_seq, turn FROM ordering_keys ORDER BY queue, {key}"
            ))
            .await;
        report += "ordering_keys:\n";
        for r in &keys {
            report += &format!(
                "  {} key={} last_seq={} turn={}\n",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
                r.get::<i64, _>(3),
            );
        }
        let held = self
            .query_rows(format!(
                "SELECT queue, {key}, plugin, seq FROM held_keys ORDER BY queue, {key}"
            ))
            .await;
        report += "held_keys:\n";
        for r in &held {
            report += &format!(
                "  {} key={} plugin={} seq={}\n",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<String, _>(2),
                r.get::<i64, _>(3),
            );
        }
        report
    }
}
