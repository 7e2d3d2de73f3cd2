-- The fleet plugin registry (`wharf plugins deploy | rollback | history`). Components are
-- stored once, by the sha256 of their bytes. Each deploy of a plugin name adds a row to
-- its deployments; a rollback marks the newest standing row rolled back. A plugin's
-- active version is its newest deployment not rolled back.
CREATE TABLE plugin_artifacts (
    sha256     text PRIMARY KEY,
    name       text NOT NULL,
    version    text NOT NULL,
    wasm       bytea NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE plugin_deployments (
    id             bigserial PRIMARY KEY,
    plugin         text NOT NULL,
    version        text NOT NULL,
    sha256         text NOT NULL REFERENCES plugin_artifacts (sha256),
    deployed_at    bigint NOT NULL,
    deployed_by    text NOT NULL,
    rolled_back_at bigint
);
CREATE INDEX plugin_deployments_standing ON plugin_deployments (plugin, id)
    WHERE rolled_back_at IS NULL;

-- What each running host serves, as it last reported (`wharf plugins list`).
CREATE TABLE plugin_hosts (
    host        text NOT NULL,
    plugin      text NOT NULL,
    version     text NOT NULL,
    sha256      text NOT NULL,
    source      text NOT NULL,   -- directory | registry
    breaker     text NOT NULL,   -- closed | open | half-open
    reported_at bigint NOT NULL,
    PRIMARY KEY (host, plugin)
);
