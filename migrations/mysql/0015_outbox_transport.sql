-- The outbox serves two relays: AMQP (`exchange`, `routing_key`) and Kafka (`exchange`
-- holds the topic, `ordering_key` the record's key, NULL for none). Each relay takes only
-- the unsent rows of its own transport, oldest first.
ALTER TABLE outbox
    ADD COLUMN transport VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'amqp',
    ADD COLUMN ordering_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    DROP KEY outbox_unsent,
    ADD KEY outbox_unsent (transport, sent_at, seq);
