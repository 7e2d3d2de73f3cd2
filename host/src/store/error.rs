//! What can go wrong in a store, and which failures are worth trying again.

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was migrated by a newer wharf.
    #[error(
        "the database schema is at migration {found}, newer than this wharf knows (up to {known}); upgrade wharf or point it at another database"
    )]
    SchemaTooNew {
        /// Newest migration applied to the database.
        found: i64,
        /// Newest migration this binary carries.
        known: i64,
    },
    /// A claim held in a transaction was lost with its connection (the database closed
    /// it, e.g. `idle_in_transaction_session_timeout` after a missed heartbeat): nothing
    /// of the batch was written and its messages are claimable again.
    #[error("the claim's transaction was lost, nothing was written: {0}")]
    ClaimLost(sqlx::Error),
    /// A settle found a ledger row of the batch written already: a message was handled
    /// before under the same id and then enqueued again without a dedup row (handled from
    /// an AMQP queue, say, before it reached the inbox). Nothing of the batch was written;
    /// its messages are marked seen, so their next claim looks up what already ran.
    #[error(
        "a message of the batch was handled before ({0}); nothing was written, and the batch is handled again once its ledger is looked up"
    )]
    HandledBefore(sqlx::Error),
    /// Another host has held the database's migration lock (MariaDB/MySQL) too long.
    #[error(
        "another host has been migrating the database for over {0:?}; wait for it, or look for a stuck session holding the lock wharf_migrate:<database>"
    )]
    MigrationLocked(std::time::Duration),
    /// `database.url` names no supported database.
    #[error(
        "unsupported database url {0:?}: use sqlite://PATH, postgres://USER@HOST/DB or mysql://USER:PASSWORD@HOST/DB"
    )]
    UnsupportedUrl(String),
}

impl StoreError {
    /// This error as [`StoreError::ClaimLost`] when `rolled_back` says the server ended
    /// the transaction a claim was held in (its connection gone, or rolled back).
    pub(crate) fn lost_claim_if(self, rolled_back: fn(&sqlx::Error) -> bool) -> Self {
        match self {
            Self::Database(e) if rolled_back(&e) => Self::ClaimLost(e),
            e => e,
        }
    }

    /// The error of a statement inserting ledger rows: [`StoreError::HandledBefore`]
    /// when it broke the ledger's key.
    pub(crate) fn of_ledger_insert(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::HandledBefore(e),
            _ => Self::Database(e),
        }
    }

    /// May the same call succeed if tried again later? True when the database went
    /// away or is restarting (connection errors, admin shutdown, pool timeout), was
    /// briefly out of resources, or rolled the transaction back to break a deadlock or a
    /// serialization conflict; false for what needs an operator (schema, corrupt rows,
    /// bad SQL, bad URL).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) | Self::ClaimLost(e) => transient(e),
            Self::HandledBefore(_) => true,
            Self::Migrate(_) | Self::Corrupt(_) | Self::SchemaTooNew { .. } => false,
            Self::UnsupportedUrl(_) => false,
            Self::MigrationLocked(_) => true,
        }
    }
}

fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // Connection exceptions, transaction rollbacks, insufficient resources,
                // operator intervention (shutdown, crash, cannot connect now).
                ["08", "40", "53", "57P"]
                    .iter()
                    .any(|c| code.starts_with(c))
            } else if let Some(e) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Deadlock, lock wait timeout, server shutting down or gone, too many
                // connections.
                code.starts_with("40")
                    || code.starts_with("08")
                    || matches!(e.number(), 1205 | 1213 | 1040 | 1053 | 2006 | 2013)
            } else {
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            }
        }),
        _ => false,
    }
}
