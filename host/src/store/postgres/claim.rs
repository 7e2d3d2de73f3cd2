//! Claiming on PostgreSQL, in the two designs of the module docs: a lease stamped on the
//! rows, or the rows deleted inside a transaction held open until the settle; and keeping
//! either alive while the handlers run.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::store::settle::Stay;

use crate::envelope::Envelope;
use crate::store::parse_headers;
use crate::store::{
    Claim, ClaimMode, HeldTransaction, Hold, KeyOrder, Result, StoreError, key_turn,
};

/// The due rows a claim of `queues` takes, `$2` of them (`$1` is `queues`): the ids to
/// claim, as a query (`order` ignored), or with keys kept in order the CTEs of the
/// candidates (`due`, [`LOOK`]) and the ids of those to claim. A claim takes them as an
/// array (`id = ANY(ARRAY(..))`): joined to the rows it changes, the cached generic plan,
/// taking a bound `LIMIT` for a tenth of the table, hashes every row of the inbox
/// (measured beside 20,000 rows, a claim of 64: 0.95 ms joined, 0.83 ms as an array).
fn due_rows(queues: &[String], order: KeyOrder) -> (String, String) {
    let due = format!(
        "SELECT {} FROM inbox
         WHERE available_at <= wharf_now_ms()
           AND (locked_until IS NULL OR locked_until <= wharf_now_ms())
           {}
         ORDER BY available_at LIMIT $2
         FOR UPDATE SKIP LOCKED",
        match order {
            KeyOrder::Ignore => "id",
            KeyOrder::Keep => "id, queue, ordering_key, seq",
        },
        queue_filter(queues),
    );
    match order {
        KeyOrder::Ignore => (String::new(), due),
        KeyOrder::Keep => (format!("due AS ({due}), {LOOK}"), FREE.to_owned()),
    }
}

/// With keys kept in order, the candidates (`due`) each looked up once among the earlier
/// messages of its key that are not candidates too (`look`): it waits while one of them
/// has not run yet or runs for the first time (`holds` unset: its first settle sets it),
/// and is claimed otherwise, with the ordered plugins they hold (`holding`). Earlier
/// candidates are claimed with it and run first (a candidate left waiting leaves its
/// key's later candidates waiting too: what it waits for comes before them as well).
/// The look-up is a lateral subquery kept apart (`OFFSET 0`), so every plan probes the
/// key's index per candidate: the cached generic plan takes a bound `LIMIT` for a tenth
/// of the table and, allowed to, joins the candidates by hashing every row of the inbox
/// (measured beside 20,000 rows, a claim of 64 on that plan: 1.50 ms, probing 1.27 ms).
const LOOK: &str = "look AS (
             SELECT d.id, bool_or(x.id IS NOT NULL AND x.holds IS NULL) AS blocked,
                    string_agg(x.holds, ' ') AS holding
             FROM due d
             LEFT JOIN LATERAL (
                 SELECT p.id, p.holds FROM inbox p
                 WHERE p.queue = d.queue AND p.ordering_key = d.ordering_key
                   AND p.seq < d.seq AND p.id NOT IN (SELECT id FROM due)
                 OFFSET 0) x ON true
             GROUP BY d.id),";

/// The candidates a claim that keeps keys in order takes (see [`LOOK`]).
const FREE: &str = "SELECT id FROM look WHERE blocked IS NOT TRUE";

/// With keys kept in order, what a claimed keyed message waits for: the ordered plugins
/// its earlier messages hold, and those a dead letter holds its key for, space-separated.
const KEY_TURN: &str = "CASE WHEN c.ordering_key IS NOT NULL THEN concat_ws(' ',
            l.holding,
            CASE WHEN EXISTS (SELECT 1 FROM held_keys) THEN
                (SELECT string_agg(h.plugin, ' ') FROM held_keys h
                 WHERE h.queue = c.queue AND h.key = c.ordering_key AND h.seq < c.seq)
            END)
        END AS waits";

/// The queue condition on `$1` for `queues`: none for all queues; for one (what a
/// worker lane claims) an equality the `(queue, available_at)` index serves in due order;
/// `ANY` for several.
pub(super) fn queue_filter(queues: &[String]) -> &'static str {
    match queues.len() {
        0 => "AND cardinality($1::text[]) = 0",
        1 => "AND queue = ($1::text[])[1]",
        _ => "AND queue = ANY($1::text[])",
    }
}

/// Whether a query of `queues` should be planned for its arguments rather than run on
/// the cached generic plan: for one queue that was idle (`idle`). A generic plan
/// estimates `queue = $1` from the column's statistics, so while one queue holds nearly
/// every row it scans the due index through all of them for an idle queue (measured: an
/// empty claim beside 100,000 rows of another queue, 18-20 ms; planned for the queue,
/// ~1 ms). Busy queues keep the cached plan: planning the claim on every call doubled
/// the server's CPU per message.
pub(super) fn plan_per_call(queues: &[String], idle: &HashSet<String>) -> bool {
    queues.len() == 1 && idle.contains(&queues[0])
}

/// The claimed rows `c`, each seen before with the plugins that already handled or
/// dead-lettered it (`UNION ALL`: a plugin listed twice is one in the set it becomes, and
/// the server need not sort each row's list). A message never put back has none and is
/// not looked up (the bench measured the lookup at ~2 of the server's 17 ms of CPU per
/// 1,000 messages).
/// With keys kept in order, each keyed one comes with what it waits for (`KEY_TURN`).
fn claimed_rows(order: KeyOrder) -> String {
    let (waits, look) = match order {
        KeyOrder::Ignore => ("NULL::text AS waits", ""),
        KeyOrder::Keep => (KEY_TURN, "LEFT JOIN look l ON l.id = c.id"),
    };
    format!(
        "SELECT c.id, c.queue, c.kind, c.headers::text AS headers, c.payload, c.attempts,
            c.created_at, c.available_at, c.ordering_key, c.seq, c.holds,
            CASE WHEN c.seen THEN
                ARRAY(SELECT plugin FROM processed p WHERE p.message_id = c.id
                      UNION ALL
                      SELECT plugin FROM failed_messages f
                      WHERE f.message_id = c.id AND f.status IN ('failed', 'pending'))
            ELSE '{{}}' END AS settled,
            {waits}
         FROM c {look} ORDER BY c.available_at"
    )
}

/// A claim's open transaction: the batch's rows are deleted in it, uncommitted, so other
/// hosts skip them; the settle writes into it and commits.
pub(super) struct HeldClaim {
    pub(super) tx: Transaction<'static, Postgres>,
    /// When each claimed message was enqueued, for those put back for another attempt.
    pub(super) created_at: HashMap<Uuid, i64>,
}

/// Claim up to `limit` due messages of `queues` as `mode` asks; see
/// [`crate::store::Inbox::claim`]. `idle` holds the queues whose last claim found nothing.
pub(super) async fn claim(
    pool: &PgPool,
    idle: &Mutex<HashSet<String>>,
    queues: &[String],
    limit: u32,
    mode: ClaimMode,
    order: KeyOrder,
    lease: Duration,
) -> Result<Claim> {
    let per_call = plan_per_call(queues, &idle.lock().expect("no panics under this lock"));
    let claim = claim_on(pool, queues, limit, (mode, order), lease, per_call).await?;
    if let [queue] = queues {
        let mut idle = idle.lock().expect("no panics under this lock");
        if claim.messages.is_empty() {
            idle.insert(queue.clone());
        } else {
            idle.remove(queue);
        }
    }
    Ok(claim)
}

async fn claim_on(
    pool: &PgPool,
    queues: &[String],
    limit: u32,
    (mode, order): (ClaimMode, KeyOrder),
    lease: Duration,
    per_call: bool,
) -> Result<Claim> {
    let ((candidates, due), claimed) = (due_rows(queues, order), claimed_rows(order));
    match mode {
        ClaimMode::Lease => {
            let token = Uuid::now_v7();
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH {candidates} c AS (
                     UPDATE inbox SET locked_until = wharf_now_ms() + $3, lock_token = $4
                     WHERE id = ANY(ARRAY({due})) RETURNING *) {claimed}"
            )))
            .persistent(!per_call)
            .bind(queues)
            .bind(i64::from(limit))
            .bind(lease.as_millis() as i64)
            .bind(token)
            .fetch_all(pool)
            .await?;
            Ok(Claim {
                messages: envelopes(&rows, token, order)?,
                hold: Hold::Lease,
            })
        }
        ClaimMode::Transaction => {
            // A host that stops renewing (frozen, cut off) loses the claim after `lease`:
            // the server ends the idle transaction and the rows are claimable again. Set
            // with the `BEGIN`, in the same round trip.
            let mut tx = pool
                .begin_with(sqlx::AssertSqlSafe(format!(
                    "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {}",
                    lease.as_millis()
                )))
                .await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH {candidates} c AS (DELETE FROM inbox WHERE id = ANY(ARRAY({due})) RETURNING *)
                 {claimed}"
            )))
            .persistent(!per_call)
            .bind(queues)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(Claim {
                    messages: Vec::new(),
                    hold: Hold::Lease,
                });
            }
            let created_at = rows
                .iter()
                .map(|r| (r.get("id"), r.get("created_at")))
                .collect();
            Ok(Claim {
                messages: envelopes(&rows, Uuid::nil(), order)?,
                hold: Hold::Transaction(HeldTransaction::new(HeldClaim { tx, created_at })),
            })
        }
    }
}

/// Hand a held claim over to leases; see [`crate::store::Inbox::lease_held`].
pub(super) async fn lease_held(
    hold: &mut Hold,
    messages: &[Envelope],
    lease: Duration,
) -> Result<Option<Uuid>> {
    let Hold::Transaction(held) = std::mem::replace(hold, Hold::Lease) else {
        return Ok(None);
    };
    let HeldClaim { mut tx, created_at } = held.into_inner();
    let token = Uuid::now_v7();
    let stay = Stay::unchanged(messages);
    let leased = Some((token, lease.as_millis() as i64));
    super::writes::write_stay_held(&mut tx, &stay, &created_at, leased)
        .await
        .map_err(claim_lost)?;
    tx.commit().await.map_err(|e| claim_lost(e.into()))?;
    Ok(Some(token))
}

/// Keep a claim for another `lease`; see [`crate::store::Inbox::renew`].
pub(super) async fn renew(
    pool: &PgPool,
    hold: &mut Hold,
    claims: &[(Uuid, Uuid)],
    lease: Duration,
) -> Result<u64> {
    if let Hold::Transaction(held) = hold {
        // Any statement restarts the server's idle-in-transaction clock.
        sqlx::query("SELECT 1")
            .execute(&mut *held.get_mut::<HeldClaim>().tx)
            .await
            .map_err(|e| claim_lost(e.into()))?;
        return Ok(claims.len() as u64);
    }
    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = claims.iter().copied().unzip();
    let held = sqlx::query(
        "UPDATE inbox i SET locked_until = wharf_now_ms() + $3
         FROM UNNEST($1::uuid[], $2::uuid[]) AS c(id, token)
         WHERE i.id = c.id AND i.lock_token = c.token",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(lease.as_millis() as i64)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(held)
}

fn envelopes(rows: &[PgRow], token: Uuid, order: KeyOrder) -> Result<Vec<Envelope>> {
    rows.iter()
        .map(|row| {
            Ok(Envelope {
                id: row.get("id"),
                queue: row.get("queue"),
                kind: row.get("kind"),
                headers: parse_headers(row.get("headers"))?,
                payload: row.get("payload"),
                attempts: row.get::<i32, _>("attempts") as u32,
                lock_token: token,
                settled_plugins: row.get::<Vec<String>, _>("settled").into_iter().collect(),
                origin: Default::default(),
                due_at: Some(row.get("available_at")),
                key: row.get("ordering_key"),
                seq: row.get("seq"),
                turn: key_turn(
                    order == KeyOrder::Keep && row.get::<Option<&str>, _>("ordering_key").is_some(),
                    None,
                    row.get("waits"),
                    row.get("holds"),
                ),
            })
        })
        .collect()
}

/// A claim held in a transaction fails as a whole when its connection is gone or the
/// server rolled the transaction back (a deadlock or serialization conflict with another
/// writer): nothing was written and the messages are claimable again.
pub(super) fn claim_lost(e: StoreError) -> StoreError {
    e.lost_claim_if(rolled_back)
}

fn rolled_back(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        // Idle-in-transaction timeout, connection exceptions, transaction rollbacks,
        // operator intervention.
        sqlx::Error::Database(e) => e.code().is_some_and(|c| {
            c == "25P03" || ["08", "40", "57P"].iter().any(|class| c.starts_with(class))
        }),
        _ => false,
    }
}
