//! The Rust models of the folds ClickHouse runs as views, checked against
//! the views themselves: a varied set of call rows (teams, users, models,
//! days across a month boundary, tags, unpriced, failed and blocked calls)
//! made by the calls fold's pure part and stored through its real sink,
//! then `cost_daily` and `cost_daily_tags` compared with
//! `folds::cost_rollup::model` cell by cell, to the last decimal place.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, TimeZone, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::Deserialize;
use support::TestEnv;
use tollgate_contract::catalog::{PriceCatalog, PriceVersion, SharedCatalog};
use tollgate_contract::cost::from_mantissa;
use tollgate_contract::Event;
use tollgate_control::config::ClickHouseConfig;
use tollgate_processors::fold::{Fold, MessageMeta};
use tollgate_processors::folds::calls::fold::CallsFold;
use tollgate_processors::folds::calls::rows::{
    call_record, priced_call_row, CallRecord, CallRow, PartitionClock,
};
use tollgate_processors::folds::calls::sink::ClickHouseCallsSink;
use tollgate_processors::folds::cost_rollup::model::{CostRollup, RollupKey, RollupSums};
use tollgate_processors::folds::cost_rollup::{
    BY_KEY_CELLS_SQL, BY_TEAM_CELLS_SQL, BY_USER_CELLS_SQL, CELLS_SQL, TAG_CELLS_SQL,
};
use tollgate_processors::progress::{folded, Progress};

/// One cell as the views hold it and as the model computes it: the key's
/// eight parts (day as `YYYY-MM-DD`) and calls, unpriced calls, input and
/// output tokens and the exact cost.
type Cells = BTreeMap<(String, String, String, String, String, String, String, u64), Sums>;
type Sums = (i64, i64, i64, i64, Decimal);

#[derive(Debug, Row, Deserialize)]
struct CellRow {
    day: String,
    a: String,
    b: String,
    c: String,
    d: String,
    provider: String,
    model: String,
    price_version: u64,
    calls: i64,
    unpriced: i64,
    input: i64,
    output: i64,
    cost: String,
}

fn price(id: i64, model: &str, from: DateTime<Utc>, input: &str, output: &str) -> PriceVersion {
    PriceVersion {
        id,
        provider: "openai".into(),
        model: model.into(),
        effective_from: from,
        input_per_token: input.parse().unwrap(),
        output_per_token: output.parse().unwrap(),
        cache_read_per_token: Some("0.000000123456789".parse().unwrap()),
        cache_write_per_token: None,
        reasoning_per_token: None,
        per_image: Decimal::ZERO,
        per_audio_second: Decimal::ZERO,
        per_request: "0.000000000001".parse().unwrap(),
        tiers: Vec::new(),
        source: "test".into(),
        note: String::new(),
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 30, 0, 0, 0).unwrap()
}

/// A price change on the second day, so one model has two versions.
fn catalog() -> PriceCatalog {
    PriceCatalog::new([
        price(1, "gpt-4o", start(), "0.0000025", "0.00001"),
        price(2, "gpt-4o", start() + Days::new(1), "0.000003", "0.000011"),
        price(3, "gpt-4o-mini", start(), "0.00000015", "0.0000006"),
    ])
}

/// Call `i` of a spread that varies every dimension independently.
fn event(i: u64) -> Event {
    let kinds = [
        ("ai.call.completed", "success"),
        ("ai.call.completed", "success"),
        ("ai.call.failed", "error"),
        ("ai.call.blocked", "blocked"),
    ];
    let (kind, outcome) = kinds[usize::try_from(i % 4).unwrap()];
    let models = ["gpt-4o", "gpt-4o-mini", "mystery-model"];
    let model = models[usize::try_from(i % 3).unwrap()];
    let tags = match i % 5 {
        0 => serde_json::json!({}),
        1 => serde_json::json!({"feature": "search"}),
        2 => serde_json::json!({"feature": "chat", "variant": "b"}),
        3 => serde_json::json!({"variant": "a"}),
        _ => serde_json::json!({"feature": "search", "variant": "a"}),
    };
    // Four days from 30 March: across the month boundary, the second
    // day's calls on both sides of the price change.
    let occurred_at = start() + chrono::Duration::minutes(i64::try_from(i * 97 % 5760).unwrap());
    let input = 1000 + i * 7919 % 50_000;
    serde_json::from_value(serde_json::json!({
        "schema_version": 1,
        "event_id": uuid::Uuid::now_v7(),
        "kind": kind,
        "occurred_at": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "org_id": format!("org-{}", i % 2),
        "team_id": format!("team-{}", i % 3),
        "user_id": format!("user-{}", i % 4),
        // Not a function of org, team and user (those repeat every 12
        // calls): each user calls with both keys, each key serves several
        // users, so the rollups per user and per key both sum cells.
        "api_key_id": format!("key-{}", i / 12 % 2),
        "tags": tags,
        "call": {
            "call_id": format!("c{i}"), "provider": "openai", "model": model,
            "operation": "chat", "duration_ms": 10, "outcome": outcome,
            "usage": {"input_tokens": input, "output_tokens": i * 31 % 4000,
                      "cached_input_tokens": input * (i % 3) / 4}
        }
    }))
    .unwrap()
}

fn day(days_since_epoch: i64) -> String {
    (DateTime::<Utc>::UNIX_EPOCH + Days::new(u64::try_from(days_since_epoch).unwrap()))
        .format("%Y-%m-%d")
        .to_string()
}

fn sums(s: &RollupSums) -> Sums {
    (
        s.calls,
        s.unpriced_calls,
        s.input_tokens,
        s.output_tokens,
        from_mantissa(s.cost).unwrap(),
    )
}

/// The model's cells (`cells` or `tag_cells`, whose keys have the same
/// shape) as the views show them.
fn model_cells(cells: &BTreeMap<RollupKey, RollupSums>) -> Cells {
    cells
        .iter()
        .map(|(k, v)| {
            let key = (
                day(k.0),
                k.1.clone(),
                k.2.clone(),
                k.3.clone(),
                k.4.clone(),
                k.5.clone(),
                k.6.clone(),
                k.7,
            );
            (key, sums(v))
        })
        .collect()
}

async fn view_cells(client: &clickhouse::Client, sql: &str) -> Cells {
    let rows: Vec<CellRow> = client.query(sql).fetch_all().await.unwrap();
    rows.into_iter()
        .map(|r| {
            let key = (
                r.day,
                r.a,
                r.b,
                r.c,
                r.d,
                r.provider,
                r.model,
                r.price_version,
            );
            let cost: Decimal = r.cost.parse().unwrap();
            (key, (r.calls, r.unpriced, r.input, r.output, cost))
        })
        .collect()
}

/// Row by row, so a failure names the cells that differ.
fn assert_same(view: &str, got: &Cells, want: &Cells) {
    for (key, sums) in want {
        assert_eq!(got.get(key), Some(sums), "{view}: cell {key:?}");
    }
    for key in got.keys() {
        assert!(
            want.contains_key(key),
            "{view}: cell {key:?} not in the model"
        );
    }
}

/// The typed row the calls fold's pure part makes for `event` at `meta`
/// (what the models read), and the encoded record the fold itself makes of
/// it (what its sink stores): the two agree.
fn made(
    fold: &mut CallsFold<ClickHouseCallsSink>,
    event: &Event,
    meta: MessageMeta<'_>,
) -> (CallRow, CallRecord) {
    let now = Utc::now();
    let record = fold.row(event, meta, now).unwrap().unwrap();
    let row = priced_call_row(event, meta.partition, meta.offset, now, &catalog())
        .unwrap()
        .unwrap();
    assert_eq!(record, call_record(&row).unwrap());
    (row, record)
}

#[tokio::test]
async fn cost_rollup_model_matches_the_views_cell_by_cell() {
    let env = TestEnv::new("fold_models").await;
    let client = tollgate_control::clickhouse::client(&ClickHouseConfig {
        url: support::clickhouse_url(),
        database: env.ch_database.clone(),
        ..ClickHouseConfig::default()
    });
    let progress = Progress::new(&env.events_topic);
    let mut fold = CallsFold::new(
        PartitionClock::Utc,
        SharedCatalog::new(catalog()),
        ClickHouseCallsSink::new(client.clone(), progress),
    );

    // 240 calls over 2 Kafka partitions, stored in batches that never span
    // a month (as the consumer runtime cuts them).
    let mut rows: Vec<CallRow> = Vec::new();
    let mut records: Vec<CallRecord> = Vec::new();
    for i in 0..240u64 {
        let partition = i32::try_from(i % 2).unwrap();
        let meta = MessageMeta {
            partition,
            offset: i64::try_from(i / 2).unwrap(),
            key: None,
        };
        let (row, record) = made(&mut fold, &event(i), meta);
        rows.push(row);
        records.push(record);
    }
    assert!(rows
        .iter()
        .any(|r| r.priced == 0 && r.kind == "ai.call.completed"));
    assert!(rows.iter().any(|r| r.price_version == 2));
    let mut batches: BTreeMap<(String, usize), Vec<CallRecord>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let month = DateTime::from_timestamp(i64::from(row.occurred_at), 0)
            .unwrap()
            .format("%Y%m")
            .to_string();
        batches
            .entry((month, i / 50))
            .or_default()
            .push(records[i].clone());
    }
    assert!(batches.keys().any(|(m, _)| m == "202604"));
    for batch in batches.values() {
        fold.store(batch).await.unwrap();
    }

    let mut model = CostRollup::default();
    for row in &rows {
        assert!(model.apply(row));
    }
    let (want_cells, want_tags) = (model_cells(&model.cells), model_cells(&model.tag_cells));
    assert!(want_cells.len() > 20 && want_tags.len() > 20);

    // The views are written by the same insert; poll in case the server
    // makes them visible a moment later.
    let billable: i64 = want_cells.values().map(|s| s.0).sum();
    let deadline = Instant::now() + crate::support::PATIENCE;
    let (cells, tags) = loop {
        let cells = view_cells(&client, CELLS_SQL).await;
        let tags = view_cells(&client, TAG_CELLS_SQL).await;
        let stored: i64 = cells.values().map(|s| s.0).sum();
        if stored >= billable || Instant::now() > deadline {
            break (cells, tags);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_same("cost_daily", &cells, &want_cells);
    assert_same("cost_daily_tags", &tags, &want_tags);
    // The rollup without user and key: the model's cells summed over both
    // (fewer cells than cost_daily: the spread has several users per team).
    let want_by_team = model_cells(&model.by_team_cells());
    assert!(want_by_team.len() > 5 && want_by_team.len() < want_cells.len());
    let by_team = view_cells(&client, BY_TEAM_CELLS_SQL).await;
    assert_same("cost_daily_by_team", &by_team, &want_by_team);
    // The rollups per user and per key: the model's cells summed over
    // everything but day, org, team and the caller.
    for (table, want, sql) in [
        (
            "cost_daily_by_user",
            model.by_user_cells(),
            BY_USER_CELLS_SQL,
        ),
        ("cost_daily_by_key", model.by_key_cells(), BY_KEY_CELLS_SQL),
    ] {
        let want = model_cells(&want);
        assert!(want.len() > 1 && want.len() < want_cells.len(), "{table}");
        assert_same(table, &view_cells(&client, sql).await, &want);
    }

    // The sink recorded the progress of every partition after the rows.
    let progress = folded(&client, &env.events_topic).await.unwrap();
    assert_eq!(progress.get(&0), Some(&119));
    assert_eq!(progress.get(&1), Some(&119));
}

// ---- The error-patterns fold -------------------------------------------

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::errors::{attempt, failed, shape_signature, SHAPES};
use tollgate_processors::folds::error_patterns::model::{
    ErrorPatterns, MinuteKey, MinuteSums, RecoveryKey, RecoverySums,
};
use tollgate_processors::folds::error_patterns::{
    CATALOG_SQL, MINUTE_CELLS_SQL, RECOVERY_CELLS_SQL,
};
use tollgate_processors::patterns::CatalogRow;

#[derive(Debug, Row, Deserialize)]
struct MinuteCell {
    at: u32,
    signature: u64,
    org_id: String,
    team_id: String,
    api_key_id: String,
    provider: String,
    model: String,
    failures: u64,
    recovered: u64,
    failed: u64,
}

#[derive(Debug, Row, Deserialize)]
struct RecoveryCell {
    from_signature: u64,
    from_provider: String,
    from_model: String,
    strategy: String,
    provider: String,
    model: String,
    at: u32,
    org_id: String,
    team_id: String,
    attempts: u64,
    successes: u64,
    wait_ms: u64,
    duration_ms: u64,
    cost: String,
}

/// A random call of one to three attempts: the first fails with a random
/// shape (or succeeds, or is refused), later ones retry or fall back and
/// end in success or failure; now and then an attempt without recovery
/// facts, a start event, or a call whose last attempt is never sent.
fn random_call(rng: &mut StdRng, base: DateTime<Utc>) -> Vec<Event> {
    let team = format!("team-{}", rng.random_range(0..3));
    let at = base + chrono::Duration::seconds(rng.random_range(0..3 * 3600));
    let usage = tollgate_contract::Usage {
        input_tokens: rng.random_range(0..5000),
        output_tokens: rng.random_range(0..2000),
        ..Default::default()
    };
    let ok = |provider: &str, model: &str, at| {
        support::events::call_event(
            &team,
            provider,
            model,
            at,
            usage.clone(),
            tollgate_contract::Outcome::Success,
        )
    };
    match rng.random_range(0..10) {
        0 => return vec![ok("openai", "gpt-4o", at)],
        1 => {
            let mut e = ok("openai", "gpt-4o", at);
            e.kind = tollgate_contract::EventKind::CallBlocked;
            if let Some(c) = e.call.as_mut() {
                c.outcome = tollgate_contract::Outcome::Blocked;
                c.http_status = 403;
            }
            return vec![e];
        }
        2 => {
            let mut e = ok("openai", "gpt-4o", at);
            e.kind = tollgate_contract::EventKind::CallStarted;
            return vec![e];
        }
        _ => {}
    }
    let shape = SHAPES[rng.random_range(0..SHAPES.len())];
    let first = failed(&team, &shape, rng, at);
    let message = first
        .call
        .as_ref()
        .and_then(|c| c.error.as_ref())
        .map(|e| e.message.clone())
        .unwrap();
    let sig = shape_signature(&shape, &message);
    let from = (shape.provider, shape.model);
    let attempts = rng.random_range(1..=3u16);
    let mut events = vec![if rng.random_bool(0.2) && attempts == 1 {
        first // no recovery facts at all: its only attempt
    } else {
        attempt(first, 1, 0, sig, from, attempts == 1)
    }];
    let targets = [
        (shape.provider, shape.model),
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-3-5-haiku-20241022"),
    ];
    for sequence in 2..=attempts {
        let (provider, model) = targets[rng.random_range(0..targets.len())];
        let when = at + chrono::Duration::seconds(i64::from(sequence) * 20);
        let last = sequence == attempts;
        let event = if last && rng.random_bool(0.6) {
            ok(provider, model, when)
        } else {
            let again = SHAPES[rng.random_range(0..SHAPES.len())];
            let mut e = failed(&team, &again, rng, when);
            if let Some(c) = e.call.as_mut() {
                c.provider = provider.into();
                c.model = model.into();
            }
            e
        };
        events.push(attempt(
            event,
            sequence,
            rng.random_range(0..3000),
            sig,
            from,
            last,
        ));
    }
    if attempts > 1 && rng.random_bool(0.1) {
        events.pop(); // the call's last attempt was lost
    }
    events
}

type Catalog = BTreeMap<(u64, String, u16, String, String), (u32, u32)>;

async fn view_patterns(
    client: &clickhouse::Client,
) -> (
    BTreeMap<MinuteKey, MinuteSums>,
    Catalog,
    BTreeMap<RecoveryKey, (u64, u64, u64, u64, Decimal)>,
) {
    let minutes: Vec<MinuteCell> = client.query(MINUTE_CELLS_SQL).fetch_all().await.unwrap();
    let catalog: Vec<CatalogRow> = client.query(CATALOG_SQL).fetch_all().await.unwrap();
    let recovery: Vec<RecoveryCell> = client.query(RECOVERY_CELLS_SQL).fetch_all().await.unwrap();
    (
        minutes
            .into_iter()
            .map(|c| {
                let key = (
                    c.at,
                    c.signature,
                    c.org_id,
                    c.team_id,
                    c.api_key_id,
                    c.provider,
                    c.model,
                );
                let sums = MinuteSums {
                    failures: c.failures,
                    calls_recovered: c.recovered,
                    calls_failed: c.failed,
                };
                (key, sums)
            })
            .collect(),
        catalog
            .into_iter()
            .map(|c| {
                let key = (
                    c.signature,
                    c.provider,
                    c.http_status,
                    c.error_type,
                    c.template,
                );
                (key, (c.first_at, c.last_at))
            })
            .collect(),
        recovery
            .into_iter()
            .map(|c| {
                let key = (
                    c.from_signature,
                    c.from_provider,
                    c.from_model,
                    c.strategy,
                    c.provider,
                    c.model,
                    c.at,
                    c.org_id,
                    c.team_id,
                );
                let cost: Decimal = c.cost.parse().unwrap();
                (
                    key,
                    (c.attempts, c.successes, c.wait_ms, c.duration_ms, cost),
                )
            })
            .collect(),
    )
}

fn model_recovery(
    model: &BTreeMap<RecoveryKey, RecoverySums>,
) -> BTreeMap<RecoveryKey, (u64, u64, u64, u64, Decimal)> {
    model
        .iter()
        .map(|(k, s)| {
            let sums = (
                s.attempts,
                s.successes,
                s.wait_ms,
                s.duration_ms,
                from_mantissa(s.cost).unwrap(),
            );
            (k.clone(), sums)
        })
        .collect()
}

fn assert_same_map<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    view: &str,
    seed: u64,
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) {
    for (key, value) in want {
        assert_eq!(
            got.get(key),
            Some(value),
            "{view} (seed {seed}): cell {key:?}"
        );
    }
    for key in got.keys() {
        assert!(
            want.contains_key(key),
            "{view} (seed {seed}): cell {key:?} not in the model"
        );
    }
}

/// A property over random rows: three rounds of random calls (each round's
/// seed printed, so a failure can be replayed), stored through the calls
/// fold's real pure part and sink; after each round the three tables of
/// the error-patterns views equal the model over every row so far, cell
/// by cell, cost to the last decimal place.
#[tokio::test]
async fn error_patterns_model_matches_the_views_on_random_calls() {
    let env = TestEnv::new("fold_models_errors").await;
    let client = tollgate_control::clickhouse::client(&ClickHouseConfig {
        url: support::clickhouse_url(),
        database: env.ch_database.clone(),
        ..ClickHouseConfig::default()
    });
    let mut fold = CallsFold::new(
        PartitionClock::Utc,
        SharedCatalog::new(catalog()),
        ClickHouseCallsSink::new(client.clone(), Progress::new(&env.events_topic)),
    );
    let mut model = ErrorPatterns::default();
    let mut offsets = [0i64; 3];
    for round in 0..3 {
        let seed: u64 = rand::random();
        eprintln!("error patterns round {round}: seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let events: Vec<Event> = (0..60)
            .flat_map(|_| random_call(&mut rng, start()))
            .collect();
        let mut rows = Vec::new();
        for event in &events {
            let partition = rng.random_range(0..3usize);
            let meta = MessageMeta {
                partition: i32::try_from(partition).unwrap(),
                offset: offsets[partition],
                key: None,
            };
            offsets[partition] += 1;
            rows.push(made(&mut fold, event, meta));
        }
        let (rows, records): (Vec<CallRow>, Vec<CallRecord>) = rows.into_iter().unzip();
        for chunk in records.chunks(40) {
            fold.store(chunk).await.unwrap();
        }
        for row in &rows {
            assert!(model.apply(row));
        }
        let want_recovery = model_recovery(&model.recovery);
        let want_catalog: Catalog = model
            .catalog
            .iter()
            .map(|(k, s)| (k.clone(), (s.first, s.last)))
            .collect();
        let failures: u64 = model.minutes.values().map(|s| s.failures).sum();
        assert!(failures > 0 && !want_recovery.is_empty());
        let deadline = Instant::now() + crate::support::PATIENCE;
        let (minutes, catalog, recovery) = loop {
            let got = view_patterns(&client).await;
            let stored: u64 = got.0.values().map(|s| s.failures).sum();
            if stored >= failures || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_same_map("error_patterns_minute", seed, &minutes, &model.minutes);
        assert_same_map("error_pattern_catalog", seed, &catalog, &want_catalog);
        assert_same_map("error_recovery_minute", seed, &recovery, &want_recovery);
    }
}
