//! Asking the fleet and waiting for its answer, for a caller on a host (`POST
//! /api/messages/request`, `wharf request`): the request is a message for an inbox queue
//! or an exchange (through the outbox) marked as one whose caller waits on the fleet (`reply-to: wharf:caller`) until a deadline
//! (`expires-at`: a host that takes it later does not handle it); its answer is the first
//! the fleet commits for it, read from the store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::effects::{Destination, Publish};
use crate::envelope::EXPIRES_HEADER;
use crate::names::{self, InvalidName};
use crate::reply::{CALLER, REPLY_TO_HEADER};
use crate::store::{Answer, Replies, StoreError, now_ms};

/// The longest pause between two looks for the answer.
const MOST_PAUSE: Duration = Duration::from_millis(50);

/// Why a request cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The caller set a header the host sets on a request.
    #[error(
        "header {0} is the host's on a request; leave it out (the timeout sets when the request expires)"
    )]
    Reserved(&'static str),
    /// A name or header breaks the rules.
    #[error(transparent)]
    Name(#[from] InvalidName),
}

/// The request `id` for `destination` (an inbox queue, or an exchange through the
/// outbox) whose caller waits `timeout` from now.
pub fn message(
    id: Uuid,
    (destination, kind): (Destination, String),
    mut headers: BTreeMap<String, String>,
    payload: Vec<u8>,
    key: Option<String>,
    timeout: Duration,
) -> Result<Publish, RequestError> {
    for reserved in [REPLY_TO_HEADER, EXPIRES_HEADER] {
        if headers.contains_key(reserved) {
            return Err(RequestError::Reserved(reserved));
        }
    }
    headers.insert(REPLY_TO_HEADER.to_owned(), CALLER.to_owned());
    let expires_at = now_ms() + timeout.as_millis() as i64;
    headers.insert(EXPIRES_HEADER.to_owned(), expires_at.to_string());
    Ok(names::checked_publish(
        id,
        destination,
        kind,
        headers,
        payload,
        key,
    )?)
}

/// The answer to request `id` once committed, looking again after a pause that doubles
/// up to [`MOST_PAUSE`]; `None` after `timeout`.
pub async fn answer(
    store: &dyn Replies,
    id: Uuid,
    timeout: Duration,
) -> Result<Option<Answer>, StoreError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(answer) = store.answer(id).await? {
            return Ok(Some(answer));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(MOST_PAUSE);
    }
}
