//! The registry's statements, the same on every SQL store: deployments, stored
//! components, deploys, rollbacks, host reports. Each store opens the transaction (and
//! takes its lock) for those that change something.

use sqlx::QueryBuilder;

use super::{Artifact, Deployment, FORGET_HOSTS_AFTER, HostPlugin, RATES_FRESH_FOR};
use crate::store::sql::{Sql, Statement, clock};
use crate::store::{Result, StoreError};

/// The columns [`Deployment::of`] reads.
const DEPLOYMENT_COLUMNS: &str =
    "id, plugin, version, sha256, deployed_at, deployed_by, rolled_back_at";

/// The columns [`HostPlugin::of`] reads.
const HOST_PLUGIN_COLUMNS: &str = "host, plugin, version, sha256, source, breaker, reported_at";

impl Deployment {
    /// A deployment from a row of [`DEPLOYMENT_COLUMNS`].
    pub(in crate::store) fn of<DB: Sql>(row: &DB::Row) -> Self {
        Self {
            id: DB::column(row, "id"),
            plugin: DB::column(row, "plugin"),
            version: DB::column(row, "version"),
            sha256: DB::column(row, "sha256"),
            deployed_at: DB::column(row, "deployed_at"),
            deployed_by: DB::column(row, "deployed_by"),
            rolled_back_at: DB::column(row, "rolled_back_at"),
        }
    }
}

impl HostPlugin {
    /// A host report from a row of [`HOST_PLUGIN_COLUMNS`].
    fn of<DB: Sql>(row: &DB::Row) -> Self {
        Self {
            host: DB::column(row, "host"),
            plugin: DB::column(row, "plugin"),
            version: DB::column(row, "version"),
            sha256: DB::column(row, "sha256"),
            source: DB::column(row, "source"),
            breaker: DB::column(row, "breaker"),
            reported_at: DB::column(row, "reported_at"),
        }
    }
}

/// `SELECT` the deployments' columns, for the caller to finish.
fn deployments<DB: Sql>() -> QueryBuilder<DB> {
    QueryBuilder::new(format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM plugin_deployments "
    ))
}

async fn fetch_deployments<DB: Sql>(
    conn: &mut DB::Connection,
    mut query: QueryBuilder<DB>,
) -> Result<Vec<Deployment>> {
    let rows = DB::fetch_all(conn, &mut query).await?;
    Ok(rows.iter().map(Deployment::of::<DB>).collect())
}

/// `plugin`'s standing deployments (not rolled back), newest first, at most `limit`.
pub(in crate::store) async fn standing<DB: Sql>(
    conn: &mut DB::Connection,
    plugin: &str,
    limit: i64,
) -> Result<Vec<Deployment>> {
    let mut query = deployments::<DB>();
    query.push("WHERE plugin = ").value(plugin);
    query
        .push(" AND rolled_back_at IS NULL ORDER BY id DESC LIMIT ")
        .value(limit);
    fetch_deployments(conn, query).await
}

/// Every deployment of `plugin`, newest first.
pub(in crate::store) async fn history<DB: Sql>(
    conn: &mut DB::Connection,
    plugin: &str,
) -> Result<Vec<Deployment>> {
    let mut query = deployments::<DB>();
    query
        .push("WHERE plugin = ")
        .value(plugin)
        .push(" ORDER BY id DESC");
    fetch_deployments(conn, query).await
}

/// Each plugin's active deployment (its newest not rolled back), by plugin name.
pub(in crate::store) async fn active_deployments<DB: Sql>(
    conn: &mut DB::Connection,
) -> Result<Vec<Deployment>> {
    let mut query = deployments::<DB>();
    query.push(
        "WHERE id IN (SELECT MAX(id) FROM plugin_deployments WHERE rolled_back_at IS NULL
                      GROUP BY plugin)
         ORDER BY plugin",
    );
    fetch_deployments(conn, query).await
}

/// The stored component with hash `sha256`.
pub(in crate::store) async fn artifact<DB: Sql>(
    conn: &mut DB::Connection,
    sha256: &str,
) -> Result<Option<Vec<u8>>> {
    let mut query = QueryBuilder::<DB>::new("SELECT wasm FROM plugin_artifacts WHERE sha256 = ");
    query.value(sha256);
    let rows = DB::fetch_all(conn, &mut query).await?;
    Ok(rows.first().map(|row| DB::column(row, "wasm")))
}

/// Store `artifact` (unless its hash is there) and deploy it, `by` someone; the new
/// deployment. Inside a transaction that holds the registry's lock, so the newest standing
/// deployment of the plugin is the one inserted.
pub(in crate::store) async fn deploy<DB: Sql>(
    conn: &mut DB::Connection,
    artifact: &Artifact,
    by: &str,
) -> Result<Deployment> {
    let mut store = QueryBuilder::<DB>::new(DB::INSERT_NEW);
    store.push(" plugin_artifacts (sha256, name, version, wasm, created_at) VALUES (");
    store.value(artifact.sha256.as_str()).push(", ");
    store.value(artifact.name.as_str()).push(", ");
    store.value(artifact.version.as_str()).push(", ");
    store.value(artifact.wasm.as_slice()).push(", ").now();
    store.push(")").push(DB::SKIP_EXISTING);
    DB::execute(conn, &mut store).await?;
    let mut deploy = QueryBuilder::<DB>::new(
        "INSERT INTO plugin_deployments (plugin, version, sha256, deployed_at, deployed_by) VALUES (",
    );
    deploy.value(artifact.name.as_str()).push(", ");
    deploy.value(artifact.version.as_str()).push(", ");
    deploy.value(artifact.sha256.as_str()).push(", ").now();
    deploy.push(", ").value(by).push(")");
    DB::execute(conn, &mut deploy).await?;
    standing::<DB>(conn, &artifact.name, 1)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt(format!("the deploy of {} is not there", artifact.name)))
}

/// Withdraw the deployment `id`; when (the store's Unix ms).
pub(in crate::store) async fn withdraw<DB: Sql>(conn: &mut DB::Connection, id: i64) -> Result<i64> {
    let now = clock::<DB>(conn).await?;
    let mut withdraw = QueryBuilder::<DB>::new("UPDATE plugin_deployments SET rolled_back_at = ");
    withdraw.value(now).push(" WHERE id = ").value(id);
    DB::execute(conn, &mut withdraw).await?;
    Ok(now)
}

/// Replace `host`'s report (and forget hosts silent for [`FORGET_HOSTS_AFTER`]), inside
/// the transaction `conn` is in.
pub(in crate::store) async fn report_host<DB: Sql>(
    conn: &mut DB::Connection,
    host: &str,
    plugins: &[HostPlugin],
    handled: &[(String, u64)],
) -> Result<()> {
    for table in ["plugin_hosts", "host_queues"] {
        let mut forget = QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE host = "));
        forget.value(host).push(" OR reported_at < ").now();
        forget
            .push(" - ")
            .value(FORGET_HOSTS_AFTER.as_millis() as i64);
        DB::execute(conn, &mut forget).await?;
    }
    if !handled.is_empty() {
        let mut rows = QueryBuilder::<DB>::new(
            "INSERT INTO host_queues (host, source, handled, reported_at) ",
        );
        rows.rows(handled, |row, (source, n)| {
            row.value(host).push(", ").value(source.as_str());
            row.push(", ").value(*n as i64).push(", ").now();
        });
        DB::execute(conn, &mut rows).await?;
    }
    if !plugins.is_empty() {
        let mut rows = QueryBuilder::<DB>::new(
            "INSERT INTO plugin_hosts (host, plugin, version, sha256, source, breaker, reported_at) ",
        );
        rows.rows(plugins, |row, p| {
            row.value(host).push(", ").value(p.plugin.as_str());
            row.push(", ")
                .value(p.version.as_str())
                .push(", ")
                .value(p.sha256.as_str());
            row.push(", ")
                .value(p.source.as_str())
                .push(", ")
                .value(p.breaker.as_str());
            row.push(", ").now();
        });
        DB::execute(conn, &mut rows).await?;
    }
    Ok(())
}

/// Forget `host`'s report, inside the transaction `conn` is in.
pub(in crate::store) async fn forget_host<DB: Sql>(
    conn: &mut DB::Connection,
    host: &str,
) -> Result<()> {
    for table in ["plugin_hosts", "host_queues"] {
        let mut forget = QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE host = "));
        forget.value(host);
        DB::execute(conn, &mut forget).await?;
    }
    Ok(())
}

/// What every host reported, by host and plugin.
pub(in crate::store) async fn host_reports<DB: Sql>(
    conn: &mut DB::Connection,
) -> Result<Vec<HostPlugin>> {
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {HOST_PLUGIN_COLUMNS} FROM plugin_hosts ORDER BY host, plugin"
    ));
    let rows = DB::fetch_all(conn, &mut query).await?;
    Ok(rows.iter().map(HostPlugin::of::<DB>).collect())
}

/// Messages handled per minute by source, from reports younger than [`RATES_FRESH_FOR`].
pub(in crate::store) async fn handled_per_minute<DB: Sql>(
    conn: &mut DB::Connection,
) -> Result<Vec<(String, u64)>> {
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT source, CAST(SUM(handled) AS {}) AS handled FROM host_queues WHERE reported_at >= ",
        DB::BIGINT
    ));
    query
        .now()
        .push(" - ")
        .value(RATES_FRESH_FOR.as_millis() as i64);
    query.push(" GROUP BY source ORDER BY source");
    let rows = DB::fetch_all(conn, &mut query).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let handled: i64 = DB::column(row, "handled");
            (DB::column(row, "source"), handled as u64)
        })
        .collect())
}
