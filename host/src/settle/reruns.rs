//! The dispatcher as the settle's [`Runner`]: the plugins as served now, each call reading
//! the settle's view of the state (and asking the settle for keys the view lacks), under
//! the settle's budget and the plugins' state quotas.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::resolve::{KeyRequest, Runner, SettleState};
use crate::dispatch::{Delays, Dispatcher};
use crate::envelope::Envelope;
use crate::runtime::{StateError, StateReader};
use crate::store::{PluginResult, SettleBudget, StateQuota, StateView};

/// Runs handlers inside a settle through `dispatcher`, drawing delays as `delays` says.
pub(super) struct Reruns<'d> {
    pub dispatcher: &'d Dispatcher,
    pub delays: Delays,
}

#[async_trait::async_trait]
impl Runner for Reruns<'_> {
    fn budget(&self) -> SettleBudget {
        self.dispatcher.settle_budget()
    }

    fn expected_keys(&self, plugin: &str) -> Vec<String> {
        self.dispatcher.expected_keys(plugin)
    }

    fn state_quota(&self, plugin: &str) -> StateQuota {
        self.dispatcher.state_quota(plugin)
    }

    async fn run(
        &self,
        message: &Envelope,
        plugin: &str,
        attempt: u32,
        state: SettleState,
    ) -> Option<PluginResult> {
        let reader = Arc::new(SettleReader(state));
        self.dispatcher
            .call_again(message, plugin, attempt, self.delays, reader)
            .await
    }
}

/// Reads state through a settle's view, asking the settle for keys the view lacks.
struct SettleReader(SettleState);

impl SettleReader {
    fn view(&self) -> std::sync::MutexGuard<'_, StateView> {
        self.0
            .view
            .lock()
            .expect("no panic while the view is locked")
    }
}

#[async_trait::async_trait]
impl StateReader for SettleReader {
    async fn read(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>, StateError> {
        if let Some((value, version)) = self.view().get(plugin, key) {
            return Ok(value.map(|v| (v, version)));
        }
        let (loaded, answer) = oneshot::channel();
        let request = KeyRequest {
            plugin: plugin.to_owned(),
            key: key.to_owned(),
            loaded,
        };
        if self.0.requests.send(request).is_ok()
            && answer.await == Ok(true)
            && let Some((value, version)) = self.view().get(plugin, key)
        {
            return Ok(value.map(|v| (v, version)));
        }
        // Another settle holds the key: the settle drops this run's result, so what it
        // reads here does not matter.
        Ok(None)
    }
}
