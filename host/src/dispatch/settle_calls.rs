//! What runs handlers inside a settle: the plugins as served now, each call reading the
//! settle's view of the state, under the settle's budget and the plugins' state quotas.

use std::sync::Arc;

use super::view::SettleReader;
use super::{Delays, Dispatcher};
use crate::envelope::Envelope;
use crate::store::{PluginResult, SettleBudget, SettleRunner, SettleState, StateQuota};

/// Runs handlers inside a settle (see [`Dispatcher::settle_runner`]).
pub(super) struct SettleCalls<'d> {
    pub dispatcher: &'d Dispatcher,
    pub delays: Delays,
}

#[async_trait::async_trait]
impl SettleRunner for SettleCalls<'_> {
    fn budget(&self) -> SettleBudget {
        self.dispatcher.config.settle_runs
    }

    fn expected_keys(&self, plugin: &str) -> Vec<String> {
        self.dispatcher.contention.expected_keys(plugin)
    }

    fn state_quota(&self, plugin: &str) -> StateQuota {
        let host = self.dispatcher.config.state_quota;
        match self.dispatcher.config.plugin.get(plugin) {
            Some(config) => config.state_quota(host),
            None => host,
        }
    }

    async fn run(
        &self,
        message: &Envelope,
        plugin: &str,
        attempt: u32,
        state: SettleState,
    ) -> Option<PluginResult> {
        let plugin = self.dispatcher.plugins.current().get(plugin)?.clone();
        let reader = Arc::new(SettleReader(state));
        let mut result = self
            .dispatcher
            .call(&plugin, message, self.delays, reader)
            .await;
        result.attempt = attempt;
        Some(result)
    }
}
