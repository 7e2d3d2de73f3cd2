//! The fleet plugin registry's records: components stored by content hash, each plugin's
//! deployments (the newest one not rolled back is active), and what each running host
//! reports it serves. Written once over every SQL store; a store writes the lock that
//! serializes deploys and rollbacks, and how hosts hear of them (`RegistrySql`).

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use sqlx::Transaction;

use super::Result;
use super::sql::SqlStore;

mod statements;

use statements::standing;

/// A validated component to store.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Hex sha256 of `wasm`: its identity.
    pub sha256: String,
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// The component's bytes.
    pub wasm: Vec<u8>,
}

/// One deploy of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    /// Grows with every deploy.
    pub id: i64,
    /// Manifest name.
    pub plugin: String,
    /// Manifest version.
    pub version: String,
    /// Which component.
    pub sha256: String,
    /// When (Unix ms).
    pub deployed_at: i64,
    /// Who: `user@machine` of the `wharf plugins deploy` that made it.
    pub deployed_by: String,
    /// When a rollback withdrew it (Unix ms); `None` while it stands.
    pub rolled_back_at: Option<i64>,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// A new deployment, now active.
    New(Deployment),
    /// This component is already the plugin's active deployment; nothing changed.
    AlreadyActive(Deployment),
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// `from` was withdrawn; `to` is active again.
    Done {
        /// The deployment rolled back.
        from: Deployment,
        /// The deployment active now.
        to: Deployment,
    },
    /// The plugin has no standing deployment.
    NotDeployed,
    /// Only `active` stands: there is nothing earlier to return to.
    NothingEarlier {
        /// The only standing deployment.
        active: Deployment,
    },
}

/// One plugin a running host serves, as the host reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPlugin {
    /// `machine/pid` of the host.
    pub host: String,
    /// Manifest name.
    pub plugin: String,
    /// Manifest version.
    pub version: String,
    /// Hash of the component it runs.
    pub sha256: String,
    /// `directory` or `registry`.
    pub source: String,
    /// Circuit breaker: `closed`, `open` or `half-open`.
    pub breaker: String,
    /// When the host last reported (Unix ms).
    pub reported_at: i64,
}

/// Reports of hosts silent for this long are deleted by the next report of any host.
pub const FORGET_HOSTS_AFTER: Duration = Duration::from_secs(600);

/// The registry part of a [`super::Store`].
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// Store `artifact` (once per hash) and make it `artifact.name`'s active deployment,
    /// waking the hosts that watch the registry.
    async fn deploy(&self, artifact: &Artifact, by: &str) -> Result<Deployed>;

    /// Withdraw `plugin`'s active deployment: the one before it is active again.
    async fn rollback(&self, plugin: &str) -> Result<Rollback>;

    /// Every deployment of `plugin`, newest first.
    async fn history(&self, plugin: &str) -> Result<Vec<Deployment>>;

    /// The active deployment of every plugin, by name.
    async fn active_deployments(&self) -> Result<Vec<Deployment>>;

    /// The bytes of the component with hash `sha256`.
    async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>>;

    /// Wait until a deploy or rollback may have happened, or `at_most`. PostgreSQL hosts
    /// are woken by `NOTIFY`; SQLite returns after a short poll interval.
    async fn wait_for_deployments(&self, at_most: Duration) -> Result<()>;

    /// Replace what `host` reported: the plugins it serves and the messages it handled
    /// per queue (source) in the last minute.
    async fn report_host(
        &self,
        host: &str,
        plugins: &[HostPlugin],
        handled: &[(String, u64)],
    ) -> Result<()>;

    /// Delete `host`'s reports (it is stopping).
    async fn forget_host(&self, host: &str) -> Result<()>;

    /// Every host's latest report, by host and plugin.
    async fn host_reports(&self) -> Result<Vec<HostPlugin>>;

    /// Messages the fleet handled per queue (source) in the last minute: the sum of the
    /// reports younger than [`RATES_FRESH_FOR`].
    async fn handled_per_minute(&self) -> Result<Vec<(String, u64)>>;
}

/// How often a host polls for deploys where the database does not tell it.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What each store writes of [`Registry`] in its own SQL: the lock that serializes
/// deploys and rollbacks, and how hosts hear of one.
pub(super) trait RegistrySql: SqlStore {
    /// Begin a deploy or rollback: a transaction no other one runs beside.
    fn begin_change(&self) -> impl Future<Output = Result<Transaction<'static, Self::DB>>> + Send;

    /// Commit a deploy or rollback (where the database can, telling the hosts).
    fn commit_change(
        &self,
        tx: Transaction<'static, Self::DB>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move { Ok(tx.commit().await?) }
    }

    /// [`Registry::wait_for_deployments`]; polls by default.
    fn wait_for_change(&self, at_most: Duration) -> impl Future<Output = Result<()>> + Send {
        async move {
            tokio::time::sleep(at_most.min(POLL_EVERY)).await;
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl<S: RegistrySql> Registry for S {
    async fn deploy(&self, artifact: &Artifact, by: &str) -> Result<Deployed> {
        let mut tx = self.begin_change().await?;
        let active = standing::<S::DB>(&mut tx, &artifact.name, 1).await?.pop();
        if let Some(same) = unchanged(active, artifact) {
            return Ok(same);
        }
        let deployed = statements::deploy::<S::DB>(&mut tx, artifact, by).await?;
        self.commit_change(tx).await?;
        Ok(Deployed::New(deployed))
    }

    async fn rollback(&self, plugin: &str) -> Result<Rollback> {
        let mut tx = self.begin_change().await?;
        let (from, to) = match rollback_of(standing::<S::DB>(&mut tx, plugin, 2).await?) {
            Rollback::Done { from, to } => (from, to),
            nothing => return Ok(nothing),
        };
        let rolled_back_at = Some(statements::withdraw::<S::DB>(&mut tx, from.id).await?);
        self.commit_change(tx).await?;
        let from = Deployment {
            rolled_back_at,
            ..from
        };
        Ok(Rollback::Done { from, to })
    }

    async fn history(&self, plugin: &str) -> Result<Vec<Deployment>> {
        statements::history::<S::DB>(&mut *self.pool().acquire().await?, plugin).await
    }

    async fn active_deployments(&self) -> Result<Vec<Deployment>> {
        statements::active_deployments::<S::DB>(&mut *self.pool().acquire().await?).await
    }

    async fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        statements::artifact::<S::DB>(&mut *self.pool().acquire().await?, sha256).await
    }

    async fn wait_for_deployments(&self, at_most: Duration) -> Result<()> {
        self.wait_for_change(at_most).await
    }

    async fn report_host(
        &self,
        host: &str,
        plugins: &[HostPlugin],
        handled: &[(String, u64)],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        statements::report_host::<S::DB>(&mut tx, host, plugins, handled).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_host(&self, host: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        statements::forget_host::<S::DB>(&mut tx, host).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn host_reports(&self) -> Result<Vec<HostPlugin>> {
        statements::host_reports::<S::DB>(&mut *self.pool().acquire().await?).await
    }

    async fn handled_per_minute(&self) -> Result<Vec<(String, u64)>> {
        statements::handled_per_minute::<S::DB>(&mut *self.pool().acquire().await?).await
    }
}

/// A host's handled/min report counts while it is this young (a few report intervals):
/// a host that stopped reporting stops counting.
pub const RATES_FRESH_FOR: Duration = Duration::from_secs(20);

/// The deploy rule: deploying the component `active` already runs changes nothing.
fn unchanged(active: Option<Deployment>, artifact: &Artifact) -> Option<Deployed> {
    active
        .filter(|a| a.sha256 == artifact.sha256)
        .map(Deployed::AlreadyActive)
}

/// The rollback rule, given a plugin's standing deployments, newest first (two are
/// enough): the newest is withdrawn and the one before becomes active (`Done`, which
/// the store then writes), or why nothing can be rolled back.
fn rollback_of(standing: Vec<Deployment>) -> Rollback {
    let mut standing = standing.into_iter();
    match (standing.next(), standing.next()) {
        (Some(from), Some(to)) => Rollback::Done { from, to },
        (Some(active), None) => Rollback::NothingEarlier { active },
        (None, _) => Rollback::NotDeployed,
    }
}
