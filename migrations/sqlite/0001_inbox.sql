-- The embedded store. Times are Unix milliseconds; ids are hyphenated UUID text.

-- Messages waiting to be handled. A row leaves when every plugin it routes to has either
-- handled it or dead-lettered it.
CREATE TABLE inbox (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    headers      TEXT NOT NULL,            -- JSON object
    payload      BLOB NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,         -- not claimed before this time (retry backoff)
    locked_until INTEGER,                  -- claim lease; NULL when not claimed
    lock_token   TEXT,                     -- fencing token of the current claim
    created_at   INTEGER NOT NULL
);
CREATE INDEX inbox_due ON inbox (available_at);

-- Dedup on arrival: every message id ever accepted (within the retention window).
CREATE TABLE received (
    id          TEXT PRIMARY KEY,
    queue       TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

-- Dedup ledger: which plugin (and exact version) handled which message.
CREATE TABLE processed (
    message_id     TEXT NOT NULL,
    plugin         TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    plugin_sha256  TEXT NOT NULL,
    handled_at     INTEGER NOT NULL,
    PRIMARY KEY (message_id, plugin)
);

-- Messages for external targets (AMQP exchanges), relayed by the outbox relay.
CREATE TABLE outbox (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    source_message_id TEXT NOT NULL,
    plugin            TEXT NOT NULL,
    exchange          TEXT NOT NULL,
    routing_key       TEXT NOT NULL,
    kind              TEXT NOT NULL,
    headers           TEXT NOT NULL,
    payload           BLOB NOT NULL,
    created_at        INTEGER NOT NULL,
    sent_at           INTEGER
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

-- Key/value state per plugin; version grows on every write (optimistic concurrency).
CREATE TABLE plugin_state (
    plugin     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (plugin, key)
);

-- Dead letters, one per (message, plugin); plugin '' when no plugin handles the kind.
CREATE TABLE failed_messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     TEXT NOT NULL,
    plugin         TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    plugin_sha256  TEXT NOT NULL,
    source         TEXT NOT NULL,
    queue          TEXT NOT NULL,
    kind           TEXT NOT NULL,
    headers        TEXT NOT NULL,
    payload        BLOB NOT NULL,
    error          TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'failed', 'resolved')),
    failed_at      INTEGER NOT NULL,
    last_retry_at  INTEGER,
    resolved_at    INTEGER,
    UNIQUE (message_id, plugin)
);
CREATE INDEX failed_messages_status ON failed_messages (status);

-- Every failed attempt's error, in order (the history behind a failed message).
CREATE TABLE attempt_errors (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    plugin     TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    error      TEXT NOT NULL,
    delay_ms   INTEGER,                    -- wait before the next attempt; NULL when final
    at         INTEGER NOT NULL
);
CREATE INDEX attempt_errors_message ON attempt_errors (message_id, plugin);
