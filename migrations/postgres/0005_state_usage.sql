-- How much state each plugin holds (keys, and bytes of keys and values), for the state
-- quotas (`max_state_keys`, `max_state_bytes`). The settle changes a plugin's row in the
-- transaction that writes its state, with the row locked, so it is exact across hosts.
CREATE TABLE plugin_state_usage (
    plugin text PRIMARY KEY,
    keys   bigint NOT NULL,
    bytes  bigint NOT NULL
);

INSERT INTO plugin_state_usage (plugin, keys, bytes)
SELECT plugin, COUNT(*), SUM(octet_length(key) + octet_length(value))
FROM plugin_state
GROUP BY plugin;
