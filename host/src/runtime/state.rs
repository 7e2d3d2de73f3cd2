//! How a call reads its plugin's committed state. The sandbox defines the narrow seam it
//! needs and nothing more: dispatch hands calls a reader over the store, and a manifest is
//! read with [`NoState`].

/// Why a state read failed; the guest's call traps with it.
pub type StateError = Box<dyn std::error::Error + Send + Sync>;

/// Reads the committed value of a plugin's state key.
#[async_trait::async_trait]
pub trait StateReader: Send + Sync {
    /// Committed value and version of `plugin`'s `key`; `None` when absent.
    async fn read(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>, StateError>;
}

/// The reader while a manifest is read: state is not available.
pub struct NoState;

#[async_trait::async_trait]
impl StateReader for NoState {
    async fn read(&self, _: &str, _: &str) -> Result<Option<(Vec<u8>, i64)>, StateError> {
        Err("state is not available while the manifest is read".into())
    }
}
