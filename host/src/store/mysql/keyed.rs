//! Rows reached by their keys whatever the optimizer thinks of the table: the keys go in
//! as one JSON array, turned into a table (`JSON_TABLE`) that the statement joins from
//! (`STRAIGHT_JOIN`) into the table's key (`FORCE INDEX`), so each row is looked up by
//! its key. Without the index named, a prepared statement joins a small table by
//! scanning it into a join buffer (`SHOW EXPLAIN` of a settle's fence of one message:
//! every row of a 3-row inbox read, and locked).
//!
//! An `IN (...)` list is planned as a scan of the whole table when the table is small or
//! its statistics lag behind (a table just filled), index hints or not (measured: a
//! `DELETE` of 64 ids of a 300-row inbox reads all 300). A statement that locks and scans
//! waits for, and locks, rows other hosts hold in their claims and settles: two hosts on
//! a fresh database deadlocked on one batch in seven that way. A joined key list is one
//! statement text for any number of keys, too, prepared once per connection.

use serde::Serialize;
use uuid::Uuid;

/// Message ids as the table `j(id)` (hex): join with `ON t.id = UNHEX(j.id)`; bind
/// [`ids`].
pub(super) const IDS: &str = "JSON_TABLE(?, '$[*]' COLUMNS (id CHAR(32) PATH '$')) j";

/// Lock slots as the table `j(slot)`, in the order given; bind [`json`] of the numbers.
pub(super) const SLOTS: &str = "JSON_TABLE(?, '$[*]' COLUMNS (slot INT PATH '$')) j";

/// State keys as the table `j(plugin, k)`; bind [`json`] of `[plugin, key]` pairs.
pub(super) const STATE_KEYS: &str = "JSON_TABLE(?, '$[*]' COLUMNS (
        plugin VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin PATH '$[0]',
        k VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin PATH '$[1]')) j";

/// Ordering keys of messages as the table `j(queue, k, seq)`, in the order given; bind
/// [`json`] of `[queue, key, seq]` triples.
pub(super) const KEY_STEPS: &str = "JSON_TABLE(?, '$[*]' COLUMNS (
        queue VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin PATH '$[0]',
        k VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$[1]',
        seq BIGINT PATH '$[2]')) j";

/// `ids` as the JSON array [`IDS`] reads.
pub(super) fn ids(ids: impl IntoIterator<Item = Uuid>) -> String {
    json(ids.into_iter().map(|id| id.simple().to_string()))
}

/// `items` as a JSON array.
pub(super) fn json<T: Serialize>(items: impl IntoIterator<Item = T>) -> String {
    serde_json::to_string(&items.into_iter().collect::<Vec<_>>()).expect("keys serialize to JSON")
}
