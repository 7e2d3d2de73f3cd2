//! Statements written once for every SQL store. A statement is built with a
//! [`QueryBuilder`], which writes each database's placeholders (`$1` or `?`); [`Sql`] is
//! what generic code needs of a database to bind, run and read one, and [`Dialect`]
//! (`dialect.rs`) the few things the three write differently.
//!
//! Each capability is a trait with a blanket implementation whose bounds are sqlx's, so a
//! function over `DB: Sql` carries one bound instead of sqlx's list.

use std::future::Future;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, MySql, Pool, Postgres,
    QueryBuilder, Row, Sqlite, Transaction, Type,
};

use super::Result;

mod dialect;
mod keys;

pub(super) use dialect::{Change, Dialect, MYSQL_NOW_MS};
pub(super) use keys::turns;

/// The most values one statement binds: SQLite's limit (MariaDB's is 65,535).
const MAX_BINDS: usize = 32_766;

/// `rows` in runs that each fit one multi-row statement binding `columns` values a row.
pub(super) fn per_statement<T>(rows: &[T], columns: usize) -> std::slice::Chunks<'_, T> {
    rows.chunks((MAX_BINDS / columns).max(1))
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

/// The store's clock, read on `conn` (SQLite's is the host's: no statement).
pub(super) async fn clock<DB: Sql>(conn: &mut DB::Connection) -> Result<i64> {
    if let Some(now) = DB::host_clock() {
        return Ok(now);
    }
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
