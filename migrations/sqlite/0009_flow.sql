-- The flow over time, for the dashboard's charts: what each host settled per minute, by
-- queue (source) and plugin, and its handler calls per plugin (source ''). Each report
-- adds the host's counts onto its rows; rows older than two hours are deleted.
CREATE TABLE flow_minutes (
    minute      INTEGER NOT NULL,  -- Unix ms of the minute's start
    host        TEXT NOT NULL,
    source      TEXT NOT NULL,     -- inbox:<queue> | amqp:<queue> | '' (calls)
    plugin      TEXT NOT NULL,     -- '' : a message no plugin took
    handled     INTEGER NOT NULL,
    retried     INTEGER NOT NULL,
    dead        INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    call_us     INTEGER NOT NULL,
    call_us_max INTEGER NOT NULL,
    PRIMARY KEY (minute, host, source, plugin)
);
