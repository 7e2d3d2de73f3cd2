-- Retention deletes an ordering key's row once nothing carries its numbers, among them
-- unresolved failed messages of the key (sent back with their seq): found by this index.
ALTER TABLE failed_messages ADD KEY failed_messages_key (queue, ordering_key);
