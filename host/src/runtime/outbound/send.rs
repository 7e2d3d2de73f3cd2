//! Sending one granted request: on a connection of the plugin's pool, or a new one
//! ([`connect`]), over HTTP/1.1 with the request's body bounded, and handing the guest a
//! response whose body is bounded too. Each step has its timeout (see [`Timeouts`](super::Timeouts)); the
//! request holds one of its plugin's in-flight permits until its response body is
//! dropped, and a body read whole gives its connection back to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Sleep, timeout};
use wasmtime_wasi_http::{Error, WasiBody};

use super::pool::{Origin, Pool, Sender};
use super::{Audit, Outbound, SendResult, Target, Timeouts, connect};
use crate::metrics;

/// Send `request` to `target` for `plugin`, counted in the metrics.
pub(super) async fn send(
    plugin: Arc<Outbound>,
    target: Target,
    request: http::Request<WasiBody>,
    timeouts: Timeouts,
    (audit, entry): (Audit, usize),
) -> SendResult {
    let started = Instant::now();
    let method = request.method().clone();
    let result = exchange(&plugin, &target, request, &timeouts).await;
    let status = match &result {
        Ok(response) => response.status().as_str().to_owned(),
        Err(e) => kind(e).to_owned(),
    };
    let elapsed = started.elapsed();
    audit.end(entry, &status);
    metrics::outbound_request(&plugin.plugin, &target.label, &status, Some(elapsed));
    let url = target.url();
    match &result {
        Ok(_) => {
            tracing::debug!(plugin = &*plugin.plugin, %method, url, status, ms = elapsed.as_millis() as u64, "outgoing request")
        }
        Err(e) => {
            tracing::info!(plugin = &*plugin.plugin, %method, url, status, ms = elapsed.as_millis() as u64, "outgoing request failed: {e}")
        }
    }
    // The connection is driven by a task of its own (connect::open): nothing is left to
    // drive with the response.
    Ok((result?, Box::new(async { Ok(()) })))
}

/// What a failed request's metric says of it: `refused` (by a rule), `timeout` or
/// `error`.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::InternalError(Some(text)) if text.starts_with("refused") => "refused",
        Error::DnsTimeout
        | Error::ConnectionTimeout
        | Error::ConnectionReadTimeout
        | Error::HttpResponseTimeout => "timeout",
        _ => "error",
    }
}

async fn exchange(
    plugin: &Outbound,
    target: &Target,
    mut request: http::Request<WasiBody>,
    t: &Timeouts,
) -> Result<http::Response<WasiBody>, Error> {
    let limits = &plugin.limits;
    let max_request = limits.max_http_request_bytes;
    let declared = (request.headers().get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let over = format!(
        "refused {}: its body is longer than [plugin.{}] max_http_request_bytes ({max_request} bytes)",
        target.url(),
        plugin.plugin
    );
    if declared.is_some_and(|n| n > max_request as u64) {
        return Err(Error::InternalError(Some(over)));
    }
    let permit = (plugin.in_flight.clone().acquire_owned().await)
        .map_err(|_| Error::InternalError(Some("the host is shutting down".into())))?;
    let origin = target.origin();
    let mut sender = match plugin.pool.take(&origin) {
        Some(sender) => sender,
        None => connect::open(target, t).await?,
    };
    timeout(t.connect, sender.ready())
        .await
        .map_err(|_| Error::ConnectionTimeout)??;

    // Origin form on the wire; the Host header carries the authority.
    let path = (request.uri().path_and_query()).map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let request = request.map(|body| {
        Limited::new(body, max_request)
            .map_err(move |e| {
                if e.is::<LengthLimitError>() {
                    return Error::InternalError(Some(over.clone()));
                }
                match e.downcast::<Error>() {
                    Ok(e) => *e,
                    Err(e) => Error::InternalError(Some(e.to_string())),
                }
            })
            .boxed_unsync()
    });

    let response = timeout(t.first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let between = t.between_bytes.max(Duration::from_millis(1));
    let response = response.map(|incoming| {
        Bounded {
            incoming,
            left: limits.max_http_response_bytes,
            over: format!(
                "the response is longer than [plugin.{}] max_http_response_bytes ({} bytes)",
                plugin.plugin, limits.max_http_response_bytes
            ),
            between,
            idle: Box::pin(tokio::time::sleep(between)),
            _permit: permit,
            reuse: Some((plugin.pool.clone(), origin, sender)),
        }
        .boxed_unsync()
    });
    Ok(response)
}

/// A response body read within its size limit, each frame within the time allowed
/// between bytes; it holds its request's in-flight permit.
struct Bounded {
    incoming: hyper::body::Incoming,
    left: usize,
    /// The error of a response over its limit.
    over: String,
    between: Duration,
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    /// Its connection, kept for the plugin's next request once this body is read whole.
    reuse: Option<(Arc<Pool>, Origin, Sender)>,
}

impl Bounded {
    /// The response was read whole: its connection may carry the plugin's next request.
    fn give_back(&mut self) {
        if let Some((pool, origin, sender)) = self.reuse.take() {
            pool.keep(origin, sender);
        }
    }
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > this.left {
                    let over = this.over.clone();
                    return Poll::Ready(Some(Err(Error::InternalError(Some(over)))));
                }
                this.left -= len;
                let next = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(next);
                // A reader may stop at the last frame without asking for the end.
                if this.incoming.is_end_stream() {
                    this.give_back();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
