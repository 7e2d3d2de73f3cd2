-- Ordered plugins: one message per (plugin, key) at a time, in `seq` order.
-- `holds`: the ordered plugins that still owe a verdict on a message, space-separated, set
-- by every settle that keeps it (NULL until its first run: it holds every plugin then).
-- `parked`: every plugin it still owes waits for an earlier message of its key; it is
-- woken by the settle that lets one of them go on. `ordering_keys.turn` counts those
-- settles, so a settle parking a message sees whether one came in between.
ALTER TABLE inbox
    ADD COLUMN holds TEXT CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD COLUMN parked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE ordering_keys ADD COLUMN turn BIGINT NOT NULL DEFAULT 0;
ALTER TABLE failed_messages
    ADD COLUMN ordering_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD COLUMN seq BIGINT NULL;
-- A key an ordered plugin dead-lettered a message of: its later messages wait for that
-- plugin until an operator retries the message or skips it.
CREATE TABLE held_keys (
    queue      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `key`      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    plugin     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    message_id BINARY(16) NOT NULL,
    seq        BIGINT NOT NULL,
    held_at    BIGINT NOT NULL,
    PRIMARY KEY (queue, `key`, plugin),
    KEY held_keys_message (message_id)
) ENGINE = InnoDB;
