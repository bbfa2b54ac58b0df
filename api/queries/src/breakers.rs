//! The breakers report (`GET /api/v1/reports/breakers`): each circuit
//! breaker's state at the end of a window (its last transition up to then)
//! and the timeline of transitions inside it, read from
//! `breaker_transitions` (migration 0031; model `''` is a provider's own
//! breaker). Breakers are fleet-wide, so the filters are the provider and
//! the model only; the window is validated as the latency report's.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use tollgate_contract::signature::SignatureId;

use super::latency::{LatencyFilters, LatencyParams};
use super::params::{InvalidParameter, QueryParams};
use super::table::Table;
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};

/// Most transitions one report lists; a window with more says it was cut.
pub const MAX_TRANSITIONS: u64 = 1_000;

/// A validated breakers request: the window (whole minutes) and filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakersQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub provider: Option<String>,
    pub model: Option<String>,
}

impl BreakersQuery {
    pub const NAMES: [&'static str; 4] = ["from", "to", "provider", "model"];
}

/// Read a breakers request's query string: `from`, `to` (default: the
/// last hour), `provider`, `model` (`model=` with an empty value is any
/// model; a provider's own breaker is listed with model `""`), plus the
/// caller's `extra` parameters.
pub fn parse_params(
    pairs: &[(String, String)],
    now: DateTime<Utc>,
    extra: &[&str],
) -> Result<(BreakersQuery, QueryParams), InvalidParameter> {
    let (window, params) = LatencyParams::window(pairs, now, &BreakersQuery::NAMES, extra)?;
    let LatencyFilters {
        provider, model, ..
    } = window.filters;
    Ok((
        BreakersQuery {
            from: window.from,
            to: window.to,
            provider,
            model,
        },
        params,
    ))
}

/// A breaker's state at the end of the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerState {
    pub provider: String,
    /// `""` for the provider's own breaker.
    pub model: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// When it entered `state` (its last transition up to `to`).
    pub since: DateTime<Utc>,
    pub generation: u64,
    pub reason: String,
    /// Transitions inside the window.
    pub transitions: u64,
}

/// One transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Millisecond precision.
    pub at: DateTime<Utc>,
    pub provider: String,
    pub model: String,
    pub from_state: String,
    pub to_state: String,
    pub generation: u64,
    /// The window the breaker decided on: calls, failed and slow calls.
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
    /// `failures / calls`, to 4 places (0 without calls).
    pub failure_rate: f64,
    /// The failure pattern that dominated the window, when there was one.
    pub signature: Option<SignatureId>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakersReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Every breaker with a transition before `to`, by provider and model.
    pub breakers: Vec<BreakerState>,
    /// Transitions in the window, oldest first; at most
    /// [`MAX_TRANSITIONS`].
    pub transitions: Vec<Transition>,
    /// More transitions happened than are listed.
    pub truncated: bool,
}

#[derive(Debug, Row, Deserialize)]
struct StateRow {
    provider: String,
    model: String,
    last_at_ms: u64,
    state: String,
    last_generation: u64,
    last_reason: String,
    transitions: u64,
}

#[derive(Debug, Row, Deserialize)]
struct TransitionRow {
    at_ms: u64,
    provider: String,
    model: String,
    from_state: String,
    to_state: String,
    generation: u64,
    calls: u64,
    failures: u64,
    slow: u64,
    signature: u64,
    reason: String,
}

fn ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn filters(query: &BreakersQuery, sql: &mut String, binds: &mut Vec<SqlValue>) {
    for (column, value) in [("provider", &query.provider), ("model", &query.model)] {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(SqlValue::Str(value.clone()));
        }
    }
}

/// The last transition of every breaker up to `to` (ties on the same
/// millisecond: the higher generation, then the later state name), and
/// how many fell in the window.
fn states_sql(query: &BreakersQuery) -> BoundSql {
    let last = "(at_ms, generation, to_state)";
    let mut template = format!(
        "SELECT provider, model, max(at_ms) AS last_at_ms, argMax(to_state, {last}) AS state, \
         argMax(generation, {last}) AS last_generation, argMax(reason, {last}) AS last_reason, \
         toUInt64(countIf(at_ms >= ?)) AS transitions \
         FROM breaker_transitions WHERE at_ms < ?"
    );
    let mut binds = vec![SqlValue::UInt(ms(query.from)), SqlValue::UInt(ms(query.to))];
    filters(query, &mut template, &mut binds);
    template.push_str(" GROUP BY provider, model ORDER BY provider, model");
    BoundSql {
        name: "breakers.states",
        template,
        binds,
    }
}

fn transitions_sql(query: &BreakersQuery) -> BoundSql {
    let mut template = "SELECT at_ms, provider, model, from_state, to_state, generation, \
         calls, failures, slow, signature, reason FROM breaker_transitions \
         WHERE at_ms >= ? AND at_ms < ?"
        .to_string();
    let mut binds = vec![SqlValue::UInt(ms(query.from)), SqlValue::UInt(ms(query.to))];
    filters(query, &mut template, &mut binds);
    template.push_str(&format!(
        " ORDER BY at_ms, provider, model, generation LIMIT {}",
        MAX_TRANSITIONS + 1
    ));
    BoundSql {
        name: "breakers.transitions",
        template,
        binds,
    }
}

fn time_ms(at_ms: u64) -> DateTime<Utc> {
    i64::try_from(at_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default()
}

pub(crate) async fn run(
    models: &ReadModels,
    query: &BreakersQuery,
) -> Result<BreakersReport, ReadModelError> {
    let (states, transitions) = (states_sql(query), transitions_sql(query));
    let (states, mut transitions) = futures::try_join!(
        async {
            models
                .bounded(states.query(models.client()).fetch_all::<StateRow>())
                .await
                .map_err(|e| models.classify(states.name, e))
        },
        async {
            models
                .bounded(
                    transitions
                        .query(models.client())
                        .fetch_all::<TransitionRow>(),
                )
                .await
                .map_err(|e| models.classify(transitions.name, e))
        },
    )?;
    let truncated = transitions.len() as u64 > MAX_TRANSITIONS;
    transitions.truncate(usize::try_from(MAX_TRANSITIONS).unwrap_or(usize::MAX));
    Ok(BreakersReport {
        from: query.from,
        to: query.to,
        provider: query.provider.clone(),
        model: query.model.clone(),
        breakers: states
            .into_iter()
            .map(|r| BreakerState {
                provider: r.provider,
                model: r.model,
                state: r.state,
                since: time_ms(r.last_at_ms),
                generation: r.last_generation,
                reason: r.last_reason,
                transitions: r.transitions,
            })
            .collect(),
        transitions: transitions
            .into_iter()
            .map(|r| Transition {
                at: time_ms(r.at_ms),
                failure_rate: if r.calls == 0 {
                    0.0
                } else {
                    (r.failures as f64 / r.calls as f64 * 10_000.0).round() / 10_000.0
                },
                provider: r.provider,
                model: r.model,
                from_state: r.from_state,
                to_state: r.to_state,
                generation: r.generation,
                calls: r.calls,
                failures: r.failures,
                slow: r.slow,
                signature: (r.signature != 0).then_some(SignatureId(r.signature)),
                reason: r.reason,
            })
            .collect(),
        truncated,
    })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The breakers' states at the end of the window (a CSV).
pub fn states_table(report: &BreakersReport) -> Table {
    let mut table = Table::new([
        "provider",
        "model",
        "state",
        "since",
        "generation",
        "transitions",
        "reason",
    ]);
    for b in &report.breakers {
        table.push([
            b.provider.clone(),
            b.model.clone(),
            b.state.clone(),
            stamp(b.since),
            b.generation.to_string(),
            b.transitions.to_string(),
            b.reason.clone(),
        ]);
    }
    table
}

/// The timeline of transitions (a CSV).
pub fn transitions_table(report: &BreakersReport) -> Table {
    let mut table = Table::new([
        "at",
        "provider",
        "model",
        "from_state",
        "to_state",
        "generation",
        "calls",
        "failures",
        "slow",
        "failure_rate",
        "signature",
        "reason",
    ]);
    for t in &report.transitions {
        table.push([
            stamp(t.at),
            t.provider.clone(),
            t.model.clone(),
            t.from_state.clone(),
            t.to_state.clone(),
            t.generation.to_string(),
            t.calls.to_string(),
            t.failures.to_string(),
            t.slow.to_string(),
            t.failure_rate.to_string(),
            t.signature.map(|s| s.to_string()).unwrap_or_default(),
            t.reason.clone(),
        ]);
    }
    table
}

/// Sample statements for the SQL compatibility check.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let plain = BreakersQuery {
        from: time_ms(1_767_225_600_000),
        to: time_ms(1_767_229_200_000),
        provider: None,
        model: None,
    };
    let filtered = BreakersQuery {
        provider: Some("openai".into()),
        model: Some(String::new()),
        ..plain.clone()
    };
    let named = |mut sql: BoundSql, name| {
        sql.name = name;
        sql
    };
    vec![
        states_sql(&plain),
        transitions_sql(&plain),
        named(states_sql(&filtered), "breakers.states.filtered"),
        named(transitions_sql(&filtered), "breakers.transitions.filtered"),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn json_and_csv_snapshots() {
        let report = crate::samples::breakers_report();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&report).unwrap());
        insta::assert_snapshot!("states_csv", states_table(&report).to_csv());
        insta::assert_snapshot!("transitions_csv", transitions_table(&report).to_csv());
    }

    #[test]
    fn parameters() {
        let now = time_ms(1_767_229_220_000);
        for (list, parameter) in [
            (&[("team", "a")][..], "team"),
            (&[("to", "soon")][..], "to"),
            (&[("provider", "a"), ("provider", "b")][..], "provider"),
        ] {
            let err = parse_params(&pairs(list), now, &[]).unwrap_err();
            assert_eq!(err.field, parameter, "{list:?}: {err}");
        }
        let (q, _) = parse_params(&pairs(&[("provider", "openai")]), now, &[]).unwrap();
        assert_eq!(q.provider.as_deref(), Some("openai"));
        let sql = states_sql(&q).text();
        assert!(
            sql.contains("WHERE at_ms < 1767229260000 AND provider = 'openai'"),
            "{sql}"
        );
    }
}
