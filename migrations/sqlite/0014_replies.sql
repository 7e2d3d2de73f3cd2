-- Answers to requests whose caller waits on a host (`POST /api/messages/request`,
-- `wharf request`), by request id: written in the settle that answers, once (the first
-- answer of a request is kept), read by the waiting host, and deleted by retention.
-- `status`: `answered` (a handler's answer), `rejected` (the request was dead-lettered or
-- refused; `error` says why), `handled` (handled with no answer).
CREATE TABLE replies (
    request_id TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    error      TEXT,
    headers    TEXT NOT NULL,          -- JSON object
    payload    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX replies_age ON replies (created_at);
