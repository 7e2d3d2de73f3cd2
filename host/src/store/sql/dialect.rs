//! What the SQL of the three stores differs in ([`Dialect`]): the clock, casts, quoting,
//! upserts, locking reads.

use sqlx::{Database, MySql, Postgres, QueryBuilder, Sqlite};

/// MariaDB/MySQL's clock in Unix milliseconds, as SQL.
pub(in crate::store) const MYSQL_NOW_MS: &str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";

/// What the SQL of the three stores differs in.
pub(in crate::store) trait Dialect: Database {
    /// Push the clock the store's timestamps come from, in Unix milliseconds.
    fn push_now(query: &mut QueryBuilder<Self>);

    /// The clock, where the store's is the host's (one process writes the database).
    fn host_clock() -> Option<i64> {
        None
    }

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The 64-bit integer type of a `CAST`.
    const BIGINT: &'static str = "BIGINT";

    /// The `key` column of plugin state, quoted where the word is reserved.
    const KEY: &'static str = "key";

    /// The `keys` column of plugin state usage, quoted where the word is reserved.
    const KEYS: &'static str = "keys";

    /// Push the end of an `INSERT INTO table ... VALUES ...` that, where a row with the
    /// same `key` is there already, changes each of its `columns` as said.
    fn push_upsert(
        query: &mut QueryBuilder<Self>,
        table: &str,
        key: &[&str],
        columns: &[(&str, Change)],
    ) {
        let updates: Vec<String> = columns
            .iter()
            .map(|&(c, change)| {
                let new = Self::new_value(c);
                match change {
                    Change::Take => format!("{c} = {new}"),
                    Change::Add => format!("{c} = {table}.{c} + {new}"),
                    Change::Greatest => format!("{c} = {}({table}.{c}, {new})", Self::GREATEST),
                    Change::Least => format!("{c} = {}({table}.{c}, {new})", Self::LEAST),
                    Change::Clear => format!("{c} = NULL"),
                }
            })
            .collect();
        query.push(Self::on_conflict(key)).push(updates.join(", "));
    }

    /// What begins the update of a row whose `key` is there already.
    fn on_conflict(key: &[&str]) -> String {
        format!(" ON CONFLICT ({}) DO UPDATE SET ", key.join(", "))
    }

    /// The value the insert brought for `column`, in that update.
    fn new_value(column: &str) -> String {
        format!("excluded.{column}")
    }

    /// The function that returns the greater of two values.
    const GREATEST: &'static str = "GREATEST";

    /// The function that returns the lesser of two values.
    const LEAST: &'static str = "LEAST";

    /// What ends a `SELECT` whose rows stay locked until the transaction ends (nothing
    /// where a writing transaction locks the whole database).
    const LOCK_ROWS: &'static str = " FOR UPDATE";

    /// The columns of an outbox row that say it was sent (or is being sent): cleared to
    /// send it again.
    const OUTBOX_SENT: &'static [&'static str] = &["sent_at"];

    /// `column` (a message id) as its hyphenated lowercase text.
    fn uuid_text(column: &str) -> String {
        column.to_owned()
    }

    /// `column` (a JSON document) as text.
    fn json_text(column: &str) -> String {
        column.to_owned()
    }

    /// How many bytes `column` (a blob) holds, as a 64-bit integer.
    fn byte_length(column: &str) -> String {
        format!("CAST(LENGTH({column}) AS {})", Self::BIGINT)
    }

    /// A blob that is not there, typed as one.
    const NO_BYTES: &'static str = "NULL";

    /// How a statement that skips rows whose key is there already begins...
    const INSERT_NEW: &'static str = "INSERT INTO";

    /// ... and how it ends.
    const SKIP_EXISTING: &'static str = " ON CONFLICT DO NOTHING";

    /// What follows a bound JSON document (text) to make it the column's type.
    const JSON: &'static str = "";

    /// Push a bound message id, as the store keeps ids.
    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid);
}

impl Dialect for Postgres {
    const NO_BYTES: &'static str = "NULL::bytea";
    const JSON: &'static str = "::jsonb";

    fn uuid_text(column: &str) -> String {
        format!("{column}::text")
    }

    fn json_text(column: &str) -> String {
        format!("{column}::text")
    }

    fn byte_length(column: &str) -> String {
        format!("octet_length({column})::bigint")
    }

    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        query.push_bind(id);
    }

    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push("wharf_now_ms()");
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for MySql {
    const BIGINT: &'static str = "SIGNED";
    const KEY: &'static str = "`key`";
    const KEYS: &'static str = "`keys`";
    const INSERT_NEW: &'static str = "INSERT IGNORE INTO";
    const OUTBOX_SENT: &'static [&'static str] = &["sent_at", "locked_until"];
    const SKIP_EXISTING: &'static str = "";

    /// Ids are `BINARY(16)`.
    fn uuid_text(column: &str) -> String {
        format!(
            "LOWER(INSERT(INSERT(INSERT(INSERT(HEX({column}), 9, 0, '-'), 14, 0, '-'), 19, 0, '-'), 24, 0, '-'))"
        )
    }

    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        query.push_bind(id);
    }

    fn on_conflict(_key: &[&str]) -> String {
        " ON DUPLICATE KEY UPDATE ".to_owned()
    }

    fn new_value(column: &str) -> String {
        format!("VALUES({column})")
    }

    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push(MYSQL_NOW_MS);
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for Sqlite {
    /// SQLite's `MAX` and `MIN` of two arguments are scalar functions.
    const GREATEST: &'static str = "MAX";
    const LEAST: &'static str = "MIN";
    /// A writing transaction (`BEGIN IMMEDIATE`) holds the database's write lock.
    const LOCK_ROWS: &'static str = "";

    /// A payload kept as text has its length in characters: counted as a blob.
    fn byte_length(column: &str) -> String {
        format!("LENGTH(CAST({column} AS BLOB))")
    }

    /// Ids are kept as text.
    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        query.push_bind(id.to_string());
    }

    /// One process writes an SQLite file: the host's clock is the store's.
    fn host_clock() -> Option<i64> {
        Some(crate::store::now_ms())
    }

    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push_bind(crate::store::now_ms());
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// How an upsert changes a column of the row that was there: see [`Dialect::push_upsert`].
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Change {
    /// It takes the new row's value.
    Take,
    /// It adds the new row's value.
    Add,
    /// It keeps the greater of the two.
    Greatest,
    /// It keeps the lesser of the two.
    Least,
    /// It becomes `NULL`.
    Clear,
}
