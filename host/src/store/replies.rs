//! Answers to requests whose callers wait on a host of the fleet (`POST
//! /api/messages/request`, `wharf request`): the settle that answers a request writes its
//! answer into `replies` under the request's id, once (`settle::statements::replies`); the
//! host the caller waits on reads it here. Retention deletes them.

use std::collections::BTreeMap;

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::sql::{Column, Dialect, Run, SqlStore, Statement};
use super::{Result, StoreError, parse_headers};

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A handler answered it.
    Answered {
        /// The answer's headers.
        headers: BTreeMap<String, String>,
        /// The answer's body.
        payload: Vec<u8>,
    },
    /// It was dead-lettered or refused before a handler answered it.
    Rejected {
        /// Why: the handler's reason, or the host's.
        error: String,
    },
    /// Every plugin routed to it handled it, and none answered.
    Handled,
}

/// The answers' part of a [`super::Store`].
#[async_trait::async_trait]
pub trait Replies: Send + Sync {
    /// The answer to `request`, once the settle that answers it committed.
    async fn answer(&self, request: Uuid) -> Result<Option<Answer>>;
}

#[async_trait::async_trait]
impl<S: SqlStore> Replies for S {
    async fn answer(&self, request: Uuid) -> Result<Option<Answer>> {
        let mut query = QueryBuilder::<S::DB>::new(format!(
            "SELECT status, error, {} AS headers, payload FROM replies WHERE request_id = ",
            S::DB::json_text("headers")
        ));
        query.id(request);
        let conn = &mut *self.pool().acquire().await?;
        let Some(row) = S::DB::fetch_all(conn, &mut query).await?.into_iter().next() else {
            return Ok(None);
        };
        let status: String = S::DB::column(&row, "status");
        let headers: String = S::DB::column(&row, "headers");
        let error: Option<String> = S::DB::column(&row, "error");
        Ok(Some(match status.as_str() {
            "answered" => Answer::Answered {
                headers: parse_headers(&headers)?,
                payload: S::DB::column(&row, "payload"),
            },
            "rejected" => Answer::Rejected {
                error: error.unwrap_or_default(),
            },
            "handled" => Answer::Handled,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "the answer to request {request} has status {other:?}"
                )));
            }
        }))
    }
}
