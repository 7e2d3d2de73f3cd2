//! A claimed keyed message's turn on MariaDB/MySQL and SQLite (see
//! `store::settle::keys`; PostgreSQL reads it in its claim statement).

use std::collections::{HashMap, HashSet};

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Sql, Statement};
use crate::envelope::Envelope;
use crate::store::{Result, StoreError, key_turn};

/// Give the keyed ones of `messages` (the candidates of a claim that keeps keys in order)
/// their turn, and return the ids of those an earlier message of their key that is not a
/// candidate too has not run for yet (`holds` unset): they are not to be claimed. What an
/// earlier candidate holds is not waited for: it runs first, in the same batch. Reads what
/// other transactions committed.
pub(in crate::store) async fn turns<DB: Sql>(
    conn: &mut DB::Connection,
    messages: &mut [Envelope],
) -> Result<HashSet<Uuid>> {
    let keyed: Vec<Uuid> = (messages.iter())
        .filter(|m| m.key.is_some())
        .map(|m| m.id)
        .collect();
    if keyed.is_empty() {
        return Ok(HashSet::new());
    }
    let k = DB::KEY;
    let all: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {} AS id, c.holds,
             CASE WHEN EXISTS (
                 SELECT 1 FROM inbox p
                 WHERE p.queue = c.queue AND p.ordering_key = c.ordering_key AND p.seq < c.seq
                   AND p.holds IS NULL AND p.id NOT IN (",
        DB::uuid_text("c.id")
    ));
    ids(&mut query, &all);
    query.push(format!(
        ")) THEN 1 ELSE 0 END AS blocked,
             (SELECT o.turn FROM ordering_keys o
              WHERE o.queue = c.queue AND o.{k} = c.ordering_key) AS turn,
             (SELECT GROUP_CONCAT(DISTINCT p.holds) FROM inbox p
              WHERE p.queue = c.queue AND p.ordering_key = c.ordering_key AND p.seq < c.seq
                AND p.id NOT IN ("
    ));
    ids(&mut query, &all);
    query.push(format!(
        ")) AS holding,
             (SELECT GROUP_CONCAT(DISTINCT h.plugin) FROM held_keys h
              WHERE h.queue = c.queue AND h.{k} = c.ordering_key AND h.seq < c.seq) AS held
         FROM inbox c WHERE c.id IN ("
    ));
    ids(&mut query, &keyed);
    query.push(")");
    let mut blocked = HashSet::new();
    let mut by_id = HashMap::new();
    for row in DB::fetch_all(conn, &mut query).await? {
        let id: String = DB::column(&row, "id");
        let id = Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("message id {id:?}: {e}")))?;
        let is_blocked: i64 = DB::column(&row, "blocked");
        if is_blocked == 1 {
            blocked.insert(id);
        }
        let holding: Option<String> = DB::column(&row, "holding");
        let held: Option<String> = DB::column(&row, "held");
        let waits = [holding, held].into_iter().flatten().collect::<Vec<_>>();
        let turn = key_turn(
            true,
            DB::column(&row, "turn"),
            Some(waits.join(" ")),
            DB::column(&row, "holds"),
        );
        by_id.insert(id, turn);
    }
    for message in messages {
        if let Some(turn) = by_id.remove(&message.id) {
            message.turn = turn;
        }
    }
    Ok(blocked)
}

/// `ids` as a list of bound message ids.
fn ids<DB: Sql>(query: &mut QueryBuilder<DB>, ids: &[Uuid]) {
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        query.id(*id);
    }
}
