-- What each host handled per queue in the minute before its last report (with its
-- plugin report, every few seconds): the fleet's handled/min per queue is their sum.
CREATE TABLE host_queues (
    host        TEXT NOT NULL,
    source      TEXT NOT NULL,   -- inbox:<queue> | amqp:<queue>
    handled     INTEGER NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (host, source)
);
