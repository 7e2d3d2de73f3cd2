//! Example plugin: on `order.created`, ask for a confirmation email by publishing
//! `email.requested` to the `emails` queue (handled by `send-email`).

use serde::Deserialize;
use serde_json::json;
use wharf_sdk::{Manifest, Message, Plugin, Result};

/// The `order.created` payload fields this plugin needs.
#[derive(Deserialize)]
struct OrderCreated {
    order_id: String,
    customer_email: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    quantity: u32,
}

/// The plugin.
pub struct SendConfirmation;

impl Plugin for SendConfirmation {
    fn manifest() -> Manifest {
        Manifest::new("send-confirmation", env!("CARGO_PKG_VERSION")).subscribe("order.created")
    }

    fn handle(message: &Message) -> Result<()> {
        let order: OrderCreated = message.json()?;
        if order.customer_email.is_empty() {
            return Err(wharf_sdk::reject("order has no customer_email"));
        }
        let items: u32 = order.items.iter().map(|i| i.quantity).sum();
        wharf_sdk::publish(
            "emails",
            "email.requested",
            &json!({
                "to": order.customer_email,
                "subject": format!("Order {} confirmed", order.order_id),
                "body": format!("Thank you! {items} item(s) are on their way."),
            }),
        )?;
        Ok(())
    }
}

wharf_sdk::export!(SendConfirmation);

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_sdk::testing::TestHost;

    #[test]
    fn publishes_one_email_request() {
        let mut host = TestHost::new();
        let order = json!({"order_id": "o-1", "customer_email": "a@example.com",
                           "items": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]});
        host.handle::<SendConfirmation>(&Message::new("order.created", &order))
            .unwrap();
        let [email] = host.published() else {
            panic!("expected one publish, got {:?}", host.published())
        };
        assert_eq!(email.kind, "email.requested");
        assert_eq!(email.json()["to"], "a@example.com");
        assert_eq!(
            email.json()["body"],
            "Thank you! 3 item(s) are on their way."
        );
    }

    #[test]
    fn malformed_payload_is_rejected_with_the_decode_error() {
        let mut host = TestHost::new();
        let err = host
            .handle::<SendConfirmation>(&Message::new("order.created", &json!({"order_id": 1})))
            .unwrap_err();
        assert!(
            matches!(&err, wharf_sdk::Error::Reject(r) if r.contains("invalid type")),
            "{err}"
        );
        assert!(host.published().is_empty());
    }
}
