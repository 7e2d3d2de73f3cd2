//! Opening a connection for a granted request: resolve its host and keep to the addresses
//! it may reach, connect, TLS with the system's roots (nothing of the host's proxies or
//! credentials), the HTTP/1.1 handshake; the connection is then driven by a task of its
//! own, which ends when the connection closes or its sender is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
use wasmtime_wasi_http::Error;
use wasmtime_wasi_http::io::TokioIo;

use super::grants::Scheme;
use super::pool::Sender;
use super::{Target, Timeouts, address};

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A new connection to `target`, each step within `t.connect`.
pub(super) async fn open(target: &Target, t: &Timeouts) -> Result<Sender, Error> {
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
    let (sender, connection) = timeout(
        t.connect,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let url = target.url();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(url, "outgoing connection ended: {e}");
        }
    });
    Ok(sender)
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
