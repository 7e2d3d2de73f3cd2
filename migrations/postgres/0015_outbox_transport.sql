-- The outbox serves two relays: AMQP (`exchange`, `routing_key`) and Kafka (`exchange`
-- holds the topic, `ordering_key` the record's key, NULL for none). Each relay takes only
-- the unsent rows of its own transport, oldest first.
ALTER TABLE outbox
    ADD COLUMN transport text NOT NULL DEFAULT 'amqp',
    ADD COLUMN ordering_key text;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (transport, seq) WHERE sent_at IS NULL;
