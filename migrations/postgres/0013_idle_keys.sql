-- Retention deletes an ordering key's row once nothing carries its numbers, among them
-- unresolved failed messages of the key (sent back with their seq): found by this index.
CREATE INDEX failed_messages_key ON failed_messages (queue, ordering_key)
    WHERE ordering_key IS NOT NULL;
