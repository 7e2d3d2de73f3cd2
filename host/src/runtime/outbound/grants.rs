//! Which hosts a plugin may call: an operator's grants (`[plugin.<name>] allowed_hosts`),
//! written as Spin writes `allowed_outbound_hosts`: `scheme://host[:port]`, where the scheme
//! may be `*`, the host `*` or `*.domain` (its subdomains, not the domain itself) and the
//! port `*`; a grant without a port allows the scheme's own (443, 80). A grant names no
//! path, query or credentials. Addresses on loopback, link-local and private networks are
//! refused unless a grant names that host itself (not through a wildcard).

use std::fmt;

/// The longest grant accepted, in bytes.
pub const MAX_GRANT_BYTES: usize = 512;

/// A grant that cannot be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed_hosts entry \"{grant}\": {problem}")]
pub struct InvalidGrant {
    /// The entry, escaped and cut to a readable length.
    pub grant: String,
    /// What is wrong and how to write it.
    pub problem: String,
}

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// As the operator wrote it.
    written: String,
    scheme: Option<Scheme>,
    host: HostRule,
    port: PortRule,
}

/// A scheme a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    /// Lowercase; an IPv6 address without its brackets.
    Exact(String),
    /// `.domain`, lowercase.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    Any,
    SchemeDefault,
    Exact(u16),
}

impl Grant {
    /// Read one `allowed_hosts` entry.
    pub fn parse(grant: &str) -> Result<Self, InvalidGrant> {
        let invalid = |problem: &str| InvalidGrant {
            grant: crate::text::reason(grant, 120),
            problem: problem.to_owned(),
        };
        if grant.len() > MAX_GRANT_BYTES {
            return Err(invalid(&format!("is longer than {MAX_GRANT_BYTES} bytes")));
        }
        if grant.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("has a space or a control character"));
        }
        let Some((scheme, rest)) = grant.split_once("://") else {
            return Err(invalid(
                "needs a scheme: write it as https://host, http://host:port or *://host",
            ));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => None,
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => return Err(invalid("the scheme must be http, https or *")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid(
                "names a path, a query or credentials: a grant is scheme://host[:port]",
            ));
        }
        let (host, port) = split_port(rest).map_err(&invalid)?;
        let port = match port {
            None => PortRule::SchemeDefault,
            Some("*") => PortRule::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => PortRule::Exact(p),
                _ => return Err(invalid("the port must be 1 to 65535, or *")),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostRule::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            check_name(domain).map_err(&invalid)?;
            HostRule::Subdomains(format!(".{domain}"))
        } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
            HostRule::Exact(host)
        } else {
            check_name(&host).map_err(&invalid)?;
            HostRule::Exact(host)
        };
        Ok(Self {
            written: grant.to_owned(),
            scheme,
            host,
            port,
        })
    }

    /// Whether this grant allows a request to `host` (lowercase, an IPv6 address without
    /// brackets) on `port` with `scheme`.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.is_none_or(|s| s == scheme);
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::SchemeDefault => port == scheme.default_port(),
            PortRule::Exact(p) => port == p,
        };
        let host_ok = match &self.host {
            HostRule::Any => true,
            HostRule::Exact(h) => h == host,
            HostRule::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        };
        scheme_ok && port_ok && host_ok
    }

    /// Whether this grant allows every request `ask` would: a plugin's ask is granted when
    /// one of its grants covers it.
    pub fn covers(&self, ask: &Grant) -> bool {
        let scheme_ok = self.scheme.is_none_or(|s| ask.scheme == Some(s));
        let default_port_is = |p: u16| ask.scheme.is_some_and(|s| s.default_port() == p);
        let port_ok = match (self.port, ask.port) {
            (PortRule::Any, _) => true,
            (_, PortRule::Any) => false,
            (PortRule::SchemeDefault, PortRule::SchemeDefault) => true,
            (PortRule::SchemeDefault, PortRule::Exact(p)) => {
                self.scheme.is_none_or(|s| s.default_port() == p) && default_port_is(p)
            }
            (PortRule::Exact(p), PortRule::SchemeDefault) => default_port_is(p),
            (PortRule::Exact(p), PortRule::Exact(q)) => p == q,
        };
        let host_ok = match (&self.host, &ask.host) {
            (HostRule::Any, _) => true,
            (HostRule::Exact(h), HostRule::Exact(a)) => h == a,
            (HostRule::Subdomains(suffix), HostRule::Exact(a)) => {
                a.len() > suffix.len() && a.ends_with(suffix.as_str())
            }
            (HostRule::Subdomains(suffix), HostRule::Subdomains(a)) => a.ends_with(suffix.as_str()),
            _ => false,
        };
        scheme_ok && port_ok && host_ok
    }

    /// Whether this grant names `host` itself, which lets it reach a loopback, link-local
    /// or private address.
    pub fn names(&self, host: &str) -> bool {
        matches!(&self.host, HostRule::Exact(h) if h == host)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// `host[:port]`, with an IPv6 address in brackets.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(inner) = authority.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("an IPv6 address needs its closing ]");
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("only :port may follow an IPv6 address"),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// A host name or IPv4 address: labels of letters, digits and hyphens.
fn check_name(host: &str) -> Result<(), &'static str> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(
            "the host must be a name (letters, digits, hyphens, dots), an address, * or *.domain",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> Grant {
        Grant::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_grant_allows_its_scheme_host_and_port() {
        let api = grant("https://API.example.com");
        assert!(api.allows(Scheme::Https, "api.example.com", 443));
        assert!(!api.allows(Scheme::Https, "api.example.com", 8443));
        assert!(!api.allows(Scheme::Http, "api.example.com", 80));
        assert!(!api.allows(Scheme::Https, "evil.example.com", 443));
        let local = grant("http://127.0.0.1:8080");
        assert!(local.allows(Scheme::Http, "127.0.0.1", 8080));
        assert!(local.names("127.0.0.1"));
        let any = grant("*://*.example.com:*");
        assert!(any.allows(Scheme::Http, "a.b.example.com", 1));
        assert!(!any.allows(Scheme::Https, "example.com", 443));
        assert!(!any.allows(Scheme::Https, "notexample.com", 443));
        assert!(!any.names("a.example.com"));
        let v6 = grant("https://[::1]:9443");
        assert!(v6.allows(Scheme::Https, "::1", 9443));
    }

    #[test]
    fn a_grant_covers_the_asks_it_allows_all_of() {
        for (granted, asked, covers) in [
            ("https://api.example.com", "https://api.example.com", true),
            (
                "https://api.example.com",
                "https://api.example.com:443",
                true,
            ),
            (
                "https://api.example.com:443",
                "https://api.example.com",
                true,
            ),
            ("https://api.example.com", "http://api.example.com", false),
            ("https://api.example.com", "*://api.example.com", false),
            ("*://api.example.com", "https://api.example.com", true),
            ("*://api.example.com", "*://api.example.com", true),
            ("*://api.example.com", "https://api.example.com:443", true),
            ("*://api.example.com", "https://api.example.com:80", false),
            (
                "https://api.example.com",
                "https://api.example.com:*",
                false,
            ),
            (
                "https://api.example.com:*",
                "https://api.example.com:8443",
                true,
            ),
            ("https://*.example.com", "https://api.example.com", true),
            ("https://*.example.com", "https://*.eu.example.com", true),
            ("https://*.example.com", "https://example.com", false),
            ("https://*.example.com", "https://*.com", false),
            ("https://api.example.com", "https://*.example.com", false),
            ("https://*", "https://anything.example.org", true),
            ("*://*:*", "*://*:*", true),
        ] {
            assert_eq!(
                grant(granted).covers(&grant(asked)),
                covers,
                "{granted} covers {asked}"
            );
        }
    }

    #[test]
    fn a_grant_that_cannot_be_read_says_why() {
        for (bad, says) in [
            ("api.example.com", "needs a scheme"),
            ("ftp://api.example.com", "http, https or *"),
            ("https://api.example.com/v1", "path"),
            ("https://user@api.example.com", "credentials"),
            ("https://api.example.com:0", "1 to 65535"),
            ("https://api.example.com:99999", "1 to 65535"),
            ("https://api .example.com", "space or a control character"),
            (
                "https://api\u{1b}[31m.example.com",
                "space or a control character",
            ),
            ("https://-api.example.com", "must be a name"),
            ("https://[::1", "closing ]"),
            ("https://", "must be a name"),
        ] {
            let e = Grant::parse(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(!e.to_string().contains('\u{1b}'), "{bad}: {e}");
        }
        let long = format!("https://{}.com", "a".repeat(MAX_GRANT_BYTES));
        let e = Grant::parse(&long).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert!(e.grant.len() < 200, "{}", e.grant);
    }
}
