//! A plugin's calls to other services: the host side of `wasi:http/outgoing-handler`.
//! Nothing is reachable unless the operator grants it (`[plugin.<name>] allowed_hosts`,
//! read by [`grants`]); each request is checked against the grants and the call's limits
//! here ([`OutboundCall`]), then its host's addresses are resolved and checked again and
//! the request is sent by [`send`] (TLS with the system's roots, timeouts within the call's
//! deadline, bodies bounded). A refusal is an error the guest sees, naming the rule.

mod address;
mod audit;
mod connect;
pub mod grants;
mod pool;
mod send;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::EffectLimits;
use crate::text;
pub(super) use audit::Audit;
use grants::{Grant, Scheme};

/// The most bytes of header fields a guest may put in one `fields` (default 128 KiB): with
/// the call's cap on resources, what a guest can make the host hold in fields is bounded.
pub(super) const MAX_FIELDS_BYTES: usize = 32 << 10;
/// The most bytes one write to a request's body may take (default 1 MiB); the host holds
/// at most two of them per body.
const BODY_CHUNK_BYTES: usize = 64 << 10;
/// The longest list of grants one plugin may have.
pub const MAX_GRANTS: usize = 64;
/// How many of a plugin's grants a refusal lists.
const LISTED_GRANTS: usize = 4;

/// What one plugin may call, shared by its calls on this host.
pub struct Outbound {
    plugin: Arc<str>,
    grants: Arc<[Grant]>,
    limits: EffectLimits,
    /// The plugin's requests in flight on this host.
    in_flight: Arc<Semaphore>,
    /// Its idle connections.
    pool: Arc<pool::Pool>,
}

impl Outbound {
    /// Plugin `plugin`'s grants, under its call limits.
    pub fn new(plugin: &str, grants: Arc<[Grant]>, limits: EffectLimits) -> Self {
        Self {
            plugin: Arc::from(plugin),
            grants,
            in_flight: Arc::new(Semaphore::new(limits.max_http_concurrency.max(1) as usize)),
            pool: Arc::default(),
            limits,
        }
    }

    /// The grants of nothing (a manifest being read).
    pub fn none(limits: EffectLimits) -> Self {
        Self::new("(loading)", Arc::from([]), limits)
    }

    /// The grants as the operator wrote them, the first few, for a refusal's text.
    fn listed(&self) -> String {
        let mut listed: Vec<String> = (self.grants.iter().take(LISTED_GRANTS))
            .map(|g| g.to_string())
            .collect();
        if self.grants.len() > LISTED_GRANTS {
            listed.push(format!("and {} more", self.grants.len() - LISTED_GRANTS));
        }
        listed.join(", ")
    }
}

/// Where one request goes, once its grant is found.
pub(super) struct Target {
    scheme: Scheme,
    /// Lowercase, an IPv6 address without brackets.
    host: String,
    port: u16,
    /// Whether a grant names the host itself, which lets it reach a private address.
    named: bool,
    /// What its metrics call the host: the host a grant names, or the grant's pattern
    /// (one label per grant, however many hosts a pattern lets through).
    label: String,
}

impl Target {
    fn origin(&self) -> pool::Origin {
        pool::Origin(self.scheme, self.host.clone(), self.port)
    }

    fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}", self.scheme, self.port)
    }
}

/// How long each step of one request may take.
struct Timeouts {
    /// Resolving, connecting and the TLS handshake, each.
    connect: Duration,
    /// From the request sent to its response's head.
    first_byte: Duration,
    /// Between two frames of the response's body.
    between_bytes: Duration,
}

/// The outgoing requests of one call.
pub(super) struct OutboundCall {
    plugin: Arc<Outbound>,
    sent: u32,
    deadline: Instant,
    /// What each request did, for the attempt's history.
    pub(super) audit: Audit,
}

impl OutboundCall {
    /// The requests of one call of the plugin `outbound` describes, which ends at
    /// `deadline`.
    pub(super) fn new(plugin: Arc<Outbound>, deadline: Instant) -> Self {
        Self {
            plugin,
            sent: 0,
            deadline,
            audit: Audit::default(),
        }
    }

    /// The grant that lets `uri` through, and the call's room for one more request.
    fn check(&mut self, uri: &http::Uri) -> Result<Target, String> {
        let p = &self.plugin;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err("only http and https requests are sent".into()),
        };
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err("the request names no host".into());
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let mut target = Target {
            scheme,
            host,
            port,
            named: false,
            label: String::new(),
        };
        let plugin = &p.plugin;
        let url = text::reason(&target.url(), 300);
        if p.grants.is_empty() {
            return Err(format!(
                "refused {url}: plugin {plugin} may call no host; grant it with [plugin.{plugin}] allowed_hosts = [\"{url}\"]"
            ));
        }
        let Some(grant) = (p.grants.iter()).find(|g| g.allows(scheme, &target.host, port)) else {
            return Err(format!(
                "refused {url}: not in [plugin.{plugin}] allowed_hosts ({}); add it there to grant it",
                p.listed()
            ));
        };
        target.named = grant.names(&target.host);
        target.label = match target.named {
            true => target.host.clone(),
            false => grant.to_string(),
        };
        if self.sent >= p.limits.max_http_requests {
            return Err(format!(
                "refused {url}: the call has made its {} requests ([plugin.{plugin}] max_http_requests)",
                p.limits.max_http_requests
            ));
        }
        self.sent += 1;
        Ok(target)
    }

    /// How long each step of a request may take: the plugin's limits and the guest's
    /// options, within what is left of the deadline.
    fn timeouts(&self, asked: Option<RequestOptions>) -> Timeouts {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let l = &self.plugin.limits;
        let within = |limit_ms: u64, asked: Option<Duration>| {
            (Duration::from_millis(limit_ms))
                .min(asked.unwrap_or(Duration::MAX))
                .min(left)
        };
        let asked = asked.unwrap_or_default();
        Timeouts {
            connect: within(l.http_connect_timeout_ms, asked.connect_timeout),
            first_byte: within(l.http_first_byte_timeout_ms, asked.first_byte_timeout),
            between_bytes: within(l.http_first_byte_timeout_ms, asked.between_bytes_timeout),
        }
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for OutboundCall {
    /// A request names its scheme: no guess at what the guest meant.
    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        None
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let plugin = self.plugin.clone();
        let entry = self.audit.begin(request.method(), request.uri());
        match self.check(request.uri()) {
            Err(refusal) => {
                self.audit.end(entry, "refused");
                crate::metrics::outbound_request(&plugin.plugin, "-", "refused", None);
                tracing::warn!(plugin = &*plugin.plugin, "outgoing request {refusal}");
                Box::new(async move { Err(Error::InternalError(Some(refusal))) })
            }
            Ok(target) => {
                let timeouts = self.timeouts(options);
                let audit = (self.audit.clone(), entry);
                Box::new(send::send(plugin, target, request, timeouts, audit))
            }
        }
    }
}
