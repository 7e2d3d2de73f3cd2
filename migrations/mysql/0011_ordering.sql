-- Ordering by key: a message's ordering key and its place among the messages of its
-- (queue, key), 1, 2, ... in enqueue order, assigned in the enqueue transaction from
-- `ordering_keys` (the last number given per key).
ALTER TABLE inbox
    ADD COLUMN ordering_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD COLUMN seq BIGINT NULL,
    ADD KEY inbox_key_seq (queue, ordering_key, seq);
CREATE TABLE ordering_keys (
    queue      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `key`      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    last_seq   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,   -- Unix ms of the last message numbered
    PRIMARY KEY (queue, `key`)
) ENGINE = InnoDB;
