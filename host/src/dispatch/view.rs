//! The sandbox's state readers: the store's committed state for a batch's calls, and
//! inside a settle what a handler reads when it runs there, over the committed state of
//! the locked keys and the batch's earlier writes.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::runtime::{StateError, StateReader};
use crate::store::{KeyRequest, SettleState, StateView, Store};

/// Reads state through a settle's view, asking the settle for keys the view lacks.
pub(super) struct SettleReader(pub SettleState);

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

/// The store as the sandbox's state reader.
pub(super) struct StoreState(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl StateReader for StoreState {
    async fn read(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>, StateError> {
        Ok(self.0.state_get(plugin, key).await?)
    }
}
