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

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use tollgate_control::prices::repricing::{self, epoch, CallFact};

use super::prices::PriceCatalog;
use crate::folds::calls::cost::from_mantissa;

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

/// The statements, with sample values, for the SQL compatibility check
/// (the per-call reads are `tollgate_control::prices::repricing`'s).
pub fn catalog() -> Vec<(String, String)> {
    let models = Client::default()
        .query(MODELS_SQL)
        .bind(1_772_000_000u32)
        .bind(1_772_086_400u32);
    std::iter::once((
        "reprice.models".to_string(),
        models.sql_display().to_string(),
    ))
    .chain(repricing::catalog())
    .collect()
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

/// Why repricing failed.
pub use tollgate_control::prices::repricing::RepricingError as RepriceError;

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
    let changes = repricing::changes(client, catalog, provider, model, from, to).await?;
    let now = epoch(Utc::now());
    let mut plan = Plan {
        calls_examined: changes.calls_examined,
        cost_delta: changes.cost_delta(),
        ..Plan::default()
    };
    for change in changes.changes {
        let fact = &change.fact;
        let mut rows = Vec::new();
        for g in &change.on_record {
            rows.push(adjustment(
                fact,
                g.price_version,
                -g.n,
                -g.unpriced,
                -g.cost,
                reprice_id,
                now,
            ));
        }
        let target = change.target;
        let unpriced = if target.priced { 0 } else { change.copies };
        rows.push(adjustment(
            fact,
            target.version,
            change.copies,
            unpriced,
            target.cost * i128::from(change.copies),
            reprice_id,
            now,
        ));
        plan.calls_changed += 1;
        let month = month_of(fact.occurred_at);
        plan.by_month.entry(month).or_default().push(rows);
    }
    Ok(plan)
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

fn month_of(secs: u32) -> u32 {
    use crate::folds::calls::rows::{PartitionClock, PartitionKey};
    match PartitionClock::Utc.key(secs) {
        PartitionKey::Month(m) => m,
        PartitionKey::Uncertain => 0,
    }
}
