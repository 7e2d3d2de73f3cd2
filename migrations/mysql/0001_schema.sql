-- The MariaDB / MySQL store (MariaDB >= 10.6, MySQL >= 8.0.1: `FOR UPDATE SKIP LOCKED`).
-- Times are Unix milliseconds from the database's clock, so hosts with skewed clocks agree
-- on leases and due times. Message ids are BINARY(16) UUIDs. Names (queues, kinds,
-- plugins, state keys, exchanges, routing keys) are ASCII by wharf's rules
-- (`host/src/names.rs`) and compared byte for byte; headers, errors and payloads keep
-- whatever they hold. DDL is not transactional here: each statement stands alone.

-- Messages waiting to be handled. A row leaves when every plugin it routes to has either
-- handled it or dead-lettered it.
CREATE TABLE inbox (
    id           BINARY(16) PRIMARY KEY,
    queue        VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind         VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    headers      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload      LONGBLOB NOT NULL,
    attempts     INT NOT NULL DEFAULT 0,
    available_at BIGINT NOT NULL,          -- not claimed before this time (retry backoff)
    locked_until BIGINT,                   -- claim lease; NULL when not claimed
    lock_token   BINARY(16),               -- fencing token of the current claim
    created_at   BIGINT NOT NULL,
    KEY inbox_due (available_at),
    KEY inbox_queue_due (queue, available_at)
) ENGINE = InnoDB;

-- Every message id ever enqueued (until retention), so a duplicate is not enqueued again.
-- `token` is the inserting call's: `INSERT IGNORE` skips known ids, and the call reads
-- back which ids carry its token to learn which were new.
CREATE TABLE received (
    id          BINARY(16) PRIMARY KEY,
    queue       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    received_at BIGINT NOT NULL,
    token       BINARY(16) NOT NULL,
    KEY received_age (received_at)
) ENGINE = InnoDB;

-- Dedup ledger: which plugin (and exact version) handled which message.
CREATE TABLE processed (
    message_id     BINARY(16) NOT NULL,
    plugin         VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    plugin_version VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    plugin_sha256  CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    handled_at     BIGINT NOT NULL,
    PRIMARY KEY (message_id, plugin),
    KEY processed_age (handled_at)
) ENGINE = InnoDB;

-- Messages for external targets (AMQP exchanges), relayed by the outbox relay. A relay
-- leases the rows it publishes (`locked_until`) so other hosts' relays skip them; a relay
-- that dies before marking them sent leaves them to the next after the lease.
CREATE TABLE outbox (
    seq               BIGINT AUTO_INCREMENT PRIMARY KEY,
    id                BINARY(16) NOT NULL UNIQUE,
    source_message_id BINARY(16) NOT NULL,
    plugin            VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    exchange          VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    routing_key       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind              VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    headers           LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload           LONGBLOB NOT NULL,
    created_at        BIGINT NOT NULL,
    sent_at           BIGINT,
    locked_until      BIGINT,
    KEY outbox_unsent (sent_at, seq)
) ENGINE = InnoDB;

-- Key/value state per plugin; version grows on every write (optimistic concurrency).
CREATE TABLE plugin_state (
    plugin     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `key`      VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    value      LONGBLOB NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (plugin, `key`)
) ENGINE = InnoDB;

-- How much state each plugin holds (keys, and bytes of keys and values), for the state
-- quotas; changed by the settle that writes the state, with the row locked.
CREATE TABLE plugin_state_usage (
    plugin VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    `keys` BIGINT NOT NULL,
    bytes  BIGINT NOT NULL
) ENGINE = InnoDB;

-- Dead letters, one per (message, plugin); plugin '' when no plugin handles the kind.
-- AMQP dead letters remember where they were published (source_exchange and
-- source_routing_key, NULL for inbox messages), so a retry republishes them there.
CREATE TABLE failed_messages (
    id                 BIGINT AUTO_INCREMENT PRIMARY KEY,
    message_id         BINARY(16) NOT NULL,
    plugin             VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    plugin_version     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    plugin_sha256      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    source             VARCHAR(262) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    queue              VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind               VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    headers            LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload            LONGBLOB NOT NULL,
    error              TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    attempts           INT NOT NULL,
    status             VARCHAR(16) CHARACTER SET ascii NOT NULL
                       CHECK (status IN ('pending', 'retrying', 'failed', 'resolved')),
    failed_at          BIGINT NOT NULL,
    last_retry_at      BIGINT,
    resolved_at        BIGINT,
    source_exchange    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    source_routing_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    UNIQUE KEY failed_messages_pair (message_id, plugin),
    KEY failed_messages_status (status)
) ENGINE = InnoDB;

-- Every failed attempt's error, in order (the history behind a failed message), with the
-- plugin version and the sha256 of the .wasm that ran it.
CREATE TABLE attempt_errors (
    id             BIGINT AUTO_INCREMENT PRIMARY KEY,
    message_id     BINARY(16) NOT NULL,
    plugin         VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    plugin_version VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    plugin_sha256  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    attempt        INT NOT NULL,
    error          TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    delay_ms       BIGINT,                 -- wait before the next attempt; NULL when final
    at             BIGINT NOT NULL,
    KEY attempt_errors_message (message_id, plugin)
) ENGINE = InnoDB;

-- The fleet plugin registry (`wharf plugins deploy | rollback | history`). Components are
-- stored once, by the sha256 of their bytes; a plugin's active version is its newest
-- deployment not rolled back.
CREATE TABLE plugin_artifacts (
    sha256     CHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    name       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    wasm       LONGBLOB NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE plugin_deployments (
    id             BIGINT AUTO_INCREMENT PRIMARY KEY,
    plugin         VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    sha256         CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    deployed_at    BIGINT NOT NULL,
    deployed_by    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    rolled_back_at BIGINT,
    KEY plugin_deployments_standing (plugin, rolled_back_at, id),
    CONSTRAINT plugin_deployments_artifact FOREIGN KEY (sha256) REFERENCES plugin_artifacts (sha256)
) ENGINE = InnoDB;

-- What each running host serves, as it last reported (`wharf plugins list`).
CREATE TABLE plugin_hosts (
    host        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    plugin      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    sha256      CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    source      VARCHAR(16) CHARACTER SET ascii NOT NULL,   -- directory | registry
    breaker     VARCHAR(16) CHARACTER SET ascii NOT NULL,   -- closed | open | half-open
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (host, plugin)
) ENGINE = InnoDB;

-- What each host handled per queue in the minute before its last report.
CREATE TABLE host_queues (
    host        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    source      VARCHAR(262) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    handled     BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (host, source)
) ENGINE = InnoDB;

-- What operators did through the HTTP API, by the name of the token that made it.
CREATE TABLE audit (
    id     BIGINT AUTO_INCREMENT PRIMARY KEY,
    at     BIGINT NOT NULL,
    who    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    action VARCHAR(64) CHARACTER SET ascii NOT NULL,
    target TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    result TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE = InnoDB;

-- Locks a settle takes on the state keys it reads or writes: a key's slot is 18 bits of
-- the sha256 of (plugin, key), and its row is locked `FOR UPDATE` until the settle
-- commits, in slot order (unrelated keys that share a slot only wait for each other).
CREATE TABLE state_lock_slots (
    slot INT PRIMARY KEY
) ENGINE = InnoDB;
CREATE TABLE lock_digits (d INT PRIMARY KEY) ENGINE = InnoDB;
INSERT INTO lock_digits VALUES (0), (1), (2), (3), (4), (5), (6), (7);
INSERT INTO state_lock_slots (slot)
SELECT a.d + 8 * b.d + 64 * c.d + 512 * e.d + 4096 * f.d + 32768 * g.d
FROM lock_digits a, lock_digits b, lock_digits c, lock_digits e, lock_digits f, lock_digits g;
DROP TABLE lock_digits;

-- Deploys and rollbacks of any plugin lock this one row first, so they are serialized.
CREATE TABLE registry_lock (
    id INT PRIMARY KEY
) ENGINE = InnoDB;
INSERT INTO registry_lock VALUES (1);
