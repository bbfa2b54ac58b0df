//! What repricing decides for each stored call: its facts and what is on
//! record for it (the `calls` row plus every `cost_adjustments` row), and,
//! given a catalog, whether and how its cost changes. `tollgate reprice`
//! (`tollgate_processors::cost::reprice`) turns the changes into reversal
//! and posting rows; the admin price page's preview
//! (`tollgate_queries::reprice_preview`) counts them with a proposed
//! version added to the catalog. Both read and decide here, so the preview
//! shows exactly what a run would then change.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::Deserialize;

use tollgate_contract::catalog::PriceCatalog;
use tollgate_contract::cost::{call_cost, to_mantissa, BillableUsage};
use tollgate_contract::{is_billable, KIND_CALL_COMPLETED};

/// The calls of one model in a range, with what a price needs.
pub const CALLS_SQL: &str = "SELECT event_id, kind, occurred_at, occurred_at_ms, org_id, team_id, user_id, api_key_id, \
     toString(provider) AS provider, toString(model) AS model, input_tokens, output_tokens, cached_input_tokens, \
     cache_write_tokens, reasoning_tokens, toUInt64(images) AS images, audio_ms, tag_keys, tag_values \
     FROM calls WHERE provider = ? AND model = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     AND kind IN ('ai.call.completed', 'ai.call.failed')";

/// What is on record per call and price version: the `calls` row plus
/// every adjustment. A call normally has one group with `n = 1`.
pub const ON_RECORD_SQL: &str = "SELECT event_id, price_version, toInt64(sum(n)) AS s_n, sum(cost) AS s_cost, \
     toInt64(sum(unpriced)) AS s_unpriced FROM ( \
       SELECT event_id, price_version, toInt64(1) AS n, cost, toInt64(1 - priced) AS unpriced FROM calls \
       WHERE provider = ? AND model = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
       AND kind IN ('ai.call.completed', 'ai.call.failed') \
       UNION ALL \
       SELECT event_id, price_version, toInt64(sign) AS n, cost, toInt64(unpriced) AS unpriced FROM cost_adjustments \
       WHERE provider = ? AND model = ? AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
     ) GROUP BY event_id, price_version HAVING s_n != 0 OR s_cost != 0";

/// One stored call, as repricing reads it.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct CallFact {
    pub event_id: String,
    pub kind: String,
    pub occurred_at: u32,
    pub occurred_at_ms: u64,
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    pub api_key_id: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub images: u64,
    pub audio_ms: u64,
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
}

/// What is on record for one call at one price version.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct OnRecord {
    pub event_id: String,
    pub price_version: u64,
    /// Copies on record (a call delivered twice is 2).
    pub n: i64,
    /// Cost mantissa at scale 12, summed over the copies.
    pub cost: i128,
    pub unpriced: i64,
}

/// What one call should be on record as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub version: u64,
    /// Cost mantissa of one copy at scale 12.
    pub cost: i128,
    pub priced: bool,
}

/// A call whose cost or version changes: what is reversed (`on_record`)
/// and what is posted (`target` for each of its `copies`).
#[derive(Debug, Clone)]
pub struct Change {
    pub fact: CallFact,
    pub on_record: Vec<OnRecord>,
    pub target: Target,
    pub copies: i64,
}

impl Change {
    /// Net change of the cost on record (mantissa at scale 12).
    pub fn cost_delta(&self) -> i128 {
        let reversed: i128 = self.on_record.iter().map(|g| g.cost).sum();
        self.target.cost * i128::from(self.copies) - reversed
    }
}

/// The calls of a range and the changes a catalog makes to them.
#[derive(Debug, Default)]
pub struct Changes {
    /// Billable calls examined (each event once, whatever its copies).
    pub calls_examined: u64,
    pub changes: Vec<Change>,
}

impl Changes {
    /// Net change of the total cost (mantissa at scale 12).
    pub fn cost_delta(&self) -> i128 {
        self.changes.iter().map(Change::cost_delta).sum()
    }
}

/// Why the changes could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum RepricingError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("call {event_id}: {reason}")]
    Inconsistent { event_id: String, reason: String },
}

/// The stored calls of `provider`/`model` in `[from, to)` and what is on
/// record for them.
pub async fn read(
    client: &Client,
    provider: &str,
    model: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> clickhouse::error::Result<(Vec<CallFact>, Vec<OnRecord>)> {
    let (f, t) = (epoch(from), epoch(to));
    let facts = bind(client.query(CALLS_SQL), provider, model, f, t)
        .fetch_all()
        .await?;
    let records = bind(
        bind(client.query(ON_RECORD_SQL), provider, model, f, t),
        provider,
        model,
        f,
        t,
    )
    .fetch_all()
    .await?;
    Ok((facts, records))
}

/// Read the calls of `provider`/`model` in `[from, to)` and decide which
/// of them `catalog` changes.
pub async fn changes(
    client: &Client,
    catalog: &PriceCatalog,
    provider: &str,
    model: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Changes, RepricingError> {
    let (facts, records) = read(client, provider, model, from, to).await?;
    decide(facts, records, catalog)
}

/// Pure: which of `facts` `catalog` changes, given what is on record.
pub fn decide(
    facts: Vec<CallFact>,
    records: Vec<OnRecord>,
    catalog: &PriceCatalog,
) -> Result<Changes, RepricingError> {
    let mut on_record: HashMap<String, Vec<OnRecord>> = HashMap::new();
    for r in records {
        on_record.entry(r.event_id.clone()).or_default().push(r);
    }
    // Duplicated deliveries of one event are separate rows with the same
    // event_id; decide each event once, for all its copies.
    let mut seen = HashSet::new();
    let mut out = Changes::default();
    for fact in facts {
        if !is_billable(&fact.kind) || !seen.insert(fact.event_id.clone()) {
            continue;
        }
        out.calls_examined += 1;
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
            return Err(RepricingError::Inconsistent {
                event_id: fact.event_id,
                reason: format!("{copies} copies on record"),
            });
        }
        out.changes.push(Change {
            fact,
            on_record: groups,
            target,
            copies,
        });
    }
    Ok(out)
}

/// The price `catalog` gives one call now.
pub fn target(fact: &CallFact, catalog: &PriceCatalog) -> Target {
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
        requests: u64::from(fact.kind == KIND_CALL_COMPLETED),
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

/// The statements, with sample values, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    let client = Client::default();
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

/// Seconds since the epoch as `occurred_at` stores them (0 before 1970).
pub fn epoch(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX)
}
