-- The flow over time, for the dashboard's charts: what each host settled per minute, by
-- queue (source) and plugin, and its handler calls per plugin (source ''). Each report
-- adds the host's counts onto its rows; rows older than two hours are deleted.
CREATE TABLE flow_minutes (
    minute      BIGINT NOT NULL,   -- Unix ms of the minute's start
    host        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    source      VARCHAR(262) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    plugin      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    handled     BIGINT NOT NULL,
    retried     BIGINT NOT NULL,
    dead        BIGINT NOT NULL,
    calls       BIGINT NOT NULL,
    call_us     BIGINT NOT NULL,
    call_us_max BIGINT NOT NULL,
    PRIMARY KEY (minute, host, source, plugin)
) ENGINE = InnoDB;
