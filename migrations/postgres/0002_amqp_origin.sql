-- Dead letters of messages consumed from AMQP remember where they were published, so
-- `wharf failed retry` can republish them there. NULL for inbox messages.
ALTER TABLE failed_messages ADD COLUMN source_exchange text;
ALTER TABLE failed_messages ADD COLUMN source_routing_key text;
