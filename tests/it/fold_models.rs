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
use tollgate_processors::folds::calls::rows::{CallRow, PartitionClock};
use tollgate_processors::folds::calls::sink::ClickHouseCallsSink;
use tollgate_processors::folds::cost_rollup::model::{CostRollup, RollupKey, RollupSums};
use tollgate_processors::folds::cost_rollup::{CELLS_SQL, TAG_CELLS_SQL};
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
        "api_key_id": format!("key-{}", i % 2),
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

#[tokio::test]
async fn cost_rollup_model_matches_the_views_cell_by_cell() {
    let env = TestEnv::new("fold_models").await;
    let client = tollgate_control::clickhouse::client(&ClickHouseConfig {
        url: support::clickhouse_url(),
        database: env.ch_database.clone(),
        ..ClickHouseConfig::default()
    });
    let progress = Progress::new(&env.events_topic);
    let mut fold = CallsFold {
        clock: PartitionClock::Utc,
        prices: SharedCatalog::new(catalog()),
        sink: ClickHouseCallsSink::new(client.clone(), progress),
    };

    // 240 calls over 2 Kafka partitions, stored in batches that never span
    // a month (as the consumer runtime cuts them).
    let mut rows: Vec<CallRow> = Vec::new();
    for i in 0..240u64 {
        let partition = i32::try_from(i % 2).unwrap();
        let meta = MessageMeta {
            partition,
            offset: i64::try_from(i / 2).unwrap(),
            key: None,
        };
        rows.push(fold.row(&event(i), meta, Utc::now()).unwrap().unwrap());
    }
    assert!(rows
        .iter()
        .any(|r| r.priced == 0 && r.kind == "ai.call.completed"));
    assert!(rows.iter().any(|r| r.price_version == 2));
    let mut batches: BTreeMap<(String, usize), Vec<CallRow>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let month = DateTime::from_timestamp(i64::from(row.occurred_at), 0)
            .unwrap()
            .format("%Y%m")
            .to_string();
        batches
            .entry((month, i / 50))
            .or_default()
            .push(row.clone());
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
    let deadline = Instant::now() + Duration::from_secs(10);
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

    // The sink recorded the progress of every partition after the rows.
    let progress = folded(&client, &env.events_topic).await.unwrap();
    assert_eq!(progress.get(&0), Some(&119));
    assert_eq!(progress.get(&1), Some(&119));
}
