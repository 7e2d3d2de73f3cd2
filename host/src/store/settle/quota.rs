//! What bounds a settle: the budget of handler runs inside it ([`SettleBudget`]), and the
//! state quotas: the most state keys, and bytes of keys and values, one plugin may hold in
//! all (`max_state_keys`, `max_state_bytes`). What a batch adds is only known at its
//! settle, so they are checked there, against each plugin's usage kept in
//! `plugin_state_usage` (one row per plugin, changed in the settle transaction, so exact
//! across a fleet).
//!
//! The plan is built first as if there were no quota; it says what each plugin's state
//! gains or loses. Only the plugins whose state changes read (and lock) their usage row,
//! and only if one of them would go over its quota is the batch planned again, walking
//! its messages in order: each handled result whose writes would take its plugin over is
//! dead-lettered naming the quota, and the results before it keep their writes (a later
//! result that read a refused write is stale and runs again, as any stale read).

use std::collections::BTreeMap;
use std::time::Duration;

use super::SettlePlan;
use super::usage::StateUsage;
use super::view::StateView;

/// How much running one settle may do while it holds the batch's state locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleBudget {
    /// At most this many handler runs per batch.
    pub runs: u32,
    /// No run starts once the settle has spent this long running handlers.
    pub within: Duration,
}

/// The most state one plugin may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuota {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// A plugin's quota and its usage so far.
#[derive(Debug, Clone, Copy)]
struct Room {
    quota: StateQuota,
    used: StateUsage,
}

impl Room {
    /// The first quota the usage takes over when `added` is added to it: its setting,
    /// the usage and the quota. A change that does not grow a dimension never goes over
    /// it (a plugin over a lowered quota may still shrink).
    fn over(&self, added: StateUsage) -> Option<(&'static str, i64, u64)> {
        let total = self.used + added;
        if added.keys > 0 && total.keys as u64 > self.quota.keys {
            return Some(("max_state_keys", total.keys, self.quota.keys));
        }
        if added.bytes > 0 && total.bytes as u64 > self.quota.bytes {
            return Some(("max_state_bytes", total.bytes, self.quota.bytes));
        }
        None
    }
}

/// The quotas of the plugins of a batch planned again, and their usage as its handled
/// results are walked in order.
pub(crate) struct Quotas<'v> {
    /// Committed state.
    view: &'v StateView,
    /// By plugin.
    rooms: BTreeMap<String, Room>,
    /// Usage of the keys written so far in the walk, by (plugin, key).
    walked: BTreeMap<(String, String), StateUsage>,
}

impl<'v> Quotas<'v> {
    /// The quotas to plan `plan`'s batch again within, when its writes would take one of
    /// the plugins whose state it changes over its `quota`, given their committed usage
    /// `used` (locked until the settle commits); `None` when every one stays within.
    pub(crate) fn over(
        plan: &SettlePlan<'_>,
        view: &'v StateView,
        used: &BTreeMap<String, StateUsage>,
        quota: impl Fn(&str) -> StateQuota,
    ) -> Option<Self> {
        let rooms: BTreeMap<String, Room> = plan
            .usage
            .keys()
            .map(|plugin| {
                let room = Room {
                    quota: quota(plugin),
                    used: used.get(*plugin).copied().unwrap_or_default(),
                };
                (plugin.to_string(), room)
            })
            .collect();
        let over = plan
            .usage
            .iter()
            .any(|(plugin, added)| rooms[*plugin].over(*added).is_some());
        over.then(|| Self {
            view,
            rooms,
            walked: BTreeMap::new(),
        })
    }

    /// Charge the writes of a handled result of `plugin`; the error that dead-letters it
    /// when they would take the plugin over its quota.
    pub(crate) fn charge(
        &mut self,
        plugin: &str,
        writes: &BTreeMap<String, Option<Vec<u8>>>,
    ) -> std::result::Result<(), String> {
        let Some(room) = self.rooms.get_mut(plugin) else {
            return Ok(());
        };
        let before = |key: &str| {
            self.walked
                .get(&(plugin.to_owned(), key.to_owned()))
                .copied()
                .unwrap_or_else(|| self.view.committed_usage(plugin, key))
        };
        let mut added = StateUsage::default();
        for (key, value) in writes {
            added += StateUsage::of(key, value.as_ref().map(Vec::len)) - before(key);
        }
        if let Some((setting, would_hold, quota)) = room.over(added) {
            let unit = if setting == "max_state_keys" {
                "keys"
            } else {
                "bytes"
            };
            return Err(format!(
                "state quota exceeded: plugin {plugin} would hold {would_hold} {unit} of state, over its {setting} of {quota}; delete state it no longer needs, or raise [plugin.{plugin}] {setting} (at most [runtime] {setting})"
            ));
        }
        room.used += added;
        for (key, value) in writes {
            let usage = StateUsage::of(key, value.as_ref().map(Vec::len));
            self.walked
                .insert((plugin.to_owned(), key.to_owned()), usage);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_growth_goes_over_a_quota() {
        let quota = StateQuota { keys: 2, bytes: 10 };
        let room = |keys, bytes| Room {
            quota,
            used: StateUsage { keys, bytes },
        };
        let one_key = StateUsage { keys: 1, bytes: 1 };
        assert_eq!(room(2, 8).over(one_key), Some(("max_state_keys", 3, 2)));
        let bigger = StateUsage { keys: 0, bytes: 3 };
        assert_eq!(room(2, 8).over(bigger), Some(("max_state_bytes", 11, 10)));
        let shrink = StateUsage {
            keys: -1,
            bytes: -5,
        };
        assert_eq!(room(5, 50).over(shrink), None, "over already, shrinking");
    }
}
