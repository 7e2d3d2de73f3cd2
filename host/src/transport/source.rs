//! The seam every transport implements: a [`Source`] hands out batches of envelopes with
//! what holds them at the source (a claim, unacked deliveries), keeps them held while
//! their handlers run, and finishes them: settles the batch in the store and releases it
//! at the source (commit, ack). The [`super::pump`] drives any source the same way.

use std::future::Future;

use crate::dispatch::Dispatcher;
use crate::envelope::Envelope;
use crate::store::{SettleSummary, Settlement, StoreError};

/// A batch taken from a source, not finished yet.
pub struct Batch<H> {
    /// The messages to handle.
    pub messages: Vec<Envelope>,
    /// How many messages the source handed out for this batch: `messages`, and those it
    /// answers itself (duplicates, refusals).
    pub taken: u64,
    /// What holds the batch at its source until [`Source::finish`].
    pub held: H,
}

/// An error of a source, which says whether it will pass by itself.
pub trait SourceError: std::error::Error + Send + 'static {
    /// Will the source work again after a pause (database, broker or network back)?
    fn is_transient(&self) -> bool;
}

impl SourceError for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }
}

/// Where messages come from: the inbox table, an AMQP queue.
pub trait Source: Sync {
    /// What holds a taken batch at the source until it is finished.
    type Held: Send;
    /// Why taking or finishing a batch failed.
    type Error: SourceError;

    /// After an error that will pass, the pump backs off and takes the next batch
    /// (`true`: what the failed batch held returns by itself), or it returns the error to
    /// whoever starts the source again (`false`: only a new channel returns it).
    const GOES_ON_AFTER_ERROR: bool;
    /// Whether the next batch is taken and handled while one is being finished.
    const PIPELINED: bool;

    /// The source's name on metrics and logs: `inbox`, `amqp:<queue>`.
    fn label(&self) -> &str;

    /// The most messages a batch takes.
    fn batch_size(&self) -> u32;

    /// Take up to `limit` messages that are there now; `None` when there are none.
    fn take(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Option<Batch<Self::Held>>, Self::Error>> + Send;

    /// Wait until messages may be there (or `shutdown` turns true).
    fn wait(
        &self,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Run the batch's handlers with `dispatcher`, keeping the batch held meanwhile.
    fn handle(
        &self,
        batch: &mut Batch<Self::Held>,
        dispatcher: &Dispatcher,
    ) -> impl Future<Output = Result<Vec<Settlement>, Self::Error>> + Send;

    /// Settle `settlements` in the store and release the batch at its source. Returns
    /// what the settle did.
    fn finish(
        &self,
        held: Self::Held,
        settlements: &mut Vec<Settlement>,
        dispatcher: &Dispatcher,
    ) -> impl Future<Output = Result<SettleSummary, Self::Error>> + Send;
}
