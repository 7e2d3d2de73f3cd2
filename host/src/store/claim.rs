//! What a claim is: how it keeps other workers off its messages ([`ClaimMode`], [`Hold`])
//! and the batch it hands to the handlers ([`Claim`]).

use super::{mysql, postgres};
use crate::envelope::Envelope;

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

/// What holds a claimed batch until it is settled; handed back to [`Store::begin_settle`].
#[derive(Debug)]
pub enum Hold {
    /// The rows carry a lease and the messages' `lock_token`s.
    Lease,
    /// The rows are taken inside this open transaction.
    Transaction(HeldTransaction),
}

/// A claim's open transaction, of the store that claimed (and settles) it: the claimed
/// rows are deleted in it, uncommitted.
#[derive(Debug)]
pub enum HeldTransaction {
    /// On PostgreSQL.
    Postgres(postgres::HeldClaim),
    /// On MariaDB.
    MySql(mysql::HeldClaim),
}

/// A claimed batch.
#[derive(Debug)]
pub struct Claim {
    /// The messages, in due order.
    pub messages: Vec<Envelope>,
    /// What keeps other workers off them.
    pub hold: Hold,
}
