//! State quotas: the most state keys, and bytes of keys and values, one plugin may hold in
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
use std::ops::{Add, AddAssign, Sub};

use super::view::StateView;
use super::{PluginRuns, SettlePlan, SettleRunner, StateLocks};
use crate::store::{Result, Settlement};

/// The most state one plugin may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuota {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// State held, or a change of it: keys, and bytes of keys and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateUsage {
    /// Keys.
    pub keys: i64,
    /// Bytes of keys and values.
    pub bytes: i64,
}

impl StateUsage {
    /// What key `key` holding a value of `value` bytes (`None`: absent) uses.
    pub(crate) fn of(key: &str, value: Option<usize>) -> Self {
        match value {
            Some(len) => Self {
                keys: 1,
                bytes: (key.len() + len) as i64,
            },
            None => Self::default(),
        }
    }

    /// Whether, as a change, it is none.
    pub(crate) fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The first quota that `self` held takes over when `added` is added to it: its
    /// setting, the usage and the quota. A change that does not grow a dimension never
    /// goes over it (a plugin over a lowered quota may still shrink).
    fn over(&self, added: Self, quota: StateQuota) -> Option<(&'static str, i64, u64)> {
        let total = *self + added;
        if added.keys > 0 && total.keys as u64 > quota.keys {
            return Some(("max_state_keys", total.keys, quota.keys));
        }
        if added.bytes > 0 && total.bytes as u64 > quota.bytes {
            return Some(("max_state_bytes", total.bytes, quota.bytes));
        }
        None
    }
}

impl Add for StateUsage {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            keys: self.keys + other.keys,
            bytes: self.bytes + other.bytes,
        }
    }
}

impl Sub for StateUsage {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        Self {
            keys: self.keys - other.keys,
            bytes: self.bytes - other.bytes,
        }
    }
}

impl AddAssign for StateUsage {
    fn add_assign(&mut self, other: Self) {
        *self = *self + other;
    }
}

/// Plan `held` (resolved over `view`) within the state quotas of its plugins: see the
/// module docs.
pub(crate) async fn plan<'a>(
    held: &[&'a Settlement],
    view: &StateView,
    runs: BTreeMap<String, PluginRuns>,
    locks: &mut dyn StateLocks,
    runner: &dyn SettleRunner,
) -> Result<SettlePlan<'a>> {
    let plan = SettlePlan::resolved(held, view, runs.clone(), None);
    let changing: Vec<&str> = plan.usage.keys().copied().collect();
    if changing.is_empty() {
        return Ok(plan);
    }
    let used = locks.usage(&changing).await?;
    let rooms: BTreeMap<String, Room> = changing
        .iter()
        .map(|plugin| {
            let room = Room {
                quota: runner.state_quota(plugin),
                used: used.get(*plugin).copied().unwrap_or_default(),
            };
            (plugin.to_string(), room)
        })
        .collect();
    let over = plan
        .usage
        .iter()
        .any(|(plugin, added)| rooms[*plugin].over(*added).is_some());
    if !over {
        return Ok(plan);
    }
    let quotas = Quotas {
        view,
        rooms,
        walked: BTreeMap::new(),
    };
    Ok(SettlePlan::resolved(held, view, runs, Some(quotas)))
}

/// A plugin's quota and its usage so far.
#[derive(Debug, Clone, Copy)]
struct Room {
    quota: StateQuota,
    used: StateUsage,
}

impl Room {
    fn over(&self, added: StateUsage) -> Option<(&'static str, i64, u64)> {
        self.used.over(added, self.quota)
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

impl Quotas<'_> {
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
        let held = StateUsage { keys: 2, bytes: 8 };
        let one_key = StateUsage { keys: 1, bytes: 1 };
        assert_eq!(held.over(one_key, quota), Some(("max_state_keys", 3, 2)));
        let bigger = StateUsage { keys: 0, bytes: 3 };
        assert_eq!(held.over(bigger, quota), Some(("max_state_bytes", 11, 10)));
        let over_already = StateUsage { keys: 5, bytes: 50 };
        let shrink = StateUsage {
            keys: -1,
            bytes: -5,
        };
        assert_eq!(over_already.over(shrink, quota), None);
        assert_eq!(
            StateUsage::of("ab", Some(3)),
            StateUsage { keys: 1, bytes: 5 }
        );
        assert!(StateUsage::of("ab", None).is_zero());
    }
}
