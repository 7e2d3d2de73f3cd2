//! The seam between the SDK and whoever runs the handler: the wharf host (through the WIT
//! imports) on `wasm32`, or [`crate::testing::TestHost`] natively.

use std::time::Duration;

use crate::bindings::wharf::plugin0_2_0::types as wit;
use crate::bindings::wharf::plugin0_4_0::types as wit_0_4;
use crate::{Error, Manifest, Message, Plugin};

/// The `manifest` export: convert the plugin's manifest to the WIT type.
pub fn guest_manifest<P: Plugin>() -> wit_0_4::Manifest {
    let Manifest {
        name,
        version,
        subscriptions,
        retry,
        limits,
        allowed_hosts,
        ordered,
    } = P::manifest();
    wit_0_4::Manifest {
        name,
        version,
        subscriptions,
        retry: retry.map(|r| wit::RetryPolicy {
            max_retries: r.max_retries,
            base_delay_ms: millis(r.base_delay),
            multiplier: r.multiplier,
            max_delay_ms: millis(r.max_delay),
            jitter: r.jitter,
        }),
        limits: limits.map(|l| wit::Limits {
            memory_mib: l.memory_mib,
            deadline_ms: l.deadline.map(millis),
            fuel: l.fuel,
            max_concurrency: l.max_concurrency,
        }),
        allowed_hosts,
        ordered,
    }
}

/// `duration` in whole milliseconds, at most `u64::MAX` (a longer one is that, not its
/// low bits): the host caps a retry's delay at the policy's `max_delay` anyway.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The `handle` export: convert the message in and the outcome out.
pub fn guest_handle<P: Plugin>(message: wit_0_4::Message) -> Result<(), wit::HandlerError> {
    let message = Message {
        id: message.id,
        kind: message.kind,
        source: message.source,
        headers: message
            .headers
            .into_iter()
            .map(|h| (h.key, h.value))
            .collect(),
        payload: message.payload,
        attempt: message.attempt,
        key: message.key,
    };
    P::handle(&message).map_err(|e| match e {
        Error::Retry { reason, delay } => wit::HandlerError::Retry(wit::RetryRequest {
            reason,
            delay_ms: delay.map(millis),
        }),
        Error::Reject(reason) => wit::HandlerError::Reject(reason),
    })
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::wit;
    use crate::Outgoing;
    use crate::bindings::wharf::plugin0_2_0::{config, log, state};
    use crate::bindings::wharf::plugin0_5_0::reply;
    use crate::bindings::wharf::plugin0_6_0::{outbox, types as wit_0_6};
    use crate::requests::{Destination, Level};
    use crate::requests::{HttpError, Request, Response, Url};

    fn headers(pairs: &[(&str, &str)]) -> Vec<wit::Header> {
        pairs
            .iter()
            .map(|(k, v)| wit::Header {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect()
    }

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        log::log(level, message, &headers(fields));
    }

    pub fn publish(message: Outgoing, payload: &[u8]) -> crate::Result<String> {
        let destination = match message.destination {
            Destination::Queue(q) => wit_0_6::Destination::Queue(q),
            Destination::Exchange {
                exchange,
                routing_key,
            } => wit_0_6::Destination::Exchange(wit::ExchangeTarget {
                exchange,
                routing_key,
            }),
            Destination::Topic(topic) => wit_0_6::Destination::Topic(topic),
        };
        let headers = (message.headers.into_iter())
            .map(|(key, value)| wit::Header { key, value })
            .collect();
        outbox::publish(&wit_0_6::Outgoing {
            destination,
            kind: message.kind,
            headers,
            payload: payload.to_vec(),
            key: message.key,
        })
        .map_err(crate::reject)
    }

    pub fn reply(payload: &[u8], pairs: &[(&str, &str)]) -> crate::Result<()> {
        reply::send(&reply::Answer {
            headers: headers(pairs),
            payload: payload.to_vec(),
        })
        .map_err(crate::reject)
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }

    pub fn state_set(key: &str, value: &[u8]) {
        state::set(key, value)
    }

    pub fn state_delete(key: &str) {
        state::delete(key)
    }

    pub fn config_get(key: &str) -> Option<String> {
        config::get(key)
    }

    /// One exchange over `wasi:http`: the request sent, its body written after it (the
    /// host takes the body as it is sent), the response read whole.
    pub fn http_send(request: &Request) -> Result<Response, HttpError> {
        use wasip2::http::outgoing_handler;
        use wasip2::http::types::{
            ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
        };
        use wasip2::io::streams::StreamError;

        let failed = |e: ErrorCode| {
            HttpError(match e {
                ErrorCode::InternalError(Some(text)) => text,
                e => format!("{e:?}"),
            })
        };
        let url = Url::parse(&request.url)?;
        let mut pairs: Vec<(String, Vec<u8>)> = (request.headers.iter())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        // A body of known length is sent with it, not chunked.
        if !request.body.is_empty() && !pairs.iter().any(|(k, _)| k == "content-length") {
            pairs.push((
                "content-length".into(),
                request.body.len().to_string().into(),
            ));
        }
        let fields = Fields::from_list(&pairs)
            .map_err(|e| HttpError(format!("a header the host does not send: {e:?}")))?;
        let outgoing = OutgoingRequest::new(fields);
        let method = match request.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let scheme = match url.scheme {
            "http" => Scheme::Http,
            _ => Scheme::Https,
        };
        let invalid = |what: &str| HttpError(format!("invalid {what} in {:?}", request.url));
        outgoing
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        (outgoing.set_authority(Some(url.authority))).map_err(|()| invalid("host"))?;
        (outgoing.set_path_with_query(Some(url.path_and_query))).map_err(|()| invalid("path"))?;
        let body = outgoing.body().expect("a new request's body is there");
        let write = |body: OutgoingBody| {
            {
                let stream = body.write().expect("a new body's stream is there");
                for chunk in request.body.chunks(4096) {
                    if stream.blocking_write_and_flush(chunk).is_err() {
                        break;
                    }
                }
            }
            // A body the host refused is told by the response's error below.
            let _ = OutgoingBody::finish(body, None);
        };
        // A body of one chunk fits the host's buffer: written before the request is sent,
        // it goes out with the head. A longer one is written as the host sends it.
        let pending = if request.body.len() <= 4096 {
            write(body);
            outgoing_handler::handle(outgoing, None).map_err(failed)?
        } else {
            let pending = outgoing_handler::handle(outgoing, None).map_err(failed)?;
            write(body);
            pending
        };
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(failed(e)),
            Some(Err(())) | None => return Err(HttpError("the response was lost".into())),
        };
        let status = response.status();
        let headers = (response.headers().entries().into_iter())
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().expect("a response's body is there");
        let mut body = Vec::new();
        {
            let stream = incoming.stream().expect("a new body's stream is there");
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(match wasip2::http::types::http_error_code(&e) {
                            Some(code) => failed(code),
                            None => HttpError(format!(
                                "reading the response failed: {}",
                                e.to_debug_string()
                            )),
                        });
                    }
                }
            }
        }
        let _ = IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::Outgoing;
    use crate::requests::Level;
    use crate::requests::{HttpError, Request, Response};
    use crate::testing::with_current;

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        with_current(|h| h.log(level, message, fields))
    }

    pub fn publish(message: Outgoing, payload: &[u8]) -> crate::Result<String> {
        with_current(|h| h.publish(message, payload))
    }

    pub fn reply(payload: &[u8], headers: &[(&str, &str)]) -> crate::Result<()> {
        with_current(|h| h.reply(payload, headers))
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        with_current(|h| h.state_get(key))
    }

    pub fn state_set(key: &str, value: &[u8]) {
        with_current(|h| h.state_set(key, value))
    }

    pub fn state_delete(key: &str) {
        with_current(|h| h.state_delete(key))
    }

    pub fn config_get(key: &str) -> Option<String> {
        with_current(|h| h.config_get(key))
    }

    pub fn http_send(request: &Request) -> Result<Response, HttpError> {
        with_current(|h| h.http_send(request))
    }
}

pub use imp::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_longer_than_the_host_takes_is_the_most_it_takes() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_secs(u64::MAX / 999)), u64::MAX);
    }
}
