-- The flow over time, for the dashboard's charts: what each host settled per minute, by
-- queue (source) and plugin, and its handler calls per plugin (source ''). Each report
-- adds the host's counts onto its rows; rows older than two hours are deleted.
CREATE TABLE flow_minutes (
    minute      bigint NOT NULL,   -- Unix ms of the minute's start
    host        text NOT NULL,
    source      text NOT NULL,     -- inbox:<queue> | amqp:<queue> | '' (calls)
    plugin      text NOT NULL,     -- '' : a message no plugin took
    handled     bigint NOT NULL,
    retried     bigint NOT NULL,
    dead        bigint NOT NULL,
    calls       bigint NOT NULL,
    call_us     bigint NOT NULL,
    call_us_max bigint NOT NULL,
    PRIMARY KEY (minute, host, source, plugin)
);
