//! Example plugin: on `email.requested`, send the mail through a mail API (config
//! `mail_api`, e.g. `https://api.mail.example/v1/send`; the host must grant it in
//! `[plugin.send-email] allowed_hosts`; its manifest asks for that host), with the
//! message's idempotency key so a retried message sends it once. Without `mail_api` it
//! logs the mail it would send.

use serde::Deserialize;
use serde_json::json;
use wharf_sdk::http::Request;
use wharf_sdk::log::{Level, log};
use wharf_sdk::{Manifest, Message, Plugin, Result, config, reject, retry};

#[derive(Deserialize)]
struct EmailRequested {
    to: String,
    subject: String,
}

/// The plugin.
pub struct SendEmail;

impl Plugin for SendEmail {
    fn manifest() -> Manifest {
        Manifest::new("send-email", env!("CARGO_PKG_VERSION"))
            .subscribe("email.requested")
            .calls("https://api.mail.example")
    }

    fn handle(message: &Message) -> Result<()> {
        let email: EmailRequested = message.json()?;
        let key = message.idempotency_key("send");
        let Some(api) = config::get("mail_api") else {
            log(
                Level::Info,
                &format!("sending email to {}: {}", email.to, email.subject),
                &[("idempotency_key", &key)],
            );
            return Ok(());
        };
        let response = Request::post(&api)
            .json(&json!({"to": email.to, "subject": email.subject}))
            .idempotency_key(message, "send")
            .send()?;
        match response.status {
            200..=299 => Ok(()),
            429 | 500..=599 => Err(retry(format!("the mail API answered {}", response.status))),
            status => Err(reject(format!("the mail API refused the mail: {status}"))),
        }
    }
}

wharf_sdk::export!(SendEmail);

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_sdk::testing::TestHost;

    fn email() -> Message {
        Message::new(
            "email.requested",
            &json!({"to": "a@example.com", "subject": "Hi"}),
        )
    }

    #[test]
    fn logs_the_mail_without_a_mail_api() {
        let mut host = TestHost::new();
        host.handle::<SendEmail>(&email()).unwrap();
        assert_eq!(host.logs()[0].message, "sending email to a@example.com: Hi");
    }

    #[test]
    fn posts_the_mail_with_the_message_idempotency_key() {
        let api = "https://mail.test/send";
        let mut host = TestHost::new()
            .config("mail_api", api)
            .respond("POST", api, 202, b"{}");
        let message = email();
        host.handle::<SendEmail>(&message).unwrap();
        let sent = &host.requests()[0];
        assert!(
            sent.headers
                .contains(&("idempotency-key".into(), message.idempotency_key("send")))
        );
        let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body["to"], "a@example.com");
    }

    #[test]
    fn a_failing_mail_api_is_retried_and_a_refusal_rejected() {
        let api = "https://mail.test/send";
        let mut host = TestHost::new()
            .config("mail_api", api)
            .respond("POST", api, 503, b"{}");
        assert!(matches!(
            host.handle::<SendEmail>(&email()),
            Err(wharf_sdk::Error::Retry { .. })
        ));
        let mut host = TestHost::new()
            .config("mail_api", api)
            .respond("POST", api, 400, b"{}");
        assert!(matches!(
            host.handle::<SendEmail>(&email()),
            Err(wharf_sdk::Error::Reject(_))
        ));
    }
}
