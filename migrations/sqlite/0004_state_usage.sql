-- How much state each plugin holds (keys, and bytes of keys and values), for the state
-- quotas (`max_state_keys`, `max_state_bytes`). The settle changes a plugin's row in the
-- transaction that writes its state.
CREATE TABLE plugin_state_usage (
    plugin TEXT PRIMARY KEY,
    keys   INTEGER NOT NULL,
    bytes  INTEGER NOT NULL
);

INSERT INTO plugin_state_usage (plugin, keys, bytes)
SELECT plugin, COUNT(*), SUM(length(CAST(key AS BLOB)) + length(value))
FROM plugin_state
GROUP BY plugin;
