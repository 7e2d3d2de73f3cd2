//! The input of `wharf publish --ndjson`: one message per line, a JSON object
//! `{"message": <payload>, "id"?: "<uuid>", "kind"?: "<kind>", "key"?: "<ordering key>",
//! "headers"?: {"k": "v"}}` (the HTTP API's publish shape). `--kind`, `--key` and
//! `--header` give defaults; blank lines are
//! skipped. A line that cannot be read is an error naming its number. [`Message`] is what
//! `wharf publish` sends, from a line or from its flags.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{Context, bail};
use serde::Deserialize;
use uuid::Uuid;

/// One message to publish.
#[derive(Debug)]
pub(super) struct Message {
    /// Its line of the `--ndjson` input.
    pub line: Option<usize>,
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// Its body.
    pub payload: Vec<u8>,
    /// Its ordering key.
    pub key: Option<String>,
}

/// What the lines that give none get.
pub(super) struct Defaults<'a> {
    /// Kind.
    pub kind: Option<&'a str>,
    /// Ordering key.
    pub key: Option<&'a str>,
    /// Headers (a line's own win).
    pub headers: &'a BTreeMap<String, String>,
}

/// One line as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    message: serde_json::Value,
    id: Option<Uuid>,
    kind: Option<String>,
    key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The messages of `input`, with `defaults` for what a line does not give.
pub(super) fn read(input: impl BufRead, defaults: &Defaults) -> anyhow::Result<Vec<Message>> {
    let mut messages = Vec::new();
    for (i, text) in input.lines().enumerate() {
        let number = i + 1;
        let text = text.with_context(|| format!("cannot read line {number}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text).with_context(|| {
            format!("line {number} is not a message object like {{\"message\": {{...}}, \"kind\": \"order.created\"}}")
        })?;
        let Some(kind) = line.kind.as_deref().or(defaults.kind) else {
            bail!("line {number} has no kind: give it \"kind\", or pass --kind");
        };
        let mut all = defaults.headers.clone();
        all.extend(line.headers);
        messages.push(Message {
            line: Some(number),
            id: line.id.unwrap_or_else(Uuid::now_v7),
            kind: kind.to_owned(),
            headers: all,
            payload: serde_json::to_vec(&line.message)?,
            key: line.key.or_else(|| defaults.key.map(str::to_owned)),
        });
    }
    if messages.is_empty() {
        bail!("the input holds no messages (one JSON object per line)");
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_the_defaults_and_errors_name_the_line() {
        let headers: BTreeMap<String, String> = [("source".into(), "import".into())].into();
        let defaults = Defaults {
            kind: Some("a"),
            key: Some("order-1"),
            headers: &headers,
        };
        let input = "{\"message\": {\"n\": 1}}\n\n{\"message\": 2, \"kind\": \"b\", \"key\": \"order-2\", \"id\": \"01a2335d-3001-71d2-a3a4-6a1353ef607b\", \"headers\": {\"source\": \"x\"}}\n";
        let messages = read(input.as_bytes(), &defaults).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            (messages[0].line, messages[0].kind.as_str()),
            (Some(1), "a")
        );
        assert_eq!(messages[0].payload, br#"{"n":1}"#);
        assert_eq!(messages[0].headers["source"], "import");
        assert_eq!(messages[0].key.as_deref(), Some("order-1"));
        assert_eq!(
            (messages[1].line, messages[1].kind.as_str()),
            (Some(3), "b")
        );
        assert_eq!(
            messages[1].id.to_string(),
            "01a2335d-3001-71d2-a3a4-6a1353ef607b"
        );
        assert_eq!(messages[1].headers["source"], "x");
        assert_eq!(messages[1].key.as_deref(), Some("order-2"));

        let error = read("{\"message\": 1}\n{\"payload\": 1}\n".as_bytes(), &defaults).unwrap_err();
        assert!(
            format!("{error:#}").starts_with("line 2 is not a message object"),
            "{error:#}"
        );
        let error = read("{\"message\": 1, \"key\": 7}\n".as_bytes(), &defaults).unwrap_err();
        assert!(
            format!("{error:#}").starts_with("line 1 is not a message object"),
            "{error:#}"
        );
        let no_kind = Defaults {
            kind: None,
            ..defaults
        };
        let error = read("{\"message\": 1}\n".as_bytes(), &no_kind).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1 has no kind: give it \"kind\", or pass --kind"
        );
        assert!(read("\n".as_bytes(), &defaults).is_err());
    }
}
