//! A bridge consumer's batch (`to_inbox`): inserted into an inbox queue instead of
//! handled here.

use super::Consumer;
use crate::envelope::{Envelope, NewMessage};
use crate::store::StoreError;

impl Consumer {
    /// The bridge: insert the messages into the `inbox` queue (one transaction; ids
    /// already received are duplicates and dropped), to be handled by the inbox worker.
    /// Returns how many were duplicates.
    pub(super) async fn bridge(
        &self,
        envelopes: Vec<Envelope>,
        inbox: &str,
    ) -> Result<u64, StoreError> {
        if envelopes.is_empty() {
            return Ok(0);
        }
        let messages: Vec<NewMessage> =
            envelopes.into_iter().map(|m| m.into_inbox(inbox)).collect();
        let new = self.store.enqueue(&messages).await?;
        Ok(messages.len() as u64 - new)
    }
}
