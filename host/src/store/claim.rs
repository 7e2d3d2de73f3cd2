//! What a claim is: how it keeps other workers off its messages ([`ClaimMode`], [`Hold`])
//! and the batch it hands to the handlers ([`Claim`]).

use std::any::Any;

use crate::envelope::{Envelope, KeyTurn};

/// How a claim keeps other workers off its messages until they are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// Stamp the rows with a lease (`locked_until`) and a fencing token and commit at
    /// once; the handlers run outside any transaction and settle is fenced on the token.
    Lease,
    /// Take the rows inside a transaction that stays open while the handlers run; settle
    /// writes into it and commits. Stores that cannot hold a transaction cheaply (SQLite
    /// has one writer) or cannot bound an idle one (MySQL) lease instead.
    Transaction,
}

/// How a claim treats ordering keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Keyed messages are claimed like any other: no plugin keeps their order.
    Ignore,
    /// Ordered plugins keep it: a keyed message is left while an earlier message of its
    /// key has not run yet (or runs for the first time), and one claimed comes with its
    /// [`crate::envelope::KeyTurn`] (which ordered plugins an earlier message still holds).
    Keep,
}

/// What holds a claimed batch until it is settled; handed back to [`super::Inbox::begin_settle`].
#[derive(Debug)]
pub enum Hold {
    /// The rows carry a lease and the messages' `lock_token`s.
    Lease,
    /// The rows are taken inside this open transaction.
    Transaction(HeldTransaction),
}

/// A claim's open transaction, of the store that claimed (and settles) it: the claimed
/// rows are deleted in it, uncommitted. What it holds is that store's own business.
pub struct HeldTransaction(Box<dyn Any + Send>);

impl HeldTransaction {
    /// Hold a store's open claim.
    pub(super) fn new(held: impl Any + Send) -> Self {
        Self(Box::new(held))
    }

    /// The store's own claim back. A host has one store, so a claim of another is a bug.
    pub(super) fn into_inner<T: Any>(self) -> T {
        *self
            .0
            .downcast()
            .unwrap_or_else(|_| unreachable!("a claim held by another store"))
    }

    /// The store's own claim, to use it in place.
    pub(super) fn get_mut<T: Any>(&mut self) -> &mut T {
        self.0
            .downcast_mut()
            .unwrap_or_else(|| unreachable!("a claim held by another store"))
    }
}

impl std::fmt::Debug for HeldTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldTransaction(..)")
    }
}

/// A claimed batch.
#[derive(Debug)]
pub struct Claim {
    /// The messages, in due order.
    pub messages: Vec<Envelope>,
    /// What keeps other workers off them.
    pub hold: Hold,
}

/// A claimed message's [`KeyTurn`] when it is `keyed` and the claim kept keys in order,
/// from its columns: the key's `turn` (where the store counts them), the plugins it waits
/// for and those it holds, each space-separated.
pub(crate) fn key_turn(
    keyed: bool,
    turn: Option<i64>,
    waits: Option<String>,
    holds: Option<String>,
) -> Option<KeyTurn> {
    keyed.then_some(())?;
    Some(KeyTurn {
        turn,
        waits_for: (waits.iter())
            .flat_map(|w| w.split([' ', ',']))
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        holds,
        ordered: Default::default(),
        runs_after: Default::default(),
    })
}
