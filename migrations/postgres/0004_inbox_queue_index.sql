-- A host that lists several queues claims each on lanes of its own; this index lets a
-- lane find its queue's due rows in order without reading the rows of other queues (an
-- idle lane's claim and wait would otherwise scan the whole inbox).
CREATE INDEX inbox_queue_due ON inbox (queue, available_at);
