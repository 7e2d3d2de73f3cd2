//! Sending one granted request: resolve its host and keep to the addresses it may reach,
//! connect (TLS with the system's roots, nothing of the host's proxies or credentials),
//! send over HTTP/1.1 with the request's body bounded, and hand the guest a response
//! whose body is bounded too. Each step has its timeout (see [`Timeouts`]); the request
//! holds one of its plugin's in-flight permits until its response body is dropped.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use super::grants::Scheme;
use super::{Audit, Outbound, SendResult, Target, address};
use crate::metrics;

/// How long each step of one request may take.
pub(super) struct Timeouts {
    /// Resolving, connecting and the TLS handshake, each.
    pub(super) connect: Duration,
    /// From the request sent to its response's head.
    pub(super) first_byte: Duration,
    /// Between two frames of the response's body.
    pub(super) between_bytes: Duration,
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

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
        Ok((response, _)) => response.status().as_str().to_owned(),
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
    let (response, connection) = result?;
    Ok((response, Box::new(connection)))
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
) -> Result<
    (
        http::Response<WasiBody>,
        impl Future<Output = Result<(), Error>> + Send + use<>,
    ),
    Error,
> {
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
    let addr = timeout(t.connect, resolve(target))
        .await
        .map_err(|_| Error::DnsTimeout)??;
    let tcp = timeout(t.connect, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    tcp.set_nodelay(true).map_err(Error::Connect)?;
    let stream: Box<dyn Stream> = match target.scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let tls = TlsConnector::from(tls()?).connect(name, tcp);
            Box::new(
                timeout(t.connect, tls)
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?
                    .map_err(|e| {
                        let url = target.url();
                        Error::InternalError(Some(format!("TLS with {url} failed: {e}")))
                    })?,
            )
        }
    };
    let (mut sender, connection) = timeout(
        t.connect,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
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

    // The connection is driven while the response head is awaited, and after it by the
    // future handed back with the response.
    let head = async {
        timeout(t.first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)
    };
    let mut head = pin!(head);
    let mut connection = Some(connection);
    let response = std::future::poll_fn(|cx| match head.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(conn) = connection.as_mut() else {
                return Poll::Pending;
            };
            let ended = ready!(Pin::new(conn).poll(cx));
            connection = None;
            match ended {
                Ok(()) => head.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
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
        }
        .boxed_unsync()
    });
    Ok((response, async move {
        match connection {
            Some(conn) => conn.await.map_err(|e| match e.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            }),
            None => Ok(()),
        }
    }))
}

/// The first address of `target`'s host it may reach: a public one, or any when a grant
/// names the host itself.
async fn resolve(target: &Target) -> Result<SocketAddr, Error> {
    let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|_| Error::DnsError {
            rcode: None,
            info_code: None,
        })?;
    let mut refused = None;
    for addr in addrs {
        match address::internal(addr.ip()) {
            Some(kind) if !target.named => refused = refused.or(Some((addr.ip(), kind))),
            _ => return Ok(addr),
        }
    }
    let Some((ip, kind)) = refused else {
        return Err(Error::DestinationNotFound);
    };
    let host = &target.host;
    Err(Error::InternalError(Some(format!(
        "refused {}: {host} resolves to {ip}, a {kind} address, which only a grant naming {host} itself (not a pattern) may reach",
        target.url()
    ))))
}

/// The TLS client of every request: the system's root certificates, ring's crypto.
fn tls() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "no system root certificates were found ({} errors); install the ca-certificates package",
                found.errors.len()
            ));
        }
        let provider = Arc::new(crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    config.clone().map_err(|e| Error::InternalError(Some(e)))
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
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
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
