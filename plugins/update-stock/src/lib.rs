//! Example plugin: on `order.created`, decrement the stock of each item (kept in plugin
//! state as `stock:<sku>`, starting at the `initial_stock` config value) and publish
//! `stock.low` to the `inventory` AMQP exchange (through the outbox) when a sku drops
//! below `low_stock_threshold`.

use serde::Deserialize;
use serde_json::json;
use wharf_sdk::{Manifest, Message, Plugin, Result, config, state};

#[derive(Deserialize)]
struct OrderCreated {
    order_id: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    quantity: i64,
}

/// The plugin.
pub struct UpdateStock;

impl Plugin for UpdateStock {
    fn manifest() -> Manifest {
        Manifest::new("update-stock", env!("CARGO_PKG_VERSION")).subscribe("order.created")
    }

    fn handle(message: &Message) -> Result<()> {
        let order: OrderCreated = message.json()?;
        let initial: i64 = config::get_or("initial_stock", 100)?;
        let threshold: i64 = config::get_or("low_stock_threshold", 10)?;
        for item in &order.items {
            let key = format!("stock:{}", item.sku);
            let before = state::get_json::<i64>(&key)?.unwrap_or(initial);
            let after = before - item.quantity;
            state::set_json(&key, &after);
            if after < threshold && before >= threshold {
                wharf_sdk::publish_to_exchange(
                    "inventory",
                    "stock.low",
                    "stock.low",
                    &json!({"sku": item.sku, "stock": after, "order_id": order.order_id}),
                )?;
            }
        }
        Ok(())
    }
}

wharf_sdk::export!(UpdateStock);

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_sdk::testing::TestHost;

    fn order(qty: i64) -> Message {
        Message::new(
            "order.created",
            &json!({"order_id": "o-1", "customer_email": "a@example.com",
                    "items": [{"sku": "A", "quantity": qty}]}),
        )
    }

    #[test]
    fn decrements_stock_and_warns_once_below_threshold() {
        let mut host = TestHost::new()
            .config("initial_stock", "12")
            .config("low_stock_threshold", "10");
        host.handle::<UpdateStock>(&order(1)).unwrap();
        assert_eq!(host.state_json("stock:A"), Some(json!(11)));
        assert!(host.published().is_empty());
        host.handle::<UpdateStock>(&order(2)).unwrap();
        host.handle::<UpdateStock>(&order(1)).unwrap();
        assert_eq!(host.state_json("stock:A"), Some(json!(8)));
        let [low] = host.published() else {
            panic!("expected one stock.low, got {:?}", host.published())
        };
        assert_eq!(low.json()["stock"], 9);
    }

    #[test]
    fn bad_config_is_a_reject_naming_the_key() {
        let mut host = TestHost::new().config("initial_stock", "lots");
        let err = host.handle::<UpdateStock>(&order(1)).unwrap_err();
        assert!(err.to_string().contains("initial_stock"), "{err}");
        assert_eq!(host.state_value("stock:A"), None);
    }
}
