//! What every request passes through around its route: a body declared larger than
//! `http.max_body_bytes` refused before it arrives; a body that takes longer than
//! `http.body_timeout_ms` to arrive refused; the body of a `GET`, `HEAD` or `DELETE`
//! (which no route reads) read and dropped before the answer, so the connection is not
//! reset under a large answer; and every error answered as JSON `{"error": ...}`, those
//! of axum's own (a wrong method, an unreadable path) too.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use crate::text;

/// How large and how slow a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `http.max_body_bytes`.
    pub max_bytes: usize,
    /// `http.body_timeout_ms`: from the request's headers to its body's last byte.
    pub timeout: Duration,
}

impl BodyLimits {
    fn too_large(&self, what: String) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{what}, more than http.max_body_bytes = {} allows",
                self.max_bytes
            ),
        )
    }

    fn too_slow(&self) -> String {
        format!(
            "the request body did not arrive within http.body_timeout_ms = {} ms",
            self.timeout.as_millis()
        )
    }
}

/// The middleware: see the module's doc.
pub async fn guard(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = text::bounded(request.uri().path().to_owned(), 256);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > limits.max_bytes as u64
    {
        return limits
            .too_large(format!("the body is declared as {declared} bytes"))
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let deadline = Instant::now() + limits.timeout;
    let body = if matches!(method, Method::GET | Method::HEAD | Method::DELETE) {
        if let Err(e) = drain(body, limits, deadline).await {
            return e.into_response();
        }
        Body::empty()
    } else {
        Body::new(Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            message: limits.too_slow(),
        })
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    as_json(response, &method, &path).await
}

/// Read and drop `body` (kept nowhere), within the limits.
async fn drain(mut body: Body, limits: BodyLimits, deadline: Instant) -> Result<(), ApiError> {
    let mut read = 0usize;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, limits.too_slow()))?;
        match frame {
            None => return Ok(()),
            Some(Ok(frame)) => {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > limits.max_bytes {
                    return Err(limits.too_large(format!("the body is over {read} bytes")));
                }
            }
            Some(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                ));
            }
        }
    }
}

/// A request body that fails once its deadline has passed: the route reading it answers
/// with the reason.
struct Deadline {
    body: Body,
    sleep: Pin<Box<Sleep>>,
    message: String,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(self.message.clone())))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The longest error text of axum's own kept in the JSON answer.
const MAX_ERROR_TEXT: usize = 1024;

/// `response` as it goes out: an error that is not JSON yet (axum's rejections are text,
/// a wrong method has no body) becomes `{"error": ...}`, with its status and headers.
async fn as_json(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let said = String::from_utf8_lossy(&body);
    let error = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(ALLOW)
            .and_then(|a| a.to_str().ok())
            .unwrap_or("another method");
        format!("{method} is not allowed on {path}; it takes {allowed}")
    } else if !said.trim().is_empty() {
        text::reason(said.trim(), MAX_ERROR_TEXT)
    } else {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned()
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": error }).to_string();
    Response::from_parts(parts, Body::from(body))
}
