-- What operators did through the HTTP API: every call that changes something, by the
-- name of the token that made it, with its result (`GET /api/audit`, `wharf audit`).
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    who    TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
