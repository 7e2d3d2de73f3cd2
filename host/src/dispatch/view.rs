//! The sandbox's state reader inside a settle: what a handler reads when it runs there,
//! over the committed state of the locked keys and the batch's earlier writes.

use tokio::sync::oneshot;

use crate::runtime::{StateError, StateReader};
use crate::store::{KeyRequest, SettleState, StateView};

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
