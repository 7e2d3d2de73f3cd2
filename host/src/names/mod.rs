//! The rules for what a message carries besides its body: kind, inbox queue, exchange,
//! routing key, headers; and for the state keys a handler writes. One code path checks
//! them wherever a message enters wharf (`wharf publish`, AMQP deliveries, plugin
//! publishes), so a name that would bloat a table, a log line or a dashboard, or that a
//! database or the broker cannot store, is refused at the door with the rule it breaks.
//!
//! | what | length | characters |
//! |---|---|---|
//! | kind, inbox queue | 1-255 bytes | ASCII letters, digits, `.` `_` `-` `:` `/` |
//! | exchange | 0-255 bytes (empty: the default exchange) | the same |
//! | routing key | 0-255 bytes | printable ASCII, no spaces |
//! | header key | 1-255 bytes | printable ASCII, no spaces |
//! | header value | 0-8 KiB | text without control characters (tab and line breaks allowed) |
//! | headers | at most 100, 64 KiB in all | |
//! | state key | 1-1024 bytes | the same |
//! | ordering key | 1-255 bytes | the same |
//! | Kafka topic | 1-249 bytes, not `.` or `..` | ASCII letters, digits, `.` `_` `-` |

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::effects::{Destination, Publish};
use crate::envelope::KEY_HEADER;

/// Longest kind, queue, exchange, routing key or header key, in bytes (AMQP's short
/// strings).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 << 10;
/// Most headers on one message.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of all header keys and values of one message.
pub const MAX_HEADERS_BYTES: usize = 64 << 10;
/// The header where the host names a consumed record's dead-letter topic
/// (`crate::dead_letter_topic`); no publisher may set it.
pub const DEAD_LETTER_TOPIC_HEADER: &str = "x-wharf-dead-letter-topic";
/// Longest state key, in bytes.
pub const MAX_STATE_KEY_BYTES: usize = 1024;

/// A name or header that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// Empty where a value is needed.
    #[error("{what} is empty")]
    Empty {
        /// What it names, e.g. "message kind".
        what: &'static str,
    },
    /// Longer than its limit.
    #[error("{what} {shown} is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        /// What it names.
        what: &'static str,
        /// Its start, quoted.
        shown: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Holds a character its kind of name may not.
    #[error("{what} {shown} contains {found:?}; allowed: {allowed}")]
    Character {
        /// What it names.
        what: &'static str,
        /// Its start, quoted.
        shown: String,
        /// The first character that is not allowed.
        found: char,
        /// The characters that are.
        allowed: &'static str,
    },
    /// A name the other side keeps for itself.
    #[error("{what} {shown} is reserved")]
    Reserved {
        /// What it names.
        what: &'static str,
        /// It, quoted.
        shown: String,
    },
    /// More headers than allowed.
    #[error("{count} headers, over the limit of {MAX_HEADERS}")]
    TooManyHeaders {
        /// How many there are.
        count: usize,
    },
    /// Headers larger than allowed in all.
    #[error("headers of {bytes} bytes in all, over the limit of {MAX_HEADERS_BYTES} bytes")]
    HeadersTooLarge {
        /// Bytes of keys and values.
        bytes: usize,
    },
}

/// What one kind of name must be.
struct Rule {
    /// What it names, for errors.
    what: &'static str,
    /// Shortest, in bytes.
    min: usize,
    /// Longest, in bytes.
    max: usize,
    /// Its characters...
    allowed: fn(char) -> bool,
    /// ...as the errors say it.
    allowed_text: &'static str,
}

const KIND: Rule = Rule::name("message kind", 1);
const QUEUE: Rule = Rule::name("queue name", 1);
const EXCHANGE: Rule = Rule::name("exchange name", 0);
const ROUTING_KEY: Rule = Rule::key("routing key", 0);
const HEADER_KEY: Rule = Rule::key("header key", 1);
const HEADER_VALUE: Rule = Rule::text("header value", 0, MAX_HEADER_VALUE_BYTES);
const STATE_KEY: Rule = Rule::text("state key", 1, MAX_STATE_KEY_BYTES);
const ORDERING_KEY: Rule = Rule::text("ordering key", 1, MAX_NAME_BYTES);
const PLUGIN: Rule = Rule {
    what: "plugin name",
    min: 1,
    max: MAX_PLUGIN_NAME_BYTES,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
    allowed_text: "ASCII letters, digits, '-', '_' and '.'",
};

const TOPIC: Rule = Rule {
    what: "Kafka topic",
    min: 1,
    max: MAX_TOPIC_BYTES,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    allowed_text: "ASCII letters, digits, '.', '_' and '-'",
};

/// Longest Kafka topic name, in bytes (Kafka's own limit).
pub const MAX_TOPIC_BYTES: usize = 249;

/// Longest plugin name (a manifest's `name`), in bytes.
pub const MAX_PLUGIN_NAME_BYTES: usize = 64;

/// A plugin's name, as its manifest gives it.
pub fn plugin(name: &str) -> Result<(), InvalidName> {
    PLUGIN.check(name)
}

/// A message kind.
pub fn kind(name: &str) -> Result<(), InvalidName> {
    KIND.check(name)
}

/// An inbox queue.
pub fn queue(name: &str) -> Result<(), InvalidName> {
    QUEUE.check(name)
}

/// An AMQP exchange ("" is the default exchange).
pub fn exchange(name: &str) -> Result<(), InvalidName> {
    EXCHANGE.check(name)
}

/// An AMQP routing key.
pub fn routing_key(key: &str) -> Result<(), InvalidName> {
    ROUTING_KEY.check(key)
}

/// A Kafka topic (which is also a valid inbox queue name).
pub fn topic(name: &str) -> Result<(), InvalidName> {
    TOPIC.check(name)?;
    match name {
        "." | ".." => Err(InvalidName::Reserved {
            what: TOPIC.what,
            shown: shown(name),
        }),
        _ => Ok(()),
    }
}

/// A header key.
pub fn header_key(key: &str) -> Result<(), InvalidName> {
    HEADER_KEY.check(key)
}

/// A state key.
pub fn state_key(key: &str) -> Result<(), InvalidName> {
    STATE_KEY.check(key)
}

/// A message's ordering key: the messages of one key are handled in publish order.
pub fn ordering_key(key: &str) -> Result<(), InvalidName> {
    ORDERING_KEY.check(key)
}

/// The headers of one message: each key and value, their number and their size; none
/// the host keeps for itself ([`DEAD_LETTER_TOPIC_HEADER`]).
pub fn headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), InvalidName> {
    let (mut count, mut bytes) = (0, 0);
    for (key, value) in headers {
        HEADER_KEY.check(key)?;
        if key.eq_ignore_ascii_case(DEAD_LETTER_TOPIC_HEADER) {
            return Err(InvalidName::Reserved {
                what: "header",
                shown: format!("{key:?} (the host names a record's dead-letter topic there)"),
            });
        }
        HEADER_VALUE.check(value)?;
        count += 1;
        bytes += key.len() + value.len();
    }
    if count > MAX_HEADERS {
        return Err(InvalidName::TooManyHeaders { count });
    }
    if bytes > MAX_HEADERS_BYTES {
        return Err(InvalidName::HeadersTooLarge { bytes });
    }
    Ok(())
}

/// A message to publish: where it goes, its kind, its headers and its ordering key.
pub fn publish(
    destination: &Destination,
    kind: &str,
    headers: &BTreeMap<String, String>,
    key: Option<&str>,
) -> Result<(), InvalidName> {
    if let Some(key) = key {
        ordering_key(key)?;
    }
    match destination {
        Destination::Queue(name) => queue(name)?,
        Destination::Exchange {
            exchange: name,
            routing_key: key,
        } => {
            exchange(name)?;
            routing_key(key)?;
        }
        Destination::Topic(name) => topic(name)?,
    }
    self::kind(kind)?;
    header_map(headers)
}

/// A message `id` for `destination`, checked by [`publish`]; to an exchange, its ordering
/// key goes in the [`KEY_HEADER`] header, where a consumer of the queue reads it.
pub fn checked_publish(
    id: Uuid,
    destination: Destination,
    kind: String,
    mut headers: BTreeMap<String, String>,
    payload: Vec<u8>,
    key: Option<String>,
) -> Result<Publish, InvalidName> {
    let to_exchange = matches!(destination, Destination::Exchange { .. });
    if let (true, Some(key)) = (to_exchange, &key) {
        headers.insert(KEY_HEADER.to_owned(), key.clone());
    }
    publish(&destination, &kind, &headers, key.as_deref())?;
    Ok(Publish {
        id,
        destination,
        kind,
        headers,
        payload,
        key: key.filter(|_| !to_exchange),
    })
}

/// [`headers`] of a header map.
pub fn header_map(map: &BTreeMap<String, String>) -> Result<(), InvalidName> {
    headers(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// `text` as it can be stored and shown whatever it holds: control characters replaced
/// and cut to the name limit (for a refused message's kind, say).
pub fn storable(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if shown.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES - '…'.len_utf8();
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    shown
}

/// Whether `text` holds no control characters but tab and line breaks (the characters of
/// header values and state keys).
pub fn is_text(text: &str) -> bool {
    text.chars().all(is_text_char)
}

fn is_text_char(c: char) -> bool {
    !c.is_control() || matches!(c, '\t' | '\n' | '\r')
}

impl Rule {
    /// Kinds, queues and exchanges.
    const fn name(what: &'static str, min: usize) -> Self {
        Self {
            what,
            min,
            max: MAX_NAME_BYTES,
            allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'),
            allowed_text: "ASCII letters, digits, '.', '_', '-', ':' and '/'",
        }
    }

    /// Routing keys and header keys.
    const fn key(what: &'static str, min: usize) -> Self {
        Self {
            what,
            min,
            max: MAX_NAME_BYTES,
            allowed: |c| c.is_ascii_graphic(),
            allowed_text: "printable ASCII without spaces",
        }
    }

    /// Header values and state keys.
    const fn text(what: &'static str, min: usize, max: usize) -> Self {
        Self {
            what,
            min,
            max,
            allowed: is_text_char,
            allowed_text: "text without control characters (tab and line breaks allowed)",
        }
    }

    fn check(&self, value: &str) -> Result<(), InvalidName> {
        let what = self.what;
        if value.len() < self.min {
            return Err(InvalidName::Empty { what });
        }
        if value.len() > self.max {
            return Err(InvalidName::TooLong {
                what,
                shown: shown(value),
                len: value.len(),
                max: self.max,
            });
        }
        match value.chars().find(|c| !(self.allowed)(*c)) {
            Some(found) => Err(InvalidName::Character {
                what,
                shown: shown(value),
                found,
                allowed: self.allowed_text,
            }),
            None => Ok(()),
        }
    }
}

/// The start of `value`, quoted, for an error message.
fn shown(value: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    let start: String = value.chars().take(SHOWN_CHARS).collect();
    if start.len() < value.len() {
        format!("{start:?}…")
    } else {
        format!("{start:?}")
    }
}

#[cfg(test)]
mod tests;
