-- The fleet store. Times are Unix milliseconds from the database's clock (wharf_now_ms),
-- so hosts with skewed clocks agree on leases and due times.

CREATE FUNCTION wharf_now_ms() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;

-- Messages waiting to be handled. A row leaves when every plugin it routes to has either
-- handled it or dead-lettered it.
CREATE TABLE inbox (
    id           uuid PRIMARY KEY,
    queue        text NOT NULL,
    kind         text NOT NULL,
    headers      jsonb NOT NULL,
    payload      bytea NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    available_at bigint NOT NULL,          -- not claimed before this time (retry backoff)
    locked_until bigint,                   -- claim lease; NULL when not claimed
    lock_token   uuid,                     -- fencing token of the current claim
    created_at   bigint NOT NULL
);
CREATE INDEX inbox_due ON inbox (available_at);

-- Dedup on arrival: every message id accepted within the retention window.
CREATE TABLE received (
    id          uuid PRIMARY KEY,
    queue       text NOT NULL,
    received_at bigint NOT NULL
);
CREATE INDEX received_age ON received (received_at);

-- Dedup ledger: which plugin (and exact version) handled which message.
CREATE TABLE processed (
    message_id     uuid NOT NULL,
    plugin         text NOT NULL,
    plugin_version text NOT NULL,
    plugin_sha256  text NOT NULL,
    handled_at     bigint NOT NULL,
    PRIMARY KEY (message_id, plugin)
);
CREATE INDEX processed_age ON processed (handled_at);

-- Messages for external targets (AMQP exchanges), relayed by the outbox relay.
CREATE TABLE outbox (
    seq               bigserial PRIMARY KEY,
    id                uuid NOT NULL UNIQUE,
    source_message_id uuid NOT NULL,
    plugin            text NOT NULL,
    exchange          text NOT NULL,
    routing_key       text NOT NULL,
    kind              text NOT NULL,
    headers           jsonb NOT NULL,
    payload           bytea NOT NULL,
    created_at        bigint NOT NULL,
    sent_at           bigint
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

-- Key/value state per plugin; version grows on every write (optimistic concurrency).
CREATE TABLE plugin_state (
    plugin     text NOT NULL,
    key        text NOT NULL,
    value      bytea NOT NULL,
    version    bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (plugin, key)
);

-- Dead letters, one per (message, plugin); plugin '' when no plugin handles the kind.
CREATE TABLE failed_messages (
    id             bigserial PRIMARY KEY,
    message_id     uuid NOT NULL,
    plugin         text NOT NULL,
    plugin_version text NOT NULL,
    plugin_sha256  text NOT NULL,
    source         text NOT NULL,
    queue          text NOT NULL,
    kind           text NOT NULL,
    headers        jsonb NOT NULL,
    payload        bytea NOT NULL,
    error          text NOT NULL,
    attempts       integer NOT NULL,
    status         text NOT NULL CHECK (status IN ('pending', 'retrying', 'failed', 'resolved')),
    failed_at      bigint NOT NULL,
    last_retry_at  bigint,
    resolved_at    bigint,
    UNIQUE (message_id, plugin)
);
CREATE INDEX failed_messages_status ON failed_messages (status);

-- Every failed attempt's error, in order (the history behind a failed message).
CREATE TABLE attempt_errors (
    id         bigserial PRIMARY KEY,
    message_id uuid NOT NULL,
    plugin     text NOT NULL,
    attempt    integer NOT NULL,
    error      text NOT NULL,
    delay_ms   bigint,                     -- wait before the next attempt; NULL when final
    at         bigint NOT NULL
);
CREATE INDEX attempt_errors_message ON attempt_errors (message_id, plugin);
