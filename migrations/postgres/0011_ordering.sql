-- Ordering by key: a message's ordering key and its place among the messages of its
-- (queue, key), 1, 2, ... in enqueue order, assigned in the enqueue transaction from
-- `ordering_keys` (the last number given per key).
ALTER TABLE inbox ADD COLUMN ordering_key text, ADD COLUMN seq bigint;
CREATE INDEX inbox_key_seq ON inbox (queue, ordering_key, seq) WHERE ordering_key IS NOT NULL;
CREATE TABLE ordering_keys (
    queue      text NOT NULL,
    key        text NOT NULL,
    last_seq   bigint NOT NULL,
    updated_at bigint NOT NULL,   -- Unix ms of the last message numbered
    PRIMARY KEY (queue, key)
);
