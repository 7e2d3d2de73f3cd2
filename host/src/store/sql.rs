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

/// The most values one statement binds: SQLite's limit (MariaDB's is 65,535).
const MAX_BINDS: usize = 32_766;

/// `rows` in runs that each fit one multi-row statement binding `columns` values a row.
pub(super) fn per_statement<T>(rows: &[T], columns: usize) -> std::slice::Chunks<'_, T> {
    rows.chunks((MAX_BINDS / columns).max(1))
}

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
        let greatest = Self::GREATEST;
        let updates: Vec<String> = columns
            .iter()
            .map(|&(c, change)| {
                let new = Self::new_value(c);
                match change {
                    Change::Take => format!("{c} = {new}"),
                    Change::Add => format!("{c} = {table}.{c} + {new}"),
                    Change::Greatest => format!("{c} = {greatest}({table}.{c}, {new})"),
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
    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push_bind(super::now_ms());
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// How an upsert changes a column of the row that was there: see [`Dialect::push_upsert`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
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

/// A database the stores' shared statements run on: one of the three.
pub(super) trait Sql:
    Run
    + Bind<i64>
    + Bind<String>
    + for<'a> Bind<&'a str>
    + for<'a> Bind<&'a [u8]>
    + Bind<Option<i64>>
    + Bind<Option<String>>
    + Column<i64>
    + Column<String>
    + Column<Option<i64>>
    + Column<Option<String>>
    + Column<Vec<u8>>
    + Column<Option<Vec<u8>>>
{
}

impl Sql for Postgres {}
impl Sql for MySql {}
impl Sql for Sqlite {}

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

    /// Push a bound message id.
    fn id(&mut self, id: uuid::Uuid) -> &mut Self
    where
        DB: Dialect;

    /// Push a bound JSON document, given as text.
    fn json(&mut self, text: String) -> &mut Self
    where
        DB: Dialect + Bind<String>;

    /// Push `items` as bound values separated by commas (an `IN` list's inside).
    fn list<T>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self
    where
        DB: Bind<T>;

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

    fn id(&mut self, id: uuid::Uuid) -> &mut Self
    where
        DB: Dialect,
    {
        DB::push_uuid(self, id);
        self
    }

    fn json(&mut self, text: String) -> &mut Self
    where
        DB: Dialect + Bind<String>,
    {
        DB::bind(self, text);
        self.push(DB::JSON)
    }

    fn list<T>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self
    where
        DB: Bind<T>,
    {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            DB::bind(self, item);
        }
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

/// The store's clock, read on `conn`.
pub(super) async fn clock<DB: Sql>(conn: &mut DB::Connection) -> Result<i64> {
    let mut now = QueryBuilder::<DB>::new("SELECT ");
    now.now().push(" AS now");
    let rows = DB::fetch_all(conn, &mut now).await?;
    Ok(DB::column(&rows[0], "now"))
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
