-- What each host handled per queue in the minute before its last report (with its
-- plugin report, every few seconds): the fleet's handled/min per queue is their sum.
CREATE TABLE host_queues (
    host        text NOT NULL,
    source      text NOT NULL,   -- inbox:<queue> | amqp:<queue>
    handled     bigint NOT NULL,
    reported_at bigint NOT NULL,
    PRIMARY KEY (host, source)
);
