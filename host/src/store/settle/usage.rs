//! State held by a plugin, or a change of it: keys, and bytes of keys and values. The
//! settle counts what a batch changes with it, the quotas (`quota`) what a plugin holds.

use std::ops::{Add, AddAssign, Sub};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_uses_its_length_and_its_values() {
        assert_eq!(
            StateUsage::of("ab", Some(3)),
            StateUsage { keys: 1, bytes: 5 }
        );
        assert!(StateUsage::of("ab", None).is_zero());
        let change = StateUsage::of("ab", Some(3)) - StateUsage::of("ab", Some(1));
        assert_eq!(change, StateUsage { keys: 0, bytes: 2 });
    }
}
