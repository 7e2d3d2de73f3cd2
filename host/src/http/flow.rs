//! `GET /api/flow[?minutes=N]`: the fleet's flow over the last N minutes (default 60, at
//! most [`FLOW_SHOWN`]), one value per minute, oldest first, the current minute last (so
//! far): per queue and per plugin, the pairs handled, retried and dead; per plugin, its
//! calls and their mean and longest time. The dashboard's charts draw it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::Api;
use super::auth::Reader;
use super::error::ApiError;
use crate::store::flow::{FLOW_SHOWN, FlowCounts, FlowRow, MINUTE_MS, minute_of};
use crate::store::now_ms;

/// Minutes shown when the call does not say.
const DEFAULT_MINUTES: u32 = 60;

/// How much of a bad parameter an error quotes.
const QUOTED: usize = 64;

/// One queue's or plugin's values, one per minute.
#[derive(Debug, Serialize)]
pub struct Series {
    /// The queue's or plugin's name (`""`: messages no plugin took).
    pub name: String,
    /// For a queue: `inbox` or `amqp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Pairs handled.
    pub handled: Vec<u64>,
    /// Pairs retried.
    pub retried: Vec<u64>,
    /// Pairs dead.
    pub dead: Vec<u64>,
    /// For a plugin: its calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<u64>>,
    /// For a plugin: their mean time, ms (`null` in a minute without calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_ms: Option<Vec<Option<f64>>>,
    /// For a plugin: the longest call, ms (`null` in a minute without calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<Vec<Option<f64>>>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct FlowAnswer {
    /// The Unix ms the first minute starts at.
    pub from: i64,
    /// How many minutes each series holds.
    pub minutes: u32,
    /// One minute, in ms.
    pub minute_ms: i64,
    /// By queue, in name order.
    pub queues: Vec<Series>,
    /// By plugin, in name order.
    pub plugins: Vec<Series>,
}

/// `GET /api/flow[?minutes=N]`
pub async fn history(
    _: Reader,
    State(api): State<Arc<Api>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<FlowAnswer>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let Query(pairs) = query.map_err(|r| bad(r.body_text()))?;
    let mut minutes = DEFAULT_MINUTES;
    for (key, value) in pairs {
        let quoted = crate::text::reason(&value, QUOTED);
        match key.as_str() {
            "minutes" => {
                minutes = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=FLOW_SHOWN).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "minutes {quoted:?} must be a number from 1 to {FLOW_SHOWN}"
                        ))
                    })?
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {:?}: the only one is minutes",
                    crate::text::reason(&key, QUOTED)
                )));
            }
        }
    }
    let from = minute_of(now_ms()) - i64::from(minutes - 1) * MINUTE_MS;
    let rows = api.store.flow_since(from).await?;
    Ok(Json(answer(from, minutes, &rows)))
}

/// The series of `rows`, `minutes` minutes from `from`.
fn answer(from: i64, minutes: u32, rows: &[FlowRow]) -> FlowAnswer {
    let mut queues: BTreeMap<&str, Vec<FlowCounts>> = BTreeMap::new();
    let mut plugins: BTreeMap<&str, Vec<FlowCounts>> = BTreeMap::new();
    let blank = || vec![FlowCounts::default(); minutes as usize];
    for row in rows {
        let Some(i) = usize::try_from((row.minute - from) / MINUTE_MS)
            .ok()
            .filter(|i| *i < minutes as usize)
        else {
            continue;
        };
        if !row.source.is_empty() {
            queues.entry(&row.source).or_insert_with(blank)[i] += row.counts;
        }
        plugins.entry(&row.plugin).or_insert_with(blank)[i] += row.counts;
    }
    let outcomes =
        |counts: &[FlowCounts], f: fn(&FlowCounts) -> u64| counts.iter().map(f).collect();
    let series = |name: &str, counts: &[FlowCounts]| Series {
        name: name.to_owned(),
        source: None,
        handled: outcomes(counts, |c| c.handled),
        retried: outcomes(counts, |c| c.retried),
        dead: outcomes(counts, |c| c.dead),
        calls: None,
        mean_ms: None,
        max_ms: None,
    };
    let ms = |counts: &[FlowCounts], f: fn(&FlowCounts) -> u64| -> Vec<Option<f64>> {
        counts
            .iter()
            .map(|c| (c.calls > 0).then(|| f(c) as f64 / 1000.0))
            .collect()
    };
    FlowAnswer {
        from,
        minutes,
        minute_ms: MINUTE_MS,
        queues: queues
            .iter()
            .map(|(source, counts)| {
                let (kind, name) = source.split_once(':').unwrap_or(("", source));
                Series {
                    source: Some(kind.to_owned()),
                    ..series(name, counts)
                }
            })
            .collect(),
        plugins: plugins
            .iter()
            .map(|(name, counts)| Series {
                calls: Some(outcomes(counts, |c| c.calls)),
                mean_ms: Some(ms(counts, |c| c.call_us / c.calls)),
                max_ms: Some(ms(counts, |c| c.call_us_max)),
                ..series(name, counts)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, source: &str, plugin: &str, counts: FlowCounts) -> FlowRow {
        FlowRow {
            minute,
            source: source.into(),
            plugin: plugin.into(),
            counts,
        }
    }

    #[test]
    fn rows_become_one_value_per_minute_by_queue_and_by_plugin() {
        let from = 600 * MINUTE_MS;
        let handled = |n| FlowCounts {
            handled: n,
            ..FlowCounts::default()
        };
        let rows = [
            row(from - MINUTE_MS, "inbox:a", "p", handled(9)),
            row(from, "inbox:a", "p", handled(2)),
            row(from, "amqp:a", "p", handled(1)),
            row(
                from + 2 * MINUTE_MS,
                "inbox:a",
                "",
                FlowCounts {
                    dead: 1,
                    ..FlowCounts::default()
                },
            ),
            row(
                from + 2 * MINUTE_MS,
                "",
                "p",
                FlowCounts {
                    calls: 4,
                    call_us: 10_000,
                    call_us_max: 7_000,
                    ..FlowCounts::default()
                },
            ),
            row(from + 3 * MINUTE_MS, "inbox:a", "p", handled(5)),
        ];
        let answer = answer(from, 3, &rows);
        let names: Vec<_> = answer
            .queues
            .iter()
            .map(|q| (q.source.as_deref().unwrap(), q.name.as_str()))
            .collect();
        assert_eq!(names, [("amqp", "a"), ("inbox", "a")]);
        assert_eq!(
            answer.queues[1].handled,
            [2, 0, 0],
            "minutes outside are left out"
        );
        assert_eq!(answer.queues[1].dead, [0, 0, 1]);
        let p = answer.plugins.iter().find(|p| p.name == "p").unwrap();
        assert_eq!(p.handled, [3, 0, 0]);
        assert_eq!(p.calls.as_deref(), Some(&[0, 0, 4][..]));
        assert_eq!(p.mean_ms.as_deref(), Some(&[None, None, Some(2.5)][..]));
        assert_eq!(p.max_ms.as_deref(), Some(&[None, None, Some(7.0)][..]));
        let none = answer.plugins.iter().find(|p| p.name.is_empty()).unwrap();
        assert_eq!(none.dead, [0, 0, 1], "messages no plugin took");
    }
}
