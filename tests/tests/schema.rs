//! Migrations on every store: a database migrated by a newer wharf is refused, naming
//! both migrations and what to do, rather than run against a schema this wharf does not
//! know; one it knows opens again without migrating anything. A migration added from
//! now on carries one number for one change in every store.

use std::collections::BTreeMap;
use std::path::Path;

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

/// The highest number the stores' migrations were numbered under each on its own (the
/// databases that applied them keep those numbers)...
const LAST_OWN_NUMBER: u32 = 10;

/// ...and how many each store has up to it: a new one goes above it.
const OWN_NUMBERED: [(&str, usize); 3] = [("sqlite", 9), ("postgres", 10), ("mysql", 3)];

#[test]
fn a_migration_after_the_stores_own_numbers_has_one_number_in_every_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut names: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for (store, own) in OWN_NUMBERED {
        let mut below = 0;
        for file in std::fs::read_dir(root.join(store)).unwrap() {
            let file = file.unwrap().file_name().into_string().unwrap();
            let (number, name) = file.split_once('_').expect("NNNN_name.sql");
            let number: u32 = number.parse().expect("a migration's number");
            if number > LAST_OWN_NUMBER {
                names
                    .entry(number)
                    .or_default()
                    .insert(store.to_owned(), name.to_owned());
            } else {
                below += 1;
            }
        }
        assert_eq!(
            below, own,
            "a {store} migration was added at or below {LAST_OWN_NUMBER:04}: number it above \
             every store's highest"
        );
    }
    for (number, by_store) in names {
        let mut distinct: Vec<&String> = by_store.values().collect();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            1,
            "migration {number:04} is a different change per store ({by_store:?}): give one \
             change one number in every store that has it, above every store's highest"
        );
    }
}
