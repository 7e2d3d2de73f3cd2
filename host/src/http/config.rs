//! `[http]`: where the admin API listens and who may call it. Off unless `listen` is set
//! (several hosts often share a machine; a fixed default port would collide). Tokens come
//! from the file's `tokens`, `WHARF_HTTP_TOKENS` (`name:scope:secret,...`), or
//! `tokens_file` (one `name:scope:secret` per line); the API refuses to listen beyond
//! loopback with none.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::setting::InvalidSetting;

/// Shortest secret accepted.
const MIN_SECRET_CHARS: usize = 16;
/// The longest any of the API's timeouts may be, in ms.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the API, e.g. `127.0.0.1:8011`; unset: no HTTP server.
    pub listen: Option<String>,
    /// Bearer tokens: a list of `{ name, scope, token }`, or (from the environment) a
    /// string `name:scope:secret,...`.
    #[serde(deserialize_with = "tokens")]
    pub tokens: Vec<Token>,
    /// A file of more tokens, one `name:scope:secret` per line.
    pub tokens_file: Option<PathBuf>,
    /// Largest request body, in bytes (a plugin upload is one); a larger declared
    /// `Content-Length` is refused before the body is read.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers, in ms; then its connection closes.
    pub header_timeout_ms: u64,
    /// Time a client has to send a request's body, from its headers on, in ms.
    pub body_timeout_ms: u64,
    /// When the host stops: time the requests in flight have to finish, in ms; then their
    /// connections close (idle ones close at once).
    pub shutdown_grace_ms: u64,
    /// The longest a caller of `POST /api/messages/request` may wait for an answer
    /// (`timeout_ms`), in ms.
    pub max_request_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tokens: Vec::new(),
            tokens_file: None,
            max_body_bytes: 64 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            shutdown_grace_ms: 5_000,
            max_request_timeout_ms: 60_000,
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read-only calls.
    Read,
    /// Every call, including those that change something.
    Operate,
}

/// One bearer token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who holds it: recorded with what they do.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// The secret.
    pub token: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("token", &"(hidden)")
            .finish()
    }
}

impl Token {
    /// `name:scope:secret`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().splitn(3, ':');
        let (Some(name), Some(scope), Some(token)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("a token must look like name:scope:secret".to_owned());
        };
        let scope = match scope {
            "read" => Scope::Read,
            "operate" => Scope::Operate,
            other => {
                return Err(format!(
                    "scope {other:?} of token {name:?} must be read or operate"
                ));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            scope,
            token: token.to_owned(),
        })
    }
}

/// `tokens` as a list of tables, or as one `name:scope:secret,...` string.
fn tokens<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Token>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<Token>),
        Text(String),
    }
    match Given::deserialize(deserializer)? {
        Given::List(tokens) => Ok(tokens),
        Given::Text(text) => text
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(Token::parse)
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom),
    }
}

impl HttpConfig {
    /// The address to listen on, if any.
    pub fn address(&self) -> Result<Option<SocketAddr>, InvalidSetting> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        listen.parse().map(Some).map_err(|_| {
            InvalidSetting::new(
                "http.listen",
                format!("{listen:?} is not an address like 127.0.0.1:8011"),
            )
        })
    }

    /// Ranges, and tokens whenever the API listens beyond loopback (`tokens` is all
    /// there is at this point; `tokens_file` is read when the server starts).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |problem: String| Err(InvalidSetting::new("http.tokens", problem));
        for token in &self.tokens {
            if token.name.is_empty() {
                return invalid("a token has an empty name".into());
            }
            if token.token.chars().count() < MIN_SECRET_CHARS {
                return invalid(format!(
                    "the secret of token {:?} is shorter than {MIN_SECRET_CHARS} characters",
                    token.name
                ));
            }
        }
        let address = self.address()?;
        let open = address.is_some_and(|a| !a.ip().is_loopback());
        if open && self.tokens.is_empty() && self.tokens_file.is_none() {
            return Err(InvalidSetting::new(
                "http.listen",
                format!(
                    "refusing to serve the HTTP API on {} without tokens: set [http] tokens, WHARF_HTTP_TOKENS or http.tokens_file, or listen on 127.0.0.1",
                    self.listen.as_deref().unwrap_or_default()
                ),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(InvalidSetting::new(
                "http.max_body_bytes",
                "must be greater than 0",
            ));
        }
        let times = [
            ("http.header_timeout_ms", self.header_timeout_ms),
            ("http.body_timeout_ms", self.body_timeout_ms),
            ("http.shutdown_grace_ms", self.shutdown_grace_ms),
            ("http.max_request_timeout_ms", self.max_request_timeout_ms),
        ];
        if let Some((key, _)) = times
            .into_iter()
            .find(|(_, ms)| !(1..=MAX_TIMEOUT_MS).contains(ms))
        {
            return Err(InvalidSetting::new(
                key,
                format!("must be between 1 and {MAX_TIMEOUT_MS} (an hour)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_an_open_address_needs_one() {
        let token = Token::parse("ops:operate:0123456789abcdef0123").unwrap();
        assert_eq!((token.name.as_str(), token.scope), ("ops", Scope::Operate));
        assert!(
            !format!("{token:?}").contains("0123456789"),
            "the secret is not logged"
        );
        assert!(
            Token::parse("ops:admin:x")
                .unwrap_err()
                .contains("read or operate")
        );
        assert!(Token::parse("ops").is_err());

        let mut config = HttpConfig {
            listen: Some("0.0.0.0:8011".into()),
            ..HttpConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("refusing to serve the HTTP API on 0.0.0.0:8011 without tokens"),
            "{error}"
        );
        config.listen = Some("127.0.0.1:8011".into());
        config.validate().unwrap();
        config.listen = Some("localhost".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("not an address")
        );
        config.listen = Some("0.0.0.0:8011".into());
        config.tokens = vec![Token::parse("ops:read:short").unwrap()];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("shorter than 16")
        );
    }

    #[test]
    fn timeouts_are_between_a_millisecond_and_an_hour() {
        for (key, config) in [
            (
                "http.header_timeout_ms",
                HttpConfig {
                    header_timeout_ms: 0,
                    ..HttpConfig::default()
                },
            ),
            (
                "http.body_timeout_ms",
                HttpConfig {
                    body_timeout_ms: 3_600_001,
                    ..HttpConfig::default()
                },
            ),
            (
                "http.shutdown_grace_ms",
                HttpConfig {
                    shutdown_grace_ms: 0,
                    ..HttpConfig::default()
                },
            ),
        ] {
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains("between 1 and 3600000"),
                "{error}"
            );
        }
        HttpConfig::default().validate().unwrap();
    }
}
