-- What operators did through the HTTP API: every call that changes something, by the
-- name of the token that made it, with its result (`GET /api/audit`, `wharf audit`).
CREATE TABLE audit (
    id     bigserial PRIMARY KEY,
    at     bigint NOT NULL,
    who    text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    result text NOT NULL
);
