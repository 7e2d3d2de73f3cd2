//! Migrations on every store: a database migrated by a newer wharf is refused, naming
//! both migrations and what to do, rather than run against a schema this wharf does not
//! know; one it knows opens again without migrating anything.

use wharf_host::store::{self, StoreError};
use wharf_tests::{Backend, Host, conformance};

conformance!(a_database_migrated_by_a_newer_wharf_is_refused);

async fn a_database_migrated_by_a_newer_wharf_is_refused(backend: Backend) {
    let host = Host::start(backend, &[]).await;
    let url = host.config.database.url.clone();
    let known: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&host.db)
        .await
        .unwrap();
    store::open(&url)
        .await
        .expect("a schema it knows opens again");
    let checksum = match backend {
        Backend::Postgres | Backend::PostgresLeased => "decode('00', 'hex')",
        Backend::Sqlite | Backend::MySql | Backend::MySqlLeased => "X'00'",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from a newer wharf', TRUE, {checksum}, 0)"
    )))
    .execute(&host.db)
    .await
    .unwrap();
    match store::open(&url).await {
        Err(e @ StoreError::SchemaTooNew { found: 9999, .. }) => {
            let said = e.to_string();
            assert!(said.contains(&format!("up to {known}")), "{said}");
            assert!(said.contains("upgrade wharf"), "{said}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a schema from a newer wharf was opened"),
    }
}
