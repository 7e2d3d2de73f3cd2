//! The connections of the admin API: accepted from the listener, each served by hyper
//! (HTTP/1.1) with a bound on the time a client takes to send a request's headers
//! (`http.header_timeout_ms`); hyper's own refusals of what it cannot parse (a request
//! line or headers too long, a malformed request) answered in JSON like every other error
//! ([`JsonRefusals`]); and on shutdown, idle connections closed at once and requests in
//! flight given `http.shutdown_grace_ms` before their connections are dropped, so no
//! client holds the host up by stalling.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long clients may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send a request's headers.
    pub header: Duration,
    /// For their requests in flight to finish once the host stops.
    pub shutdown_grace: Duration,
}

/// Serve `app` on `listener` until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = app
                        .clone()
                        .map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
                    let connection = http.serve_connection(
                        TokioIo::new(JsonRefusals::new(stream)),
                        TowerToHyperService::new(service),
                    );
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("HTTP API: a connection ended: {e}");
                        }
                    });
                }
                // Out of file descriptors, say: wait, rather than spin.
                Err(e) => {
                    tracing::warn!("HTTP API: could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stopped(&mut shutdown) => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(timeouts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "HTTP API: connections still busy {} ms after the host began to stop; closing them (http.shutdown_grace_ms)",
            timeouts.shutdown_grace.as_millis()
        );
    }
    connections.shutdown().await;
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            // The sender is gone: nothing will ever stop this server but the process.
            std::future::pending::<()>().await;
        }
    }
}

/// A connection whose writes pass through, except hyper's automatic answer to a request
/// it cannot parse (400, 414 or 431 with an empty body, written before any route ran):
/// that one gets a JSON body naming the problem, as every answer of the API has.
struct JsonRefusals<T> {
    inner: T,
    /// A rewritten answer still to be written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonRefusals<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonRefusals<T> {
    /// Write what is pending of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// `head` with a JSON body, if it is hyper's bodiless answer to an unparsable request.
fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let error = match status {
        "400" => "the request is not valid HTTP/1.1 (its request line or a header is malformed)",
        "414" => "the request's URL is too long",
        "431" => "the request's headers are too large",
        _ => return None,
    };
    let zero = "\r\ncontent-length: 0\r\n";
    if !text.ends_with("\r\n\r\n") || text.matches("\r\n\r\n").count() != 1 || !text.contains(zero)
    {
        return None;
    }
    let body = serde_json::json!({ "error": error }).to_string();
    let headers = format!(
        "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    Some(format!("{}{body}", text.replacen(zero, &headers, 1)).into_bytes())
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(rewritten) = with_json_body(buf) {
            self.pending = Some((rewritten, 0));
            // Taken whole; what is left is written by the flush that follows.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_refusals_get_a_json_body() {
        let refusal =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 10:00:00 GMT\r\n\r\n";
        let rewritten = String::from_utf8(with_json_body(refusal).unwrap()).unwrap();
        let (head, body) = rewritten.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "the request's headers are too large");

        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}";
        assert!(with_json_body(ours).is_none(), "an answer with its body");
        let head_only = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 13\r\n\r\n";
        assert!(
            with_json_body(head_only).is_none(),
            "a head whose body follows"
        );
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(with_json_body(ok).is_none());
    }
}
