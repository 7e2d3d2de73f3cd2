//! Example plugin: on `email.requested`, "send" the mail by logging it. A real one would
//! call a mail API with `message.idempotency_key("send")` as its idempotency key.

use serde::Deserialize;
use wharf_sdk::log::{Level, log};
use wharf_sdk::{Manifest, Message, Plugin, Result};

#[derive(Deserialize)]
struct EmailRequested {
    to: String,
    subject: String,
}

/// The plugin.
pub struct SendEmail;

impl Plugin for SendEmail {
    fn manifest() -> Manifest {
        Manifest::new("send-email", env!("CARGO_PKG_VERSION")).subscribe("email.requested")
    }

    fn handle(message: &Message) -> Result<()> {
        let email: EmailRequested = message.json()?;
        let key = message.idempotency_key("send");
        log(
            Level::Info,
            &format!("sending email to {}: {}", email.to, email.subject),
            &[("idempotency_key", &key)],
        );
        Ok(())
    }
}

wharf_sdk::export!(SendEmail);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wharf_sdk::testing::TestHost;

    #[test]
    fn logs_the_mail() {
        let mut host = TestHost::new();
        let msg = Message::new(
            "email.requested",
            &json!({"to": "a@example.com", "subject": "Hi"}),
        );
        host.handle::<SendEmail>(&msg).unwrap();
        assert_eq!(host.logs()[0].message, "sending email to a@example.com: Hi");
    }
}
