//! Calling other services from a handler: a small blocking HTTP client over the standard
//! `wasi:http` interface. The host sends only to the hosts its operator granted the plugin
//! (`[plugin.<name>] allowed_hosts`), within the call's deadline and limits; a refusal is
//! an [`HttpError`] naming the rule.
//!
//! A call to another service is at least once: a message is retried after a timeout or a
//! crash, and its call is made again. Give each effect an idempotency key
//! ([`Request::idempotency_key`]: the same on every retry of the message) and a service
//! that honours `Idempotency-Key` applies it once.
//!
//! ```no_run
//! # fn f(message: &wharf_sdk::Message) -> wharf_sdk::Result<()> {
//! use wharf_sdk::http::Request;
//! let response = Request::post("https://api.mail.example/v1/send")
//!     .json(&serde_json::json!({"to": "ada@example.com"}))
//!     .idempotency_key(message, "send-email")
//!     .send()?;
//! if !response.is_success() {
//!     return Err(wharf_sdk::retry(format!("mail API answered {}", response.status)));
//! }
//! # Ok(()) }
//! ```
//!
//! Redirects (301, 302, 303, 307, 308) are followed up to [`MAX_REDIRECTS`] times, each
//! checked by the host like the first request.

use crate::requests::Url;
pub use crate::requests::{HttpError, Request, Response};
use crate::{Error, Message};

/// How many redirects one [`Request::send`] follows.
pub const MAX_REDIRECTS: usize = 5;

impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        crate::retry(format!("HTTP request failed: {e}"))
    }
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` to `url`.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` to `url`.
    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    /// A `DELETE` of `url`.
    pub fn delete(url: &str) -> Self {
        Self::new("DELETE", url)
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Send `body` as it is.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Send `value` as JSON (`Content-Type: application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).expect("a value serializes to JSON");
        self.header("content-type", "application/json").body(body)
    }

    /// Set `Idempotency-Key` to `message.idempotency_key(label)`: the same for every
    /// attempt of this message, so a service that honours it applies the effect once.
    pub fn idempotency_key(self, message: &Message, label: &str) -> Self {
        let key = message.idempotency_key(label);
        self.header("idempotency-key", &key)
    }

    /// Send it and read the response, following redirects.
    pub fn send(self) -> Result<Response, HttpError> {
        let mut request = self;
        for _ in 0..=MAX_REDIRECTS {
            let response = crate::host::http_send(&request)?;
            let Some(next) = request.redirected(&response)? else {
                return Ok(response);
            };
            request = next;
        }
        Err(HttpError(format!(
            "more than {MAX_REDIRECTS} redirects, the last to {}",
            request.url
        )))
    }

    /// The request a redirect asks for, if `response` is one.
    fn redirected(&self, response: &Response) -> Result<Option<Self>, HttpError> {
        if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(None);
        }
        let Some(location) = response.header("location") else {
            return Ok(None);
        };
        let url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else if location.starts_with('/') && !location.starts_with("//") {
            let target = Url::parse(&self.url)?;
            format!("{}://{}{location}", target.scheme, target.authority)
        } else {
            return Err(HttpError(format!(
                "a redirect to {location:?}, which is neither a URL nor an absolute path"
            )));
        };
        let keeps_body = matches!(response.status, 307 | 308);
        let mut next = self.clone();
        next.url = url;
        if !keeps_body && self.method != "HEAD" {
            next.method = "GET".into();
            next.body.clear();
            next.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        }
        Ok(Some(next))
    }
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError(format!("the response is not the JSON expected: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_cut_into_scheme_authority_and_path() {
        let u = Url::parse("https://api.example.com:8443/v1/send?x=1#frag").unwrap();
        assert_eq!(
            (u.scheme, u.authority, u.path_and_query),
            ("https", "api.example.com:8443", "/v1/send?x=1")
        );
        assert_eq!(Url::parse("http://h").unwrap().path_and_query, "/");
        assert_eq!(Url::parse("http://h?q").unwrap().path_and_query, "?q");
        for bad in ["ftp://h/", "h/x", "https:///x"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_redirect_is_followed_as_its_status_says() {
        let post = Request::post("http://a.test/x")
            .json(&serde_json::json!({}))
            .header("idempotency-key", "k");
        let redirect = |status, location: &str| Response {
            status,
            headers: vec![("location".into(), location.into())],
            body: vec![],
        };
        let next = post.redirected(&redirect(303, "/y")).unwrap().unwrap();
        assert_eq!(
            (next.method.as_str(), next.url.as_str()),
            ("GET", "http://a.test/y")
        );
        assert!(next.body.is_empty());
        assert_eq!(next.headers, vec![("idempotency-key".into(), "k".into())]);
        let next = post
            .redirected(&redirect(307, "https://b.test/z"))
            .unwrap()
            .unwrap();
        assert_eq!((next.method.as_str(), next.body.len()), ("POST", 2));
        assert!(post.redirected(&redirect(200, "/y")).unwrap().is_none());
        assert!(post.redirected(&redirect(302, "//evil.test/")).is_err());
    }
}
