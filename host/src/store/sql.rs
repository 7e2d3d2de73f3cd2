//! Statements written once for every SQL store. A statement is built with a
//! [`QueryBuilder`], which writes each database's placeholders (`$1` or `?`); [`Sql`] is
//! what generic code needs of a database to bind, run and read one, and [`Dialect`] the
//! few things the three write differently (the clock, what an update counts).
//!
//! Each capability is a trait with a blanket implementation whose bounds are sqlx's, so a
//! function over `DB: Sql` carries one bound instead of sqlx's list.

use std::future::Future;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, MySql, Pool, Postgres,
    QueryBuilder, Row, Sqlite, Transaction, Type,
};

use super::Result;

/// MariaDB/MySQL's clock in Unix milliseconds, as SQL.
pub(super) const MYSQL_NOW_MS: &str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";

/// What the SQL of the three stores differs in.
pub(super) trait Dialect: Database {
    /// Push the clock the store's timestamps come from, in Unix milliseconds.
    fn push_now(query: &mut QueryBuilder<Self>);

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The 64-bit integer type of a `CAST`.
    const BIGINT: &'static str = "BIGINT";

    /// The `key` column of plugin state, quoted where the word is reserved.
    const KEY: &'static str = "key";

    /// Push the end of an `INSERT INTO table ... VALUES ...` that, where a row with the
    /// same `key` is there, adds the new row's `sums` onto it and keeps the greater of its
    /// `maxes`.
    fn push_merge(
        query: &mut QueryBuilder<Self>,
        table: &str,
        key: &[&str],
        sums: &[&str],
        maxes: &[&str],
    ) {
        let greatest = Self::GREATEST;
        let updates: Vec<String> = (sums
            .iter()
            .map(|c| format!("{c} = {table}.{c} + excluded.{c}")))
        .chain(
            maxes
                .iter()
                .map(|c| format!("{c} = {greatest}({table}.{c}, excluded.{c})")),
        )
        .collect();
        query.push(format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            key.join(", "),
            updates.join(", ")
        ));
    }

    /// The function that returns the greater of two values.
    const GREATEST: &'static str = "GREATEST";

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

    /// Push a bound message id, as the store keeps ids.
    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid);
}

impl Dialect for Postgres {
    const NO_BYTES: &'static str = "NULL::bytea";

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

    /// Ids are `BINARY(16)`.
    fn uuid_text(column: &str) -> String {
        format!(
            "LOWER(INSERT(INSERT(INSERT(INSERT(HEX({column}), 9, 0, '-'), 14, 0, '-'), 19, 0, '-'), 24, 0, '-'))"
        )
    }

    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        query.push_bind(id);
    }

    fn push_merge(
        query: &mut QueryBuilder<Self>,
        _table: &str,
        _key: &[&str],
        sums: &[&str],
        maxes: &[&str],
    ) {
        let updates: Vec<String> = (sums.iter().map(|c| format!("{c} = {c} + VALUES({c})")))
            .chain(
                maxes
                    .iter()
                    .map(|c| format!("{c} = GREATEST({c}, VALUES({c}))")),
            )
            .collect();
        query.push(format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", ")));
    }

    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push(MYSQL_NOW_MS);
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for Sqlite {
    /// SQLite's `MAX` of two arguments is a scalar function.
    const GREATEST: &'static str = "MAX";

    /// A payload kept as text has its length in characters: counted as a blob.
    fn byte_length(column: &str) -> String {
        format!("LENGTH(CAST({column} AS BLOB))")
    }

    /// Ids are kept as text.
    fn push_uuid(query: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        query.push_bind(id.to_string());
    }

    /// One process writes an SQLite file: the host's clock is the store's.
    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push_bind(super::now_ms());
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Binds a `T` into a statement.
pub(super) trait Bind<T>: Database {
    fn bind(query: &mut QueryBuilder<Self>, value: T);
}

impl<DB: Database, T> Bind<T> for DB
where
    T: for<'t> Encode<'t, DB> + Type<DB>,
{
    fn bind(query: &mut QueryBuilder<Self>, value: T) {
        query.push_bind(value);
    }
}

/// Reads a column as a `T`.
pub(super) trait Column<T>: Database {
    fn column(row: &Self::Row, name: &str) -> T;
}

impl<DB: Database, T> Column<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    fn column(row: &Self::Row, name: &str) -> T {
        row.get(name)
    }
}

/// Runs a built statement on a connection (a pool's or a transaction's).
pub(super) trait Run: Dialect {
    /// Run `query`; how many rows it changed.
    fn execute<'e>(
        conn: &'e mut Self::Connection,
        query: &'e mut QueryBuilder<Self>,
    ) -> impl Future<Output = Result<u64>> + Send + 'e;

    /// Run `query`; the rows it returned.
    fn fetch_all<'e>(
        conn: &'e mut Self::Connection,
        query: &'e mut QueryBuilder<Self>,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send + 'e;
}

impl<DB: Dialect> Run for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    async fn execute<'e>(
        conn: &'e mut DB::Connection,
        query: &'e mut QueryBuilder<DB>,
    ) -> Result<u64> {
        let result = query.build().execute(conn).await?;
        Ok(DB::rows_affected(&result))
    }

    async fn fetch_all<'e>(
        conn: &'e mut DB::Connection,
        query: &'e mut QueryBuilder<DB>,
    ) -> Result<Vec<DB::Row>> {
        Ok(query.build().fetch_all(conn).await?)
    }
}

/// A database the stores' shared statements run on.
pub(super) trait Sql:
    Run
    + Bind<i64>
    + Bind<String>
    + for<'a> Bind<&'a str>
    + Column<i64>
    + Column<String>
    + Column<Option<i64>>
    + Column<Option<String>>
    + Column<Vec<u8>>
    + Column<Option<Vec<u8>>>
{
}

impl<DB> Sql for DB where
    DB: Run
        + Bind<i64>
        + Bind<String>
        + for<'a> Bind<&'a str>
        + Column<i64>
        + Column<String>
        + Column<Option<i64>>
        + Column<Option<String>>
        + Column<Vec<u8>>
        + Column<Option<Vec<u8>>>
{
}

/// Binding through [`Bind`] and the clock of [`Dialect`], for statements over any [`Sql`].
pub(super) trait Statement<DB: Database> {
    /// Push a bound `value`.
    fn value<T>(&mut self, value: T) -> &mut Self
    where
        DB: Bind<T>;

    /// Push the store's clock.
    fn now(&mut self) -> &mut Self
    where
        DB: Dialect;

    /// Push `VALUES (...), (...)`: one row per item, its values pushed by `row`.
    fn rows<I: IntoIterator>(&mut self, items: I, row: impl FnMut(&mut Self, I::Item))
    -> &mut Self;
}

impl<DB: Database> Statement<DB> for QueryBuilder<DB> {
    fn value<T>(&mut self, value: T) -> &mut Self
    where
        DB: Bind<T>,
    {
        DB::bind(self, value);
        self
    }

    fn now(&mut self) -> &mut Self
    where
        DB: Dialect,
    {
        DB::push_now(self);
        self
    }

    fn rows<I: IntoIterator>(
        &mut self,
        items: I,
        mut row: impl FnMut(&mut Self, I::Item),
    ) -> &mut Self {
        self.push("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            row(self, item);
            self.push(")");
        }
        self
    }
}

/// A store on an SQL database: what the role traits written once for every database
/// (`impl<S: SqlStore> ...`) need of it.
pub(super) trait SqlStore: Send + Sync {
    /// The database.
    type DB: Sql;

    /// Its connections.
    fn pool(&self) -> &Pool<Self::DB>;

    /// Begin a transaction that writes (SQLite takes the write lock at once, so two
    /// writers never deadlock upgrading their locks).
    fn begin_write(&self) -> impl Future<Output = Result<Transaction<'static, Self::DB>>> + Send;
}
