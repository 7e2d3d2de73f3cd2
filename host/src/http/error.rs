//! What the API answers when a call fails: a status and `{"error": "..."}`, never a bare
//! 500 or a text page. A store error is a 503 naming the database, as readiness would.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// A failed call.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong, and what to do.
    pub message: String,
}

impl ApiError {
    /// A failed call with `status`.
    /// A 400 saying what is wrong with the request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!("HTTP API: database error: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database failed: {e}; try again"),
        )
    }
}
