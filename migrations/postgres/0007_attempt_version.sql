-- Which plugin version (and the sha256 of its .wasm) ran each failed attempt, so an
-- attempt history shows when a deploy or a rollback changed the outcome. NULL for
-- attempts recorded before this migration.
ALTER TABLE attempt_errors ADD COLUMN plugin_version text, ADD COLUMN plugin_sha256 text;
