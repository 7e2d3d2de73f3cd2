-- The fleet plugin registry (`wharf plugins deploy | rollback | history`). Components are
-- stored once, by the sha256 of their bytes. Each deploy of a plugin name adds a row to
-- its deployments; a rollback marks the newest standing row rolled back. A plugin's
-- active version is its newest deployment not rolled back.
CREATE TABLE plugin_artifacts (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    wasm       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE plugin_deployments (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin         TEXT NOT NULL,
    version        TEXT NOT NULL,
    sha256         TEXT NOT NULL REFERENCES plugin_artifacts (sha256),
    deployed_at    INTEGER NOT NULL,
    deployed_by    TEXT NOT NULL,
    rolled_back_at INTEGER
);
CREATE INDEX plugin_deployments_standing ON plugin_deployments (plugin, id)
    WHERE rolled_back_at IS NULL;

-- What each running host serves, as it last reported (`wharf plugins list`).
CREATE TABLE plugin_hosts (
    host        TEXT NOT NULL,
    plugin      TEXT NOT NULL,
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    source      TEXT NOT NULL,   -- directory | registry
    breaker     TEXT NOT NULL,   -- closed | open | half-open
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (host, plugin)
);
