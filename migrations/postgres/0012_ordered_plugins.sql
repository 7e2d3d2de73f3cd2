-- Ordered plugins: one message per (plugin, key) at a time, in `seq` order.
-- `holds`: the ordered plugins that still owe a verdict on a message, space-separated, set
-- by every settle that keeps it (NULL until its first run: it holds every plugin then).
-- `parked`: every plugin it still owes waits for an earlier message of its key; it is
-- woken by the settle that lets one of them go on. `ordering_keys.turn` counts those
-- settles where a store checks turns (MariaDB, SQLite; PostgreSQL looks again under an
-- advisory lock), so a settle parking a message sees whether one came in between.
ALTER TABLE inbox ADD COLUMN holds text, ADD COLUMN parked boolean NOT NULL DEFAULT false;
-- A key's parked messages, in order: what a settle moving the key on looks for (nearly
-- always nothing).
CREATE INDEX inbox_parked ON inbox (queue, ordering_key, seq) WHERE parked;
ALTER TABLE ordering_keys ADD COLUMN turn bigint NOT NULL DEFAULT 0;
ALTER TABLE failed_messages ADD COLUMN ordering_key text, ADD COLUMN seq bigint;
-- A key an ordered plugin dead-lettered a message of: its later messages wait for that
-- plugin until an operator retries the message or skips it.
CREATE TABLE held_keys (
    queue      text NOT NULL,
    key        text NOT NULL,
    plugin     text NOT NULL,
    message_id uuid NOT NULL,
    seq        bigint NOT NULL,
    held_at    bigint NOT NULL,
    PRIMARY KEY (queue, key, plugin)
);
CREATE INDEX held_keys_message ON held_keys (message_id);
