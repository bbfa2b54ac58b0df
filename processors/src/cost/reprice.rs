//! Repricing: after a price correction, recompute the cost of the stored
//! calls of one provider/model in a time range and post the differences.
//!
//! Facts are never edited. For each call whose effective price (its `calls`
//! row plus earlier adjustments) differs from what the catalog now says,
//! two rows go to `cost_adjustments`: a reversal of what is on record
//! (negated counts, tokens and cost, old price version) and a posting of the
//! new cost. Both carry the call's tags. The `cost_adjustments_mv` and
//! `cost_adjustments_tags_mv` views fold them into `cost_daily` and
//! `cost_daily_tags` in the same insert, so facts and rollups stay
//! consistent. A call's reversal
//! and posting are always in the same insert, and an insert never spans two
//! months (one ClickHouse partition, so it is atomic). Re-running finds
//! every call already at its catalog price and writes nothing; a run that
//! crashed half-way is finished by running it again. Runs for the same
//! model are serialized by a PostgreSQL advisory lock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use super::prices::PriceCatalog;
use crate::folds::calls::cost::{
    call_cost, from_mantissa, is_billable, to_mantissa, BillableUsage,
};

/// The calls of one model in a range, with what a price needs.
const CALLS_SQL: &str = "SELECT event_id, kind, occurred_at, occurred_at_ms, org_id, team_id, user_id, api_key_id, \
     toString(provider) AS provider, toString(model) AS model, input_tokens, output_tokens, cached_input_tokens, \
     cache_write_tokens, reasoning_tokens, toUInt64(images) AS images, audio_ms, tag_keys, tag_values \
     FROM calls WHERE provider = ? AND model = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     AND kind IN ('ai.call.completed', 'ai.call.failed')";

/// What is on record per call and price version: the `calls` row plus
/// every adjustment. A call normally has one group with `n = 1`.
const ON_RECORD_SQL: &str = "SELECT event_id, price_version, toInt64(sum(n)) AS s_n, sum(cost) AS s_cost, \
     toInt64(sum(unpriced)) AS s_unpriced FROM ( \
       SELECT event_id, price_version, toInt64(1) AS n, cost, toInt64(1 - priced) AS unpriced FROM calls \
       WHERE provider = ? AND model = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
       AND kind IN ('ai.call.completed', 'ai.call.failed') \
       UNION ALL \
       SELECT event_id, price_version, toInt64(sign) AS n, cost, toInt64(unpriced) AS unpriced FROM cost_adjustments \
       WHERE provider = ? AND model = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     ) GROUP BY event_id, price_version HAVING s_n != 0 OR s_cost != 0";

/// Every provider/model with billable calls in a range: what `reprice --all`
/// walks after a change of the formula itself.
const MODELS_SQL: &str =
    "SELECT toString(provider) AS provider, toString(model) AS model FROM calls \
     WHERE occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     AND kind IN ('ai.call.completed', 'ai.call.failed') \
     GROUP BY provider, model ORDER BY provider, model";

#[derive(Debug, Clone, Row, Deserialize)]
struct ModelWithCalls {
    provider: String,
    model: String,
}

/// The `(provider, model)` pairs with billable calls in `[from, to)`, sorted.
pub async fn models_with_calls(
    client: &Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> clickhouse::error::Result<Vec<(String, String)>> {
    let rows: Vec<ModelWithCalls> = client
        .query(MODELS_SQL)
        .bind(epoch(from))
        .bind(epoch(to))
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.model)).collect())
}

/// The statements, with sample values, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    let client = Client::default();
    let models = client
        .query(MODELS_SQL)
        .bind(1_772_000_000u32)
        .bind(1_772_086_400u32);
    let calls = bind(
        client.query(CALLS_SQL),
        "openai",
        "gpt-4o",
        1_772_000_000,
        1_772_086_400,
    );
    let record = bind(
        bind(
            client.query(ON_RECORD_SQL),
            "openai",
            "gpt-4o",
            1_772_000_000,
            1_772_086_400,
        ),
        "openai",
        "gpt-4o",
        1_772_000_000,
        1_772_086_400,
    );
    vec![
        ("reprice.models".into(), models.sql_display().to_string()),
        ("reprice.calls".into(), calls.sql_display().to_string()),
        ("reprice.on_record".into(), record.sql_display().to_string()),
    ]
}

fn bind(
    q: clickhouse::query::Query,
    provider: &str,
    model: &str,
    from: u32,
    to: u32,
) -> clickhouse::query::Query {
    q.bind(provider).bind(model).bind(from).bind(to)
}

#[derive(Debug, Clone, Row, Deserialize)]
struct CallFact {
    event_id: String,
    kind: String,
    occurred_at: u32,
    occurred_at_ms: u64,
    org_id: String,
    team_id: String,
    user_id: String,
    api_key_id: String,
    provider: String,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    images: u64,
    audio_ms: u64,
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
}

#[derive(Debug, Clone, Row, Deserialize)]
struct OnRecord {
    event_id: String,
    price_version: u64,
    n: i64,
    cost: i128,
    unpriced: i64,
}

/// One row of `cost_adjustments`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct AdjustmentRow {
    pub event_id: String,
    pub occurred_at: u32,
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    pub api_key_id: String,
    pub provider: String,
    pub model: String,
    pub price_version: u64,
    pub sign: i8,
    pub unpriced: i8,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub images: i64,
    pub audio_ms: i64,
    pub cost: i128,
    pub reprice_id: String,
    pub adjusted_at: u32,
    /// The call's tags, so `cost_adjustments_tags_mv` corrects the tag
    /// rollup (`cost_daily_tags`, 0023) as `cost_adjustments_mv` corrects
    /// `cost_daily`.
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
}

/// What one call should be on record as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    version: u64,
    cost: i128,
    priced: bool,
}

/// Why repricing failed.
#[derive(Debug, thiserror::Error)]
pub enum RepriceError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("call {event_id}: {reason}")]
    Inconsistent { event_id: String, reason: String },
}

/// The plan of a run: the adjustment rows per call, grouped by month.
#[derive(Debug, Default)]
pub struct Plan {
    pub calls_examined: u64,
    /// Calls whose cost or version changes.
    pub calls_changed: u64,
    /// Net change of the total cost (mantissa at scale 12).
    pub cost_delta: i128,
    /// Per month (`YYYYMM`), per call, its reversal and posting rows.
    pub by_month: std::collections::BTreeMap<u32, Vec<Vec<AdjustmentRow>>>,
}

/// Read the calls of `provider`/`model` in `[from, to)` and what is on
/// record for them, and plan the adjustments that bring each call to the
/// price `catalog` gives it.
pub async fn plan(
    client: &Client,
    catalog: &PriceCatalog,
    provider: &str,
    model: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    reprice_id: &str,
) -> Result<Plan, RepriceError> {
    let (f, t) = (epoch(from), epoch(to));
    let facts: Vec<CallFact> = bind(client.query(CALLS_SQL), provider, model, f, t)
        .fetch_all()
        .await?;
    let records: Vec<OnRecord> = bind(
        bind(client.query(ON_RECORD_SQL), provider, model, f, t),
        provider,
        model,
        f,
        t,
    )
    .fetch_all()
    .await?;
    let mut on_record: HashMap<String, Vec<OnRecord>> = HashMap::new();
    for r in records {
        on_record.entry(r.event_id.clone()).or_default().push(r);
    }
    // Duplicated deliveries of one event are separate rows with the same
    // event_id; plan each event once, for all its copies.
    let mut seen = std::collections::HashSet::new();
    let now = epoch(Utc::now());
    let mut plan = Plan::default();
    for fact in facts {
        if !is_billable(&fact.kind) || !seen.insert(fact.event_id.clone()) {
            continue;
        }
        plan.calls_examined += 1;
        let target = target(&fact, catalog);
        let groups = on_record.remove(&fact.event_id).unwrap_or_default();
        let copies: i64 = groups.iter().map(|g| g.n).sum();
        let settled = groups.iter().all(|g| {
            g.price_version == target.version
                && g.cost == target.cost * i128::from(g.n)
                && g.unpriced == if target.priced { 0 } else { g.n }
        });
        if settled && copies >= 1 {
            continue;
        }
        if copies < 1 {
            return Err(RepriceError::Inconsistent {
                event_id: fact.event_id,
                reason: format!("{copies} copies on record"),
            });
        }
        let mut rows = Vec::new();
        for g in &groups {
            rows.push(adjustment(
                &fact,
                g.price_version,
                -g.n,
                -g.unpriced,
                -g.cost,
                reprice_id,
                now,
            ));
            plan.cost_delta -= g.cost;
        }
        let unpriced = if target.priced { 0 } else { copies };
        rows.push(adjustment(
            &fact,
            target.version,
            copies,
            unpriced,
            target.cost * i128::from(copies),
            reprice_id,
            now,
        ));
        plan.cost_delta += target.cost * i128::from(copies);
        plan.calls_changed += 1;
        let month = month_of(fact.occurred_at);
        plan.by_month.entry(month).or_default().push(rows);
    }
    Ok(plan)
}

fn target(fact: &CallFact, catalog: &PriceCatalog) -> Target {
    let unpriced = Target {
        version: 0,
        cost: 0,
        priced: false,
    };
    let Some(at) = i64::try_from(fact.occurred_at_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
    else {
        return unpriced;
    };
    let Some(price) = catalog.lookup(&fact.provider, &fact.model, at) else {
        return unpriced;
    };
    let usage = BillableUsage {
        input_tokens: fact.input_tokens,
        output_tokens: fact.output_tokens,
        cached_input_tokens: fact.cached_input_tokens,
        cache_write_tokens: fact.cache_write_tokens,
        reasoning_tokens: fact.reasoning_tokens,
        images: fact.images,
        audio_ms: fact.audio_ms,
        requests: u64::from(fact.kind == tollgate_contract::KIND_CALL_COMPLETED),
    };
    match call_cost(&usage, price) {
        Ok(cost) => Target {
            version: u64::try_from(price.id).unwrap_or(0),
            cost: to_mantissa(cost),
            priced: true,
        },
        Err(_) => unpriced,
    }
}

/// One adjustment row of `n` copies (negative for a reversal).
fn adjustment(
    fact: &CallFact,
    price_version: u64,
    n: i64,
    unpriced: i64,
    cost: i128,
    reprice_id: &str,
    now: u32,
) -> AdjustmentRow {
    let t = |v: u64| i64::try_from(v).unwrap_or(i64::MAX).saturating_mul(n);
    AdjustmentRow {
        event_id: fact.event_id.clone(),
        occurred_at: fact.occurred_at,
        org_id: fact.org_id.clone(),
        team_id: fact.team_id.clone(),
        user_id: fact.user_id.clone(),
        api_key_id: fact.api_key_id.clone(),
        provider: fact.provider.clone(),
        model: fact.model.clone(),
        price_version,
        sign: i8::try_from(n.signum()).unwrap_or(0),
        unpriced: i8::try_from(unpriced.clamp(-127, 127)).unwrap_or(0),
        input_tokens: t(fact.input_tokens),
        output_tokens: t(fact.output_tokens),
        cached_input_tokens: t(fact.cached_input_tokens),
        cache_write_tokens: t(fact.cache_write_tokens),
        reasoning_tokens: t(fact.reasoning_tokens),
        images: t(fact.images),
        audio_ms: t(fact.audio_ms),
        cost,
        reprice_id: reprice_id.to_string(),
        adjusted_at: now,
        tag_keys: fact.tag_keys.clone(),
        tag_values: fact.tag_values.clone(),
    }
}

/// Insert one chunk of adjustment rows (all of one month).
pub async fn insert(client: &Client, rows: &[AdjustmentRow]) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<AdjustmentRow>("cost_adjustments").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// The net cost change as a decimal, for reports.
pub fn delta_decimal(plan: &Plan) -> Option<rust_decimal::Decimal> {
    from_mantissa(plan.cost_delta)
}

fn epoch(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX)
}

fn month_of(secs: u32) -> u32 {
    use crate::folds::calls::rows::{PartitionClock, PartitionKey};
    match PartitionClock::Utc.key(secs) {
        PartitionKey::Month(m) => m,
        PartitionKey::Uncertain => 0,
    }
}
