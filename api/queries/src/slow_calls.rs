//! The slowest calls of a latency window: the individual attempts behind
//! the SRE latency page's percentiles, longest first, with the trace and
//! span ids by which a tracing backend finds them (`docs/architecture.md`,
//! "Read side: the latency report"). Read from the facts (`calls`), with the latency
//! report's window and filters, terminal attempts only (completed and
//! failed, as the latency rollup counts them).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::latency::epoch;
use super::{BoundSql, LatencyFilters, LatencyQuery, ReadModelError, ReadModels, SqlValue, Table};

/// How many calls the list holds.
pub const SLOWEST_CALLS: u32 = 20;

/// One attempt of a call, as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlowCall {
    pub occurred_at: DateTime<Utc>,
    pub call_id: String,
    pub attempt: u16,
    pub org: String,
    pub team: String,
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub http_status: u16,
    pub duration_ms: u32,
    /// Time to first token, for streamed calls that produced one.
    pub ttft_ms: Option<u32>,
    /// As the producer recorded it (32 hex digits from the proxy and OTLP,
    /// other text from other producers; empty when none).
    pub trace_id: String,
    /// The span that made the call (16 hex digits), or empty.
    pub span_id: String,
}

/// One row of the statement; fields in SELECT order.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct SlowCallRow {
    occurred_at_ms: u64,
    call_id: String,
    attempt: u16,
    org_id: String,
    team_id: String,
    provider_name: String,
    model_name: String,
    outcome_name: String,
    http_status: u16,
    duration_ms: u32,
    has_ttft: u8,
    ttft_ms: u32,
    trace_id: String,
    span_id: String,
}

/// The filters' columns in `calls`, in the order of [`LatencyFilters`].
fn filter_binds(filters: &LatencyFilters) -> Vec<(&'static str, &str)> {
    [
        ("provider", filters.provider.as_deref()),
        ("model", filters.model.as_deref()),
        ("team_id", filters.team.as_deref()),
        ("org_id", filters.org.as_deref()),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|v| (column, v)))
    .collect()
}

/// The `limit` longest terminal attempts of the window (ties by event
/// id, so the order is stable).
fn slowest_sql(query: &LatencyQuery, limit: u32) -> BoundSql {
    let mut template = "SELECT occurred_at_ms, call_id, attempt, org_id, team_id, \
         toString(provider) AS provider_name, toString(model) AS model_name, \
         toString(outcome) AS outcome_name, http_status, duration_ms, has_ttft, ttft_ms, \
         trace_id, span_id FROM calls \
         WHERE kind IN ('ai.call.completed', 'ai.call.failed') \
         AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)"
        .to_string();
    let mut binds = vec![
        SqlValue::UInt(epoch(query.from)),
        SqlValue::UInt(epoch(query.to)),
    ];
    for (column, value) in filter_binds(&query.filters) {
        template.push_str(&format!(" AND {column} = ?"));
        binds.push(SqlValue::Str(value.to_string()));
    }
    template.push_str(&format!(
        " ORDER BY duration_ms DESC, event_id LIMIT {limit}"
    ));
    BoundSql {
        name: "latency.slowest_calls",
        template,
        binds,
    }
}

pub(crate) async fn run(
    models: &ReadModels,
    query: &LatencyQuery,
) -> Result<Vec<SlowCall>, ReadModelError> {
    let sql = slowest_sql(query, SLOWEST_CALLS);
    let rows = models
        .bounded(sql.query(models.client()).fetch_all::<SlowCallRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    Ok(rows
        .into_iter()
        .map(|r| SlowCall {
            occurred_at: i64::try_from(r.occurred_at_ms)
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default(),
            call_id: r.call_id,
            attempt: r.attempt,
            org: r.org_id,
            team: r.team_id,
            provider: r.provider_name,
            model: r.model_name,
            outcome: r.outcome_name,
            http_status: r.http_status,
            duration_ms: r.duration_ms,
            ttft_ms: (r.has_ttft != 0).then_some(r.ttft_ms),
            trace_id: r.trace_id,
            span_id: r.span_id,
        })
        .collect())
}

/// The list as a table (its CSV).
pub fn table(calls: &[SlowCall]) -> Table {
    let mut table = Table::new([
        "occurred_at",
        "call_id",
        "attempt",
        "org",
        "team",
        "provider",
        "model",
        "outcome",
        "http_status",
        "duration_ms",
        "ttft_ms",
        "trace_id",
        "span_id",
    ]);
    for c in calls {
        table.push([
            c.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            c.call_id.clone(),
            c.attempt.to_string(),
            c.org.clone(),
            c.team.clone(),
            c.provider.clone(),
            c.model.clone(),
            c.outcome.clone(),
            c.http_status.to_string(),
            c.duration_ms.to_string(),
            c.ttft_ms.map(|t| t.to_string()).unwrap_or_default(),
            c.trace_id.clone(),
            c.span_id.clone(),
        ]);
    }
    table
}

/// Sample statements for [`super::sql_catalog`]: unfiltered and with
/// every filter.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let from = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let to = DateTime::from_timestamp(1_767_225_600 + 3_600, 0).unwrap_or_default();
    let plain = LatencyQuery {
        from,
        to,
        bucket_secs: 300,
        group_by: Vec::new(),
        filters: LatencyFilters::default(),
    };
    let filtered = LatencyQuery {
        filters: LatencyFilters {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            team: Some("team-a".into()),
            org: Some("org-1".into()),
        },
        ..plain.clone()
    };
    let mut filtered_sql = slowest_sql(&filtered, SLOWEST_CALLS);
    filtered_sql.name = "latency.slowest_calls.filtered";
    vec![slowest_sql(&plain, SLOWEST_CALLS), filtered_sql]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn filters_bind_their_values_and_the_csv_has_the_trace() {
        let catalog = catalog();
        let filtered = catalog[1].text();
        assert!(filtered.contains("AND provider = 'openai'"), "{filtered}");
        assert!(filtered.contains("AND org_id = 'org-1'"), "{filtered}");
        assert!(filtered.ends_with("ORDER BY duration_ms DESC, event_id LIMIT 20"));
        let calls = crate::samples::slowest_calls();
        let csv = table(&calls[..1]).to_csv();
        assert_eq!(
            csv,
            "occurred_at,call_id,attempt,org,team,provider,model,outcome,http_status,duration_ms,ttft_ms,trace_id,span_id\n\
             2026-03-10T10:04:09.120Z,0195d0a0-0000-7000-8000-000000000001,1,acme,search,openai,gpt-4o,success,200,9120,,4bf92f3577b34da6a3ce929d0e0e4736,00f067aa0ba902b7\n"
        );
    }
}
