-- Answers to requests whose caller waits on a host of the fleet (`POST
-- /api/messages/request`, `wharf request`), by request id: written in the settle that
-- answers, once (the first answer of a request is kept), read by the waiting host, and
-- deleted by retention. `status`: `answered` (a handler's answer), `rejected` (the request
-- was dead-lettered or refused; `error` says why), `handled` (handled with no answer).
CREATE TABLE replies (
    request_id BINARY(16) PRIMARY KEY,
    status     VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    error      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    headers    LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload    LONGBLOB NOT NULL,
    created_at BIGINT NOT NULL,
    KEY replies_age (created_at)
) ENGINE = InnoDB;
