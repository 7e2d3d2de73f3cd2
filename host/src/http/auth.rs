//! Who calls: the bearer token of a request, compared in constant time with every
//! configured one. [`Reader`] and [`Operator`] are extractors: a handler that takes one
//! answers 401 without a known token, and an [`Operator`] handler 403 to a `read` token.

use std::sync::Arc;

use anyhow::Context;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::Api;
use super::config::{HttpConfig, Scope, Token};
use super::error::ApiError;

/// The tokens the API accepts.
#[derive(Debug, Default)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// The tokens of `config`, and of its `tokens_file`, read now.
    pub fn from_config(config: &HttpConfig) -> anyhow::Result<Self> {
        let mut tokens = config.tokens.clone();
        if let Some(file) = &config.tokens_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read http.tokens_file {}", file.display()))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                let token = Token::parse(line).map_err(|e| {
                    anyhow::anyhow!("http.tokens_file {} line {}: {e}", file.display(), i + 1)
                })?;
                tokens.push(token);
            }
        }
        Ok(Self(tokens))
    }

    /// The token whose secret is `secret`, checking every one without stopping early.
    fn find(&self, secret: &str) -> Option<&Token> {
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.token.as_bytes().ct_eq(secret.as_bytes())) {
                found = Some(token);
            }
        }
        found
    }

    /// The caller of `parts` (its token's name and scope), with at least `scope`.
    fn caller(&self, parts: &Parts, scope: Scope) -> Result<(String, Scope), ApiError> {
        let unauthorized = |why: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("{why}: send Authorization: Bearer <token> with a token of [http] tokens"),
            )
        };
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("no token"))?;
        // The scheme is case-insensitive (RFC 7235): `Bearer`, `bearer`, `BEARER`.
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret)
            .ok_or_else(|| unauthorized("the Authorization header is not a bearer token"))?;
        let token = self
            .find(secret.trim())
            .ok_or_else(|| unauthorized("unknown token"))?;
        if token.scope < scope {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} may only read; this call needs a token with scope operate",
                    token.name
                ),
            ));
        }
        Ok((token.name.clone(), token.scope))
    }
}

/// A caller with a `read` or `operate` token: its name and scope.
#[derive(Debug)]
pub struct Reader {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// A caller with an `operate` token: its name.
#[derive(Debug)]
pub struct Operator(pub String);

impl FromRequestParts<Arc<Api>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let (name, scope) = api.tokens.caller(parts, Scope::Read)?;
        Ok(Self { name, scope })
    }
}

impl FromRequestParts<Arc<Api>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        api.tokens
            .caller(parts, Scope::Operate)
            .map(|(name, _)| Self(name))
    }
}
