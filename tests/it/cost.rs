//! The cost fold end to end against real Kafka, ClickHouse and PostgreSQL:
//! prices imported with `tollgate prices import`, calls produced to the
//! events topic, `tollgate process` pricing them, the `cost_daily` rollup,
//! and the cost report (JSON, CSV and page) agreeing with the facts to the
//! last of 12 decimal places.

use crate::support;
use support::d;
use support::events::usage;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rust_decimal::Decimal;
use support::kafka::read_records;
use support::{kafka_brokers, TestEnv};
use tollgate_contract::{Event, Outcome, Usage};
use uuid::Uuid;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap()
}

/// One hand-computed case.
struct Case {
    name: &'static str,
    event: Event,
    /// `None`: unpriced.
    cost: Option<&'static str>,
    /// Which imported version must price it ("v1", "v2", "reason").
    version: Option<&'static str>,
}

/// A `kind` call of `team` on `testprov`/`model` (kind and outcome are
/// given apart: a blocked call is neither completed nor failed).
fn call(
    kind: &str,
    team: &str,
    model: &str,
    occurred_at: DateTime<Utc>,
    usage: Usage,
    outcome: Outcome,
) -> Event {
    let mut event =
        support::events::call_event(team, "testprov", model, occurred_at, usage, outcome);
    event.kind = kind.parse().unwrap();
    event
}

/// Prices (LiteLLM format): `tg-test` changes price at 12:00 on 2026-03-10;
/// `tg-reason` has a reasoning price, per-image and per-audio-second prices.
const PRICES_V1: &str = r#"{
  "tg-test": {"litellm_provider": "testprov", "effective_from": "2026-03-10T00:00:00Z",
              "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
              "cache_read_input_token_cost": 5e-07, "cache_creation_input_token_cost": 2.5e-06,
              "input_cost_per_request": 0.001},
  "tg-reason": {"litellm_provider": "testprov", "effective_from": "2026-01-01T00:00:00Z",
              "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06,
              "output_cost_per_reasoning_token": 1e-05, "output_cost_per_image": 0.01,
              "input_cost_per_audio_per_second": 0.0006},
  "tg-absurd": {"litellm_provider": "testprov", "effective_from": "2026-01-01T00:00:00Z",
              "input_cost_per_token": 100000000}
}"#;
const PRICES_V2: &str = r#"{
  "tg-test": {"litellm_provider": "testprov", "effective_from": "2026-03-10T12:00:00Z",
              "input_cost_per_token": 3e-06, "output_cost_per_token": 8e-06,
              "cache_read_input_token_cost": 5e-07, "cache_creation_input_token_cost": 2.5e-06,
              "input_cost_per_request": 0.001}
}"#;

fn cases() -> Vec<Case> {
    let completed = "ai.call.completed";
    let mut reason = usage(500, 0, 0, 1000, 600);
    reason.images = 2;
    reason.audio_seconds = 2.5;
    vec![
        Case {
            name: "cached input and cache writes, per-request fee (v1)",
            // Reads and writes are parts of the 1000 input tokens:
            // 400*0.000002 + 400*0.0000005 + 200*0.0000025 + 300*0.000008 + 0.001
            // (until wave 2 the writes were billed on top: 0.0053)
            event: call(
                completed,
                "team-a",
                "tg-test",
                at(6, 0),
                usage(1000, 400, 200, 300, 0),
                Outcome::Success,
            ),
            cost: Some("0.0049"),
            version: Some("v1"),
        },
        Case {
            name: "after the mid-day price change (v2)",
            // 1000*0.000003 + 100*0.000008 + 0.001
            event: call(
                completed,
                "team-a",
                "tg-test",
                at(13, 0),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
            cost: Some("0.0048"),
            version: Some("v2"),
        },
        Case {
            name: "exactly at the change takes the new price",
            // 10*0.000003 + 0.001
            event: call(
                completed,
                "team-b",
                "tg-test",
                at(12, 0),
                usage(10, 0, 0, 0, 0),
                Outcome::Success,
            ),
            cost: Some("0.00103"),
            version: Some("v2"),
        },
        Case {
            name: "failed call: usage billed, no per-request fee",
            // 1000*0.000003
            event: call(
                "ai.call.failed",
                "team-b",
                "tg-test",
                at(13, 30),
                usage(1000, 0, 0, 0, 0),
                Outcome::Error,
            ),
            cost: Some("0.003"),
            version: Some("v2"),
        },
        Case {
            name: "reasoning at its own price, images, audio",
            // 500*0.000001 + 400*0.000004 + 600*0.00001 + 2*0.01 + 2.5*0.0006
            event: call(
                completed,
                "team-b",
                "tg-reason",
                at(8, 0),
                reason,
                Outcome::Success,
            ),
            cost: Some("0.0296"),
            version: Some("reason"),
        },
        Case {
            name: "a cost of 10^16 USD or more is unpriced, never a clamped number",
            // 10^9 tokens (the contract's bound) * 10^8 USD = 10^17 USD
            event: call(
                completed,
                "team-b",
                "tg-absurd",
                at(8, 0),
                usage(1_000_000_000, 0, 0, 0, 0),
                Outcome::Success,
            ),
            cost: None,
            version: None,
        },
        Case {
            name: "model without a price is unpriced",
            event: call(
                completed,
                "team-b",
                "tg-unknown",
                at(8, 0),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
            cost: None,
            version: None,
        },
        Case {
            name: "before the first version is unpriced",
            event: call(
                completed,
                "team-a",
                "tg-test",
                at(0, 0) - chrono::Duration::hours(1),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
            cost: None,
            version: None,
        },
    ]
}

async fn produce(topic: &str, events: &[Event]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for e in events {
        let payload = serde_json::to_vec(e).unwrap();
        producer
            .send(
                FutureRecord::to(topic).key(&e.team_id).payload(&payload),
                crate::support::PATIENCE,
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn import(env: &TestEnv, text: &str) -> String {
    let path = env
        .dir
        .path()
        .join(format!("prices-{}.json", Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    let out = env
        .tollgate(&["prices", "import", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prices import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Version ids by model and effective_from, from `prices list --json`.
fn versions(env: &TestEnv) -> Vec<serde_json::Value> {
    let out = env
        .tollgate(&["prices", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn version_id(versions: &[serde_json::Value], model: &str, from: &str) -> u64 {
    versions
        .iter()
        .filter(|v| v["model"] == model && v["effective_from"].as_str().unwrap().starts_with(from))
        .map(|v| v["id"].as_u64().unwrap())
        .max()
        .unwrap_or_else(|| panic!("no version of {model} from {from}"))
}

#[tokio::test]
async fn costs_are_exact_end_to_end() {
    let mut env = TestEnv::new("cost_e2e").await;
    // The default catalog was seeded by migrate.
    let seeded = versions(&env);
    assert!(seeded.iter().any(|v| v["model"] == "gpt-4o"), "{seeded:?}");
    import(&env, PRICES_V1);
    import(&env, PRICES_V2);
    // Re-importing changes nothing.
    let again = import(&env, PRICES_V1);
    assert!(again.contains("0 version(s) added, 3 unchanged"), "{again}");
    let all = versions(&env);
    let ids: HashMap<&str, u64> = [
        ("v1", version_id(&all, "tg-test", "2026-03-10T00:00:00")),
        ("v2", version_id(&all, "tg-test", "2026-03-10T12:00:00")),
        ("reason", version_id(&all, "tg-reason", "2026-01-01")),
    ]
    .into();

    let cases = cases();
    let mut events: Vec<Event> = cases.iter().map(|c| c.event.clone()).collect();
    // A blocked call is never billed.
    events.push(call(
        "ai.call.blocked",
        "team-a",
        "tg-test",
        at(14, 0),
        usage(1000, 0, 0, 0, 0),
        Outcome::Blocked,
    ));
    produce(&env.events_topic, &events).await;
    env.spawn("process", &["process"]);
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            events.len() as u64,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(got, events.len() as u64);
    env.wait_for_cost_rollup().await;

    let rows = env
        .ch("SELECT event_id, toString(cost), priced, price_version FROM {db}.calls FORMAT TSV")
        .await;
    let stored: HashMap<String, (Decimal, u8, u64)> = rows
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                (d(f[1]), f[2].parse().unwrap(), f[3].parse().unwrap()),
            )
        })
        .collect();
    let mut want_total = Decimal::ZERO;
    for case in &cases {
        let (cost, priced, version) = stored[&case.event.event_id.to_string()];
        match case.cost {
            Some(want) => {
                assert_eq!(cost, d(want), "{}", case.name);
                assert_eq!(priced, 1, "{}", case.name);
                assert_eq!(version, ids[case.version.unwrap()], "{}", case.name);
                want_total += d(want);
            }
            None => {
                assert_eq!(
                    (cost, priced, version),
                    (Decimal::ZERO, 0, 0),
                    "{}",
                    case.name
                );
            }
        }
    }
    let blocked = &stored[&events.last().unwrap().event_id.to_string()];
    assert_eq!(blocked.1, 0, "blocked calls are not priced");

    // Rollup == facts, in total and per dimension.
    for dim in ["team_id", "model", "day", "user_id", "api_key_id"] {
        let facts = env
            .ch(&format!(
                "SELECT toString({dim}) AS k, count(), toString(sum(cost)), sum(1 - priced) FROM {{db}}.calls \
                 WHERE kind IN ('ai.call.completed', 'ai.call.failed') GROUP BY k ORDER BY k FORMAT TSV"
            ).replace("toString(day)", "toString(toDate(occurred_at, 'UTC'))"))
            .await;
        let rollup = env
            .ch(&format!(
                "SELECT toString({dim}) AS k, sum(calls), toString(sum(cost)), sum(unpriced_calls) FROM {{db}}.cost_daily \
                 GROUP BY k HAVING sum(calls) != 0 ORDER BY k FORMAT TSV"
            ))
            .await;
        assert_eq!(facts, rollup, "rollup by {dim}");
    }

    // The report API: JSON and CSV carry the same exact numbers.
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let url = format!(
        "{}/api/v1/reports/cost?from=2026-03-09&to=2026-03-11&group_by=model",
        env.api_url()
    );
    let report: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let cost_of = |model: &str| {
        report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"]["model"] == model)
            .map(|g| g["cost"].clone())
            .unwrap_or_else(|| panic!("no group {model}: {report}"))
    };
    assert_eq!(
        d(cost_of("tg-test").as_str().unwrap()),
        d("0.0049") + d("0.0048") + d("0.00103") + d("0.003")
    );
    assert_eq!(d(cost_of("tg-reason").as_str().unwrap()), d("0.0296"));
    assert!(cost_of("tg-unknown").is_null(), "unpriced, not 0: {report}");
    assert!(
        cost_of("tg-absurd").is_null(),
        "unpriced, not clamped: {report}"
    );
    assert_eq!(d(report["total"]["cost"].as_str().unwrap()), want_total);
    assert_eq!(report["total"]["unpriced_calls"], 3);

    let csv = reqwest::get(format!("{url}&format=csv"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let page_csv = reqwest::get(format!(
        "{}/finance/cost.csv?from=2026-03-09&to=2026-03-11&group_by=model",
        env.api_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(csv, page_csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("model,calls,unpriced_calls"), "{csv}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("tg-unknown,") && l.ends_with(",unpriced")),
        "{csv}"
    );
    let total_line = lines.last().unwrap();
    assert!(total_line.starts_with("total,"), "{csv}");
    assert_eq!(d(total_line.rsplit(',').next().unwrap()), want_total);
    // Every count of every group is the JSON's, column by column, the
    // images and audio of `tg-reason` (2 images, 2.5 s) among them.
    let header: Vec<&str> = lines[0].split(',').collect();
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(lines.len(), groups.len() + 2, "{csv}");
    for line in &lines[1..lines.len() - 1] {
        let cells: Vec<&str> = line.split(',').collect();
        let group = groups
            .iter()
            .find(|g| g["key"]["model"] == cells[0])
            .unwrap_or_else(|| panic!("no group {line}: {report}"));
        for (name, cell) in header.iter().zip(&cells).skip(1) {
            if *name != "cost_usd" {
                assert_eq!(group[*name].to_string(), *cell, "{name} of {line}");
            }
        }
        if cells[0] == "tg-reason" {
            let at = |name: &str| cells[header.iter().position(|h| *h == name).unwrap()];
            assert_eq!((at("images"), at("audio_ms")), ("2", "2500"), "{csv}");
        }
    }

    // The page shows the same strings as the CSV.
    let page = reqwest::get(format!(
        "{}/finance/cost?from=2026-03-09&to=2026-03-11&group_by=model",
        env.api_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for line in &lines[1..] {
        let cost = line.rsplit(',').next().unwrap();
        assert!(shows(&page, cost), "page lacks {cost}");
    }
}

/// Whether a page shows the CSV field `value`: as a cell's text, as
/// `unpriced`, or as the exact value on hover of a formatted amount or
/// percentage (the text is for reading: `$1,234.57`).
fn shows(page: &str, value: &str) -> bool {
    [
        format!(">{value}</td>"),
        format!(">{value}</span>"),
        format!("title=\"{value}\""),
        format!("title=\"{value}%\""),
    ]
    .iter()
    .any(|form| page.contains(form))
}

/// Kinds of the `admin.*` events on `topic` (reads it from the start).
async fn admin_kinds(topic: &str) -> Vec<String> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", support::unique("admin-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    while let Ok(Ok(message)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        if kind.starts_with("admin.") {
            kinds.push(kind);
        }
        if kinds.len() >= 4 {
            break;
        }
    }
    kinds
}

fn effective_costs_sql() -> &'static str {
    // Facts: each call's `calls` row plus all its adjustments.
    "SELECT event_id, toString(sum(c)) FROM ( \
       SELECT event_id, cost AS c FROM {db}.calls WHERE kind IN ('ai.call.completed', 'ai.call.failed') \
       UNION ALL SELECT event_id, cost AS c FROM {db}.cost_adjustments) \
     GROUP BY event_id ORDER BY event_id FORMAT TSV"
}

async fn effective_costs(env: &TestEnv) -> HashMap<String, Decimal> {
    env.ch(effective_costs_sql())
        .await
        .lines()
        .map(|l| {
            let (id, c) = l.split_once('\t').unwrap();
            (id.to_string(), d(c))
        })
        .collect()
}

async fn rollup_total(env: &TestEnv, model: &str) -> (Decimal, i64, i64) {
    let out = env
        .ch(&format!(
            "SELECT toString(sum(cost)), sum(calls), sum(unpriced_calls) FROM {{db}}.cost_daily WHERE model = '{model}' FORMAT TSV"
        ))
        .await;
    let f: Vec<&str> = out.trim().split('\t').collect();
    (d(f[0]), f[1].parse().unwrap(), f[2].parse().unwrap())
}

/// The grain of `cost_daily_by_team`: day × org × team × provider × model
/// × price version.
const BY_TEAM: &[&str] = &[
    "day",
    "org_id",
    "team_id",
    "provider",
    "model",
    "price_version",
];
/// The grain of `cost_daily_by_user`.
const BY_USER: &[&str] = &["day", "org_id", "team_id", "user_id"];
/// The grain of `cost_daily_by_key`.
const BY_KEY: &[&str] = &["day", "org_id", "team_id", "api_key_id"];

/// Every cell of a cost rollup at the grain `dimensions` with all its sums,
/// one TSV line each, in order; cells whose sums are all zero (a reprice
/// moved everything to another version) are left out, merged or not.
async fn cells_at(env: &TestEnv, table: &str, dimensions: &[&str]) -> Vec<String> {
    let sums = [
        "calls",
        "unpriced_calls",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "images",
        "audio_ms",
        "cost",
    ];
    let keys: Vec<String> = dimensions
        .iter()
        .map(|c| format!("toString({c})"))
        .collect();
    let selected: Vec<String> = sums.iter().map(|c| format!("toString(sum({c}))")).collect();
    let nonzero: Vec<String> = sums.iter().map(|c| format!("sum({c}) != 0")).collect();
    let grain = dimensions.join(", ");
    env.ch(&format!(
        "SELECT {}, {} FROM {{db}}.{table} GROUP BY {grain} \
         HAVING {} ORDER BY {grain} FORMAT TSV",
        keys.join(", "),
        selected.join(", "),
        nonzero.join(" OR ")
    ))
    .await
    .lines()
    .map(str::to_string)
    .collect()
}

/// Every cell of a cost rollup at the grain of `cost_daily_by_team`.
async fn by_team_cells(env: &TestEnv, table: &str) -> Vec<String> {
    cells_at(env, table, BY_TEAM).await
}

/// `cost_daily_by_team` equals `cost_daily` summed over user and key, cell
/// by cell; returns the cells.
async fn assert_by_team_equals_cost_daily(env: &TestEnv) -> Vec<String> {
    let full = by_team_cells(env, "cost_daily").await;
    assert!(!full.is_empty(), "cost_daily is empty");
    assert_eq!(by_team_cells(env, "cost_daily_by_team").await, full);
    full
}

/// `cost_daily_by_user` and `cost_daily_by_key` equal `cost_daily` summed
/// over the dimensions each drops, cell by cell; returns their cells.
async fn assert_by_caller_equals_cost_daily(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    for (table, grain) in [
        ("cost_daily_by_user", BY_USER),
        ("cost_daily_by_key", BY_KEY),
    ] {
        let full = cells_at(env, "cost_daily", grain).await;
        assert!(!full.is_empty(), "cost_daily is empty");
        assert_eq!(cells_at(env, table, grain).await, full, "{table}");
        out.push(full);
    }
    let keys = out.pop().unwrap_or_default();
    let users = out.pop().unwrap_or_default();
    (users, keys)
}

/// Every rollup without some of `cost_daily`'s dimensions equals it summed
/// over them, cell by cell; returns the cells of `cost_daily_by_team`.
async fn assert_rollups_equal_cost_daily(env: &TestEnv) -> Vec<String> {
    assert_by_caller_equals_cost_daily(env).await;
    assert_by_team_equals_cost_daily(env).await
}

fn run_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.tollgate(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn reprice_after_a_correction_is_exact_and_idempotent() {
    let mut env = TestEnv::new("cost_reprice").await;
    import(
        &env,
        r#"{"tg-fix": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                       "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
    );
    let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap();
    let completed = "ai.call.completed";
    let events = vec![
        // 1000*0.000001 + 500*0.000002 = 0.002 -> after the fix 1000*0.0000015 + 500*0.000002 = 0.0025
        call(
            completed,
            "team-a",
            "tg-fix",
            day(5, 10),
            usage(1000, 0, 0, 500, 0),
            Outcome::Success,
        ),
        // 0.0002 -> 0.0003
        call(
            completed,
            "team-a",
            "tg-fix",
            day(6, 10),
            usage(200, 0, 0, 0, 0),
            Outcome::Success,
        ),
        // unpriced until a price for tg-late is added, then 10*0.01 = 0.1
        call(
            completed,
            "team-a",
            "tg-late",
            day(6, 11),
            usage(10, 0, 0, 0, 0),
            Outcome::Success,
        ),
        // another team, outside the statement
        call(
            completed,
            "team-b",
            "tg-fix",
            day(7, 10),
            usage(1000, 0, 0, 0, 0),
            Outcome::Success,
        ),
    ];
    produce(&env.events_topic, &events).await;
    env.spawn("process", &["process", "--metrics-listen", "127.0.0.1:0"]);
    assert_eq!(
        env.wait_for_count("SELECT count() FROM {db}.calls", 4, Duration::from_secs(60))
            .await,
        4
    );
    env.wait_for_cost_rollup().await;
    let metrics = format!(
        "http://127.0.0.1:{}",
        support::listening_port(&env.log_path("process"), crate::support::PATIENCE)
    );
    let price_versions = || support::metric(&metrics, "tollgate_process_price_versions");
    let versions_at_start = price_versions().await;
    let before = effective_costs(&env).await;
    assert_eq!(before[&events[0].event_id.to_string()], d("0.002"));
    assert_eq!(rollup_total(&env, "tg-fix").await, (d("0.0032"), 3, 0));
    assert_eq!(rollup_total(&env, "tg-late").await, (d("0"), 1, 1));
    // Four calls on three days of two teams: the narrow rollup has a cell
    // per (day, team, model), equal to cost_daily's; so do the rollups per
    // user and per key at theirs.
    assert_eq!(assert_rollups_equal_cost_daily(&env).await.len(), 4);

    // The correction goes through the admin API (admin key only).
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let correction = serde_json::json!({
        "provider": "testprov", "model": "tg-fix", "effective_from": "2026-03-01T00:00:00Z",
        "input_per_token": "0.0000015", "output_per_token": "0.000002", "note": "vendor invoice correction"
    });
    let http = reqwest::Client::new();
    let ingest_key = env.create_key("org-1");
    let denied = http
        .post(format!("{}/api/v1/admin/prices", env.api_url()))
        .bearer_auth(&ingest_key)
        .json(&correction)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let admin_key = run_ok(
        &env,
        &["keys", "create", "--name", "admin", "--role", "admin"],
    )
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_string();
    let added = http
        .post(format!("{}/api/v1/admin/prices", env.api_url()))
        .bearer_auth(&admin_key)
        .json(&correction)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201, "{}", added.text().await.unwrap());
    let late = serde_json::json!({"provider": "testprov", "model": "tg-late",
        "effective_from": "2026-01-01T00:00:00Z", "input_per_token": "0.01"});
    let added = http
        .post(format!("{}/api/v1/admin/prices", env.api_url()))
        .bearer_auth(&admin_key)
        .json(&late)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);

    // The running processor reloads the catalog on the change (its gauge
    // says when), and a new tg-late call is priced from then on.
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while price_versions().await != versions_at_start + 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the processor did not reload the two new prices"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = call(
        completed,
        "team-b",
        "tg-late",
        day(6, 12),
        usage(1, 0, 0, 0, 0),
        Outcome::Success,
    );
    produce(&env.events_topic, std::slice::from_ref(&fresh)).await;
    let sql = format!(
        "SELECT count() FROM {{db}}.calls WHERE event_id = '{}' AND priced = 1",
        fresh.event_id
    );
    assert_eq!(
        env.wait_for_count(&sql, 1, crate::support::PATIENCE).await,
        1
    );

    let range = [
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-04-01T00:00:00Z",
    ];
    let out = run_ok(
        &env,
        &[&["reprice", "--model", "tg-fix"][..], &range[..]].concat(),
    );
    assert!(out.contains("3 call(s) changed"), "{out}");
    let out = run_ok(
        &env,
        &[&["reprice", "--model", "tg-late"][..], &range[..]].concat(),
    );
    assert!(out.contains("1 call(s) changed"), "{out}");

    let after = effective_costs(&env).await;
    assert_eq!(after[&events[0].event_id.to_string()], d("0.0025"));
    assert_eq!(after[&events[1].event_id.to_string()], d("0.0003"));
    assert_eq!(after[&events[2].event_id.to_string()], d("0.1"));
    assert_eq!(after[&events[3].event_id.to_string()], d("0.0015"));
    assert_eq!(rollup_total(&env, "tg-fix").await, (d("0.0043"), 3, 0));
    assert_eq!(rollup_total(&env, "tg-late").await, (d("0.11"), 2, 0));
    // The corrections landed in the narrow rollups too: every cell moved to
    // the new price versions alike (the rollups per user and per key, which
    // have no version, hold the new sums), and a report by model (which
    // reads the one without user and key) gives cost_daily's figures.
    let cells = assert_rollups_equal_cost_daily(&env).await;
    assert_eq!(cells.len(), 5, "{cells:#?}");
    let by_model: serde_json::Value = http
        .get(format!(
            "{}/api/v1/reports/cost?from=2026-03-01&to=2026-04-01&group_by=model",
            env.api_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let costs = report_costs(&by_model, "model");
    assert_eq!(costs["tg-fix"], Some(d("0.0043")), "{by_model:#}");
    assert_eq!(costs["tg-late"], Some(d("0.11")), "{by_model:#}");

    // The statement of team-a reflects the new prices, one line per version.
    let statement: serde_json::Value = http
        .get(format!(
            "{}/api/v1/finance/statement?team=team-a&month=2026-03",
            env.api_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        d(statement["total"]["cost"].as_str().unwrap()),
        d("0.0028") + d("0.1"),
        "{statement:#}"
    );
    let all = statement["lines"].as_array().unwrap();
    let lines: Vec<&serde_json::Value> = all.iter().filter(|l| l["calls"] != 0).collect();
    assert_eq!(lines.len(), 2, "{statement:#}");
    // The reversal at tg-fix's old version 9 has a line of its own (no
    // calls, cost 0), so the lines' corrections add up to the net: 0.0028
    // posted at 10 less 0.0022 reversed at 9, and 0.1 for tg-late (which
    // was unpriced: its reversal moved no money and has no line).
    let old = all
        .iter()
        .find(|l| l["model"] == "tg-fix" && l["price_version"] == 9)
        .unwrap();
    assert_eq!(
        (
            &old["calls"],
            d(old["cost"].as_str().unwrap()),
            d(old["repricing"].as_str().unwrap())
        ),
        (&serde_json::json!(0), d("0"), d("-0.0022")),
        "{statement:#}"
    );
    assert_eq!(all.len(), 3, "{statement:#}");
    let net: Decimal = all
        .iter()
        .filter_map(|l| l["repricing"].as_str())
        .map(d)
        .sum();
    assert_eq!(net, d("0.1006"), "{statement:#}");
    assert_eq!(d(statement["repricing"].as_str().unwrap()), net);
    let fix = lines.iter().find(|l| l["model"] == "tg-fix").unwrap();
    assert_eq!(fix["prices"]["input_per_token"], "0.0000015");
    assert_eq!(fix["calls"], 2);
    assert_eq!(d(fix["cost"].as_str().unwrap()), d("0.0028"));
    // March's calls were all stored now, after March ended: the statement
    // says it changed after the month closed, and by what.
    assert_eq!(
        statement["late"]["calls"], statement["total"]["calls"],
        "{statement:#}"
    );
    // At the cost they were stored with (tg-late's was unpriced); the
    // reprice's corrections are in `repricing`.
    assert_eq!(
        d(statement["late"]["cost_when_stored"].as_str().unwrap()),
        d("0.0022"),
        "{statement:#}"
    );
    assert!(statement["as_of"].as_str().is_some(), "{statement:#}");
    let csv = http
        .get(format!(
            "{}/finance/statement.csv?team=team-a&month=2026-03",
            env.api_url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let page = http
        .get(format!(
            "{}/finance/statement?team=team-a&month=2026-03",
            env.api_url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let total_line = csv.lines().last().unwrap();
    assert_eq!(
        d(total_line.rsplit(',').next().unwrap()),
        d("0.1028"),
        "{csv}"
    );
    assert!(
        page.contains(&format!(
            "id=\"statement-total\"><span class=\"money\" title=\"{}\">",
            total_line.rsplit(',').next().unwrap()
        )),
        "{page}"
    );
    assert!(
        page.contains("id=\"statement-late\"><p>Changed after the month ended: 3 calls of 2026-03"),
        "{page}"
    );

    // Every change is on the events topic as an admin event.
    let kinds = admin_kinds(&env.events_topic).await;
    for kind in [
        "admin.price.corrected",
        "admin.price.added",
        "admin.price.repriced",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }

    // Re-running changes nothing.
    let adjustments = env.ch("SELECT count() FROM {db}.cost_adjustments").await;
    let rollup = env.ch("SELECT model, toString(sum(cost)), sum(calls) FROM {db}.cost_daily GROUP BY model ORDER BY model FORMAT TSV").await;
    let out = run_ok(
        &env,
        &[&["reprice", "--model", "tg-fix"][..], &range[..]].concat(),
    );
    assert!(out.contains("0 call(s) changed"), "{out}");
    assert_eq!(
        env.ch("SELECT count() FROM {db}.cost_adjustments").await,
        adjustments
    );
    assert_eq!(env.ch("SELECT model, toString(sum(cost)), sum(calls) FROM {db}.cost_daily GROUP BY model ORDER BY model FORMAT TSV").await, rollup);
    assert_eq!(effective_costs(&env).await, after);
}

/// The overview's top users, cache savings and forecast of
/// `/api/v1/reports/cost/overview?{query}`, costs normalized.
async fn overview(
    env: &TestEnv,
    query: &str,
) -> (Vec<(String, Decimal)>, Decimal, serde_json::Value) {
    let json: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/reports/cost/overview?{query}",
        env.api_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let users = json["top_users"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .map(|g| {
            (
                g["key"]["user"].as_str().unwrap().to_string(),
                d(g["cost"].as_str().unwrap()),
            )
        })
        .collect();
    let savings = d(json["cache_savings"].as_str().unwrap());
    (users, savings, json["forecast"].clone())
}

#[tokio::test]
async fn overview_savings_and_top_spenders_follow_a_reprice() {
    let mut env = TestEnv::new("cost_overview").await;
    let v1 = r#"{"tg-cache": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                   "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
                   "cache_read_input_token_cost": 5e-07}}"#;
    import(&env, v1);
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap();
    let completed = "ai.call.completed";
    let with_user = |mut e: Event, user: &str| {
        e.user_id = user.into();
        e
    };
    let events = vec![
        // 6000×0.000002 + 4000×0.0000005 = 0.014, saves 4000×0.0000015 = 0.006;
        // corrected: 0.012 + 4000×0.000001 = 0.016, saves 0.004
        with_user(
            call(
                completed,
                "team-a",
                "tg-cache",
                day(5),
                usage(10_000, 4_000, 0, 0, 0),
                Outcome::Success,
            ),
            "ua",
        ),
        // 1000×0.0000005 = 0.0005, saves 0.0015; corrected: 0.001, saves 0.001
        with_user(
            call(
                completed,
                "team-a",
                "tg-cache",
                day(6),
                usage(1_000, 1_000, 0, 0, 0),
                Outcome::Success,
            ),
            "ub",
        ),
        // 20000×0.000002 = 0.04, nothing cached
        with_user(
            call(
                completed,
                "team-b",
                "tg-cache",
                day(7),
                usage(20_000, 0, 0, 0, 0),
                Outcome::Success,
            ),
            "uc",
        ),
    ];
    produce(&env.events_topic, &events).await;
    env.spawn("process", &["process"]);
    assert_eq!(
        env.wait_for_count("SELECT count() FROM {db}.calls", 3, Duration::from_secs(60))
            .await,
        3
    );
    env.wait_for_cost_rollup().await;
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let march = "from=2026-03-01&to=2026-04-01";
    let (users, savings, forecast) = overview(&env, march).await;
    assert_eq!(
        users,
        vec![
            ("uc".to_string(), d("0.04")),
            ("ua".to_string(), d("0.014")),
            ("ub".to_string(), d("0.0005")),
        ]
    );
    assert_eq!(savings, d("0.0075"));
    assert!(forecast.is_null(), "a past month has no forecast");

    // The vendor's cache-read price was 0.000001: correct it and reprice.
    import(&env, &v1.replace("5e-07", "1e-06"));
    let out = run_ok(
        &env,
        &[
            "reprice",
            "--model",
            "tg-cache",
            "--from",
            "2026-03-01T00:00:00Z",
            "--to",
            "2026-04-01T00:00:00Z",
        ],
    );
    // uc's cost stays, but its version changes too.
    assert!(out.contains("3 call(s) changed"), "{out}");
    assert!(out.contains("cost change 0.0025"), "{out}");
    // The reversal takes the cached tokens off the old version, the
    // posting puts them on the new one: only the new price saves.
    let (users, savings, _) = overview(&env, march).await;
    assert_eq!(
        users,
        vec![
            ("uc".to_string(), d("0.04")),
            ("ua".to_string(), d("0.016")),
            ("ub".to_string(), d("0.001")),
        ]
    );
    assert_eq!(savings, d("0.005"));
    // One team and month: the statement's savings and total.
    let (users, savings, _) = overview(&env, &format!("{march}&team=team-a")).await;
    assert_eq!(users.len(), 2);
    let statement: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/finance/statement?team=team-a&month=2026-03",
        env.api_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(d(statement["cache_savings"].as_str().unwrap()), savings);
    assert_eq!(savings, d("0.005"));
    assert_eq!(
        d(statement["total"]["cost"].as_str().unwrap()),
        users.iter().map(|(_, c)| *c).sum::<Decimal>()
    );
}

#[tokio::test]
async fn hard_budget_publishes_deny_and_warns_once_per_threshold() {
    let mut env = TestEnv::new("cost_budget").await;
    import(
        &env,
        r#"{"tg-b": {"litellm_provider": "testprov", "effective_from": "2025-01-01T00:00:00Z",
                     "input_cost_per_token": 0.001}}"#,
    );
    run_ok(
        &env,
        &[
            "budgets", "set", "--kind", "team", "--id", "team-x", "--limit", "3",
        ],
    );
    run_ok(
        &env,
        &[
            "budgets", "set", "--kind", "org", "--id", "org-1", "--limit", "100", "--soft",
        ],
    );
    env.spawn("process", &["process"]);
    let one_dollar = || {
        call(
            "ai.call.completed",
            "team-x",
            "tg-b",
            Utc::now(),
            usage(1000, 0, 0, 0, 0),
            Outcome::Success,
        )
    };
    // $2 of $3: within budget; the start-up state is `allow`.
    produce(&env.events_topic, &[one_dollar(), one_dollar()]).await;
    let decisions = read_records(&env.decisions_topic, crate::support::PATIENCE, |r| {
        !r.is_empty()
    })
    .await;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].0, "budget/team/team-x");
    assert_eq!(decisions[0].1["action"], "allow");

    // Crossing the limit: a deny follows the event.
    let crossed = std::time::Instant::now();
    produce(&env.events_topic, &[one_dollar(), one_dollar()]).await;
    let decisions = read_records(&env.decisions_topic, crate::support::PATIENCE, |r| {
        r.iter().any(|(_, v)| v["action"] == "deny")
    })
    .await;
    let elapsed = crossed.elapsed();
    let deny = &decisions
        .iter()
        .find(|(_, v)| v["action"] == "deny")
        .expect("a deny decision")
        .1;
    assert_eq!(deny["subject"], "budget/team/team-x");
    assert!(
        deny["reason"].as_str().unwrap().contains("exhausted"),
        "{deny}"
    );
    assert!(deny["valid_until"].as_str().is_some());
    // Printed, not asserted: the read above waits up to its deadline.
    eprintln!("hard budget: deny published {elapsed:?} after the crossing events");

    // Warnings: 50, 80 and 100 percent of the team budget, each once; the
    // soft org budget (4 of 100 USD) has none.
    let thresholds = |r: &[(String, serde_json::Value)]| {
        r.iter()
            .filter(|(_, v)| v["kind"] == "admin.budget.threshold")
            .count()
    };
    read_records(&env.events_topic, Duration::from_secs(60), |r| {
        thresholds(r) >= 3
    })
    .await;
    // Then a window in which a duplicate warning would show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = read_records(&env.events_topic, Duration::from_secs(10), |_| false).await;
    let mut warned: Vec<(String, i64)> = records
        .iter()
        .filter(|(_, v)| v["kind"] == "admin.budget.threshold")
        .map(|(_, v)| {
            (
                v["admin"]["subject"].as_str().unwrap().to_string(),
                v["admin"]["threshold_percent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        records
            .iter()
            .filter(|(_, v)| v["kind"] == "admin.budget.set")
            .count(),
        2,
        "each budget change is an admin event"
    );
    warned.sort();
    assert_eq!(
        warned,
        vec![
            ("budget/team/team-x".to_string(), 50),
            ("budget/team/team-x".to_string(), 80),
            ("budget/team/team-x".to_string(), 100)
        ]
    );

    // The budget report: spend, state, and the page shows the CSV's strings.
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let statuses: serde_json::Value =
        reqwest::get(format!("{}/api/v1/finance/budgets", env.api_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let team = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "budget/team/team-x")
        .unwrap();
    assert_eq!(team["state"], "exhausted", "{statuses:#}");
    assert_eq!(d(team["spend_usd"].as_str().unwrap()), d("4"));
    let org = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "budget/org/org-1")
        .unwrap();
    assert_eq!(org["state"], "ok");
    // The forecast moves with the clock (whole minutes): a page and a CSV
    // fetched across a minute boundary differ, so fetch again then.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let csv = reqwest::get(format!("{}/finance/budgets.csv", env.api_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let page = reqwest::get(format!("{}/finance/budgets", env.api_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<&str> = csv
            .lines()
            .skip(1)
            .flat_map(|line| line.split(','))
            .filter(|field| !shows(&page, field))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(attempts < 3, "page lacks {missing:?}");
    }

    // A new limit re-arms the period's warnings: raised to 6 USD, with 5
    // spent, 50 and 80 percent of the new limit warn again (100 does not).
    run_ok(
        &env,
        &[
            "budgets", "set", "--kind", "team", "--id", "team-x", "--limit", "6",
        ],
    );
    produce(&env.events_topic, &[one_dollar()]).await;
    let records = read_records(&env.events_topic, crate::support::PATIENCE, |r| {
        thresholds(r) >= 5
    })
    .await;
    let mut rearmed: Vec<(i64, String)> = records
        .iter()
        .filter(|(_, v)| v["kind"] == "admin.budget.threshold")
        .skip(3)
        .map(|(_, v)| {
            (
                v["admin"]["threshold_percent"].as_i64().unwrap(),
                v["admin"]["limit_usd"]
                    .to_string()
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect();
    rearmed.sort();
    assert_eq!(
        rearmed,
        [(50, "6".to_string()), (80, "6".to_string())],
        "{records:?}"
    );
}

/// The demo path: simulated traffic through the ingest API is priced out of
/// the box by the default catalog, and the rollup, the cost report and the
/// facts agree exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_traffic_through_ingest_is_priced_by_the_default_catalog() {
    let mut env = TestEnv::new("cost_sim").await;
    let key = run_ok(
        &env,
        &["keys", "create", "--name", "sim", "--role", "admin"],
    )
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_string();
    env.spawn("ingest", &["ingest"]);
    env.spawn("process", &["process"]);
    support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        crate::support::PATIENCE,
        &env.log_path("ingest"),
    )
    .await;
    let target = env.ingest_url();
    run_ok(
        &env,
        &[
            "simulate",
            "--target",
            &target,
            "--key",
            &key,
            "--events",
            "2000",
            "--span-minutes",
            "30",
        ],
    );
    // Every simulated event is a terminal call (completed or failed).
    let stored = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            2000,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(stored, 2000);
    env.wait_for_cost_rollup().await;
    let unpriced = env
        .ch("SELECT count() FROM {db}.calls WHERE kind IN ('ai.call.completed', 'ai.call.failed') AND priced = 0")
        .await;
    assert_eq!(
        unpriced.trim(),
        "0",
        "every simulated model has a default price"
    );
    let facts = env
        .ch("SELECT toString(sum(cost)) FROM {db}.calls WHERE kind IN ('ai.call.completed', 'ai.call.failed')")
        .await;
    let rollup = env
        .ch("SELECT toString(sum(cost)) FROM {db}.cost_daily")
        .await;
    assert_eq!(d(facts.trim()), d(rollup.trim()));
    assert!(d(facts.trim()) > Decimal::ZERO);

    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let today = Utc::now().date_naive();
    let from = today - chrono::Duration::days(1);
    let to = today + chrono::Duration::days(1);
    for group_by in ["team", "model", "user,key", "org,provider,price_version"] {
        let report: serde_json::Value = reqwest::get(format!(
            "{}/api/v1/reports/cost?from={from}&to={to}&group_by={group_by}",
            env.api_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let sum: Decimal = report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| d(g["cost"].as_str().unwrap()))
            .sum();
        assert_eq!(sum, d(facts.trim()), "groups by {group_by}");
        assert_eq!(
            d(report["total"]["cost"].as_str().unwrap()),
            d(facts.trim())
        );
    }
}

/// Prices of the tag test: `tg-tag` before and after a correction, and
/// `tg-tag2`; `(input, output, per request)` per token / call.
fn tag_price(model: &str, corrected: bool) -> Option<(Decimal, Decimal, Decimal)> {
    match model {
        "tg-tag" if corrected => Some((d("0.0000015"), d("0.000002"), d("0.0001"))),
        "tg-tag" => Some((d("0.000001"), d("0.000002"), d("0.0001"))),
        "tg-tag2" => Some((d("0.000003"), d("0"), d("0"))),
        _ => None,
    }
}

/// The cost of a billable call, computed here from the event (no cached,
/// reasoning or media usage in this test); `None`: unpriced.
fn tag_call_cost(e: &Event, corrected: bool) -> Option<Decimal> {
    let call = e.call.as_ref().unwrap();
    let (input, output, request) = tag_price(&call.model, corrected)?;
    let fee = if e.kind == "ai.call.completed" {
        request
    } else {
        Decimal::ZERO
    };
    Some(
        Decimal::from(call.usage.input_tokens) * input
            + Decimal::from(call.usage.output_tokens) * output
            + fee,
    )
}

/// Per (tag key, tag value): (calls, unpriced calls, cost) over the
/// billable events carrying that tag, computed from the events.
fn expected_by_tag(
    events: &[Event],
    corrected: bool,
) -> BTreeMap<(String, String), (i64, i64, Decimal)> {
    let mut out = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.kind == "ai.call.completed" || e.kind == "ai.call.failed")
    {
        let cost = tag_call_cost(e, corrected);
        for (k, v) in &e.tags {
            let entry = out
                .entry((k.clone(), v.clone()))
                .or_insert((0, 0, Decimal::ZERO));
            entry.0 += 1;
            entry.1 += i64::from(cost.is_none());
            entry.2 += cost.unwrap_or_default();
        }
    }
    out
}

/// The tag rollup per (tag key, tag value), read from `cost_daily_tags`.
async fn tag_rollup(env: &TestEnv) -> BTreeMap<(String, String), (i64, i64, Decimal)> {
    env.ch(
        "SELECT tag_key, tag_value, sum(calls), sum(unpriced_calls), toString(sum(cost)) \
         FROM {db}.cost_daily_tags GROUP BY tag_key, tag_value \
         HAVING sum(calls) != 0 OR sum(cost) != 0 ORDER BY tag_key, tag_value FORMAT TSV",
    )
    .await
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (
            (f[0].to_string(), f[1].to_string()),
            (f[2].parse().unwrap(), f[3].parse().unwrap(), d(f[4])),
        )
    })
    .collect()
}

/// The same from the facts: billable `calls` rows and every adjustment,
/// one row per tag (`ARRAY JOIN`).
async fn tag_facts(env: &TestEnv) -> BTreeMap<(String, String), (i64, i64, Decimal)> {
    env.ch(
        "SELECT tag_key, tag_value, sum(n), sum(u), toString(sum(c)) FROM ( \
           SELECT tag_keys, tag_values, toInt64(1) AS n, toInt64(1 - priced) AS u, cost AS c FROM {db}.calls \
           WHERE kind IN ('ai.call.completed', 'ai.call.failed') \
           UNION ALL \
           SELECT tag_keys, tag_values, toInt64(sign) AS n, toInt64(unpriced) AS u, cost AS c FROM {db}.cost_adjustments \
         ) ARRAY JOIN tag_keys AS tag_key, tag_values AS tag_value \
         GROUP BY tag_key, tag_value ORDER BY tag_key, tag_value FORMAT TSV",
    )
    .await
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (
            (f[0].to_string(), f[1].to_string()),
            (f[2].parse().unwrap(), f[3].parse().unwrap(), d(f[4])),
        )
    })
    .collect()
}

/// `groups` of a cost report JSON as key value -> cost (`None`: unpriced).
fn report_costs(report: &serde_json::Value, key: &str) -> BTreeMap<String, Option<Decimal>> {
    report["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {report}"))
        .iter()
        .map(|g| {
            (
                g["key"][key].as_str().unwrap().to_string(),
                g["cost"].as_str().map(d),
            )
        })
        .collect()
}

#[tokio::test]
async fn tag_rollup_equals_the_tagged_facts_before_and_after_repricing() {
    let mut env = TestEnv::new("cost_tags").await;
    import(
        &env,
        r#"{"tg-tag": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                       "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                       "input_cost_per_request": 0.0001},
            "tg-tag2": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                       "input_cost_per_token": 3e-06}}"#,
    );
    let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap();
    let tagged = |mut e: Event, tags: &[(&str, &str)]| {
        e.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        e
    };
    let ok = |team, model, at, input, output| {
        call(
            "ai.call.completed",
            team,
            model,
            at,
            usage(input, 0, 0, output, 0),
            Outcome::Success,
        )
    };
    let failed = call(
        "ai.call.failed",
        "team-a",
        "tg-tag",
        day(12, 9),
        usage(1000, 0, 0, 0, 0),
        Outcome::Error,
    );
    let blocked = call(
        "ai.call.blocked",
        "team-a",
        "tg-tag",
        day(12, 10),
        usage(1000, 0, 0, 0, 0),
        Outcome::Blocked,
    );
    let events = vec![
        // two tags: counts once under each key
        tagged(
            ok("team-a", "tg-tag", day(10, 6), 1000, 500),
            &[("feature", "search"), ("variant", "b")],
        ),
        tagged(
            ok("team-a", "tg-tag", day(10, 7), 2000, 0),
            &[("feature", "search")],
        ),
        tagged(
            ok("team-a", "tg-tag", day(11, 8), 100, 100),
            &[("feature", "chat")],
        ),
        tagged(
            ok("team-b", "tg-tag2", day(11, 9), 1000, 0),
            &[("feature", "search")],
        ),
        // untagged: in no row of the tag rollup
        ok("team-b", "tg-tag", day(11, 10), 5000, 0),
        ok("team-a", "tg-tag", day(10, 11), 7, 0),
        tagged(
            ok("team-b", "tg-tag", day(12, 8), 3, 3),
            &[("variant", "a")],
        ),
        tagged(failed, &[("feature", "chat")]),
        // not billed
        tagged(blocked, &[("feature", "search")]),
        // unpriced: counted, never priced at zero
        tagged(
            ok("team-a", "tg-nope", day(12, 11), 10, 10),
            &[("feature", "search")],
        ),
    ];
    produce(&env.events_topic, &events).await;
    env.spawn("process", &["process"]);
    assert_eq!(
        env.wait_for_count(
            "SELECT count() FROM {db}.calls",
            events.len() as u64,
            Duration::from_secs(60)
        )
        .await,
        events.len() as u64
    );

    // Per tag: the rollup equals the facts and the costs computed here.
    let want = expected_by_tag(&events, false);
    // The views write after the `calls` part of the same insert: a reader
    // can see the facts a moment before the last rollup.
    let tag_rows: i64 = want.values().map(|v| v.0).sum();
    assert_eq!(tag_rows, 8, "each call once per tag it carries");
    env.wait_for_count(
        "SELECT sum(calls) FROM {db}.cost_daily_tags",
        8,
        crate::support::PATIENCE,
    )
    .await;
    assert_eq!(
        want[&("feature".to_string(), "search".to_string())],
        (4, 1, d("0.0072")),
        "the test's own arithmetic"
    );
    assert_eq!(tag_rollup(&env).await, want);
    assert_eq!(tag_facts(&env).await, want);
    // A per-key total is the tagged spend only: the untagged calls are in
    // `cost_daily` but in no tag row.
    let all = env
        .ch("SELECT toString(sum(cost)) FROM {db}.cost_daily")
        .await;
    let feature_total: Decimal = want
        .iter()
        .filter(|((k, _), _)| k == "feature")
        .map(|(_, v)| v.2)
        .sum();
    assert_eq!(feature_total, d("0.0086"));
    assert_eq!(
        d(all.trim()) - feature_total,
        d("0.0051") + d("0.000107") + d("0.000109"),
        "untagged and variant-only calls"
    );

    // The report API per tag, combined with other dimensions and filters.
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let http = reqwest::Client::new();
    let api = env.api_url();
    let get = |query: String| {
        let http = http.clone();
        let api = api.clone();
        async move {
            http.get(format!(
                "{api}/api/v1/reports/cost?from=2026-03-01&to=2026-04-01&{query}"
            ))
            .send()
            .await
            .unwrap()
        }
    };
    let json = |query: &str| {
        let response = get(query.to_string());
        let query = query.to_string();
        async move {
            let response = response.await;
            assert_eq!(response.status(), 200, "{query}");
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let report = json("group_by=tag:feature").await;
    assert_eq!(report["group_by"], serde_json::json!(["tag:feature"]));
    assert_eq!(report["tag_key"], "feature");
    assert_eq!(
        report_costs(&report, "tag:feature"),
        BTreeMap::from([
            ("search".to_string(), Some(d("0.0072"))),
            ("chat".to_string(), Some(d("0.0014"))),
        ])
    );
    assert_eq!(d(report["total"]["cost"].as_str().unwrap()), feature_total);
    assert_eq!(report["total"]["calls"], 6);
    assert_eq!(report["total"]["unpriced_calls"], 1);

    let report = json("group_by=model&tag.feature=search").await;
    assert_eq!(report["filters"]["tag.feature"], "search");
    assert_eq!(
        report_costs(&report, "model"),
        BTreeMap::from([
            ("tg-tag".to_string(), Some(d("0.0042"))),
            ("tg-tag2".to_string(), Some(d("0.003"))),
            ("tg-nope".to_string(), None),
        ])
    );
    let report = json("group_by=team,tag:feature&day=2026-03-11").await;
    let groups: BTreeMap<(String, String), Decimal> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                (
                    g["key"]["team"].as_str().unwrap().to_string(),
                    g["key"]["tag:feature"].as_str().unwrap().to_string(),
                ),
                d(g["cost"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        groups,
        BTreeMap::from([
            (("team-a".into(), "chat".into()), d("0.0004")),
            (("team-b".into(), "search".into()), d("0.003")),
        ])
    );
    let report = json("group_by=day,tag:variant").await;
    assert_eq!(report["groups"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(
        d(report["total"]["cost"].as_str().unwrap()),
        d("0.0021") + d("0.000109")
    );

    // CSV: the same rows and strings, and the page's CSV is the API's.
    let csv = get("group_by=tag:feature&format=csv".into())
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("tag:feature,calls,unpriced_calls"),
        "{csv}"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].starts_with("search,4,1,"), "{csv}");
    assert_eq!(d(lines[3].rsplit(',').next().unwrap()), feature_total);
    let page_csv = http
        .get(format!(
            "{api}/finance/cost.csv?from=2026-03-01&to=2026-04-01&group_by=tag:feature"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, page_csv);
    // The page's "group by tag" input joins group_by; the page says what a
    // tag report covers and shows the CSV's costs.
    let page = http
        .get(format!(
            "{api}/finance/cost?from=2026-03-01&to=2026-04-01&group_by=&group_tag=feature"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"tag-note\""), "{page}");
    assert!(page.contains("value=\"feature\""), "{page}");
    for line in &lines[1..] {
        let cost = line.rsplit(',').next().unwrap();
        assert!(shows(&page, cost), "page lacks {cost}");
    }
    assert!(
        page.contains("tag.feature=search") && page.contains("group_by=team\">search</a>"),
        "drill-down from a tag value to its teams: {page}"
    );

    // Bad tag requests: 400 naming the parameter.
    for (query, parameter) in [
        ("group_by=tag:bad%20key", "group_by"),
        ("group_by=tag:", "group_by"),
        ("tag.bad$=x", "tag.bad$"),
        ("group_by=user,tag:feature", "group_by"),
        ("group_by=tag:feature&tag.variant=b", "tag.variant"),
    ] {
        let response = get(query.to_string()).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }

    // Reprice tg-tag after a correction: the adjustments carry the calls'
    // tags, and the tag rollup equals facts + adjustments and the costs
    // computed here at the corrected price.
    import(
        &env,
        r#"{"tg-tag": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                       "input_cost_per_token": 1.5e-06, "output_cost_per_token": 2e-06,
                       "input_cost_per_request": 0.0001}}"#,
    );
    let out = run_ok(
        &env,
        &[
            "reprice",
            "--model",
            "tg-tag",
            "--from",
            "2026-03-01T00:00:00Z",
            "--to",
            "2026-04-01T00:00:00Z",
        ],
    );
    assert!(out.contains("7 call(s) changed"), "{out}");
    let untagged_adjustments = env
        .ch("SELECT count() FROM {db}.cost_adjustments WHERE empty(tag_keys)")
        .await;
    assert_eq!(untagged_adjustments.trim(), "4", "two untagged calls x 2");
    let want = expected_by_tag(&events, true);
    assert_eq!(
        want[&("feature".to_string(), "search".to_string())],
        (4, 1, d("0.0087")),
        "0.0026 + 0.0031 + 0.003"
    );
    assert_eq!(tag_rollup(&env).await, want);
    assert_eq!(tag_facts(&env).await, want);
    let report = json("group_by=tag:feature").await;
    assert_eq!(
        report_costs(&report, "tag:feature"),
        BTreeMap::from([
            ("search".to_string(), Some(d("0.0087"))),
            ("chat".to_string(), Some(d("0.00195"))),
        ])
    );
    // The old version's rows net out: the feature report by price version
    // has the corrected version and tg-tag2's only (plus the unpriced).
    let report = json("group_by=price_version&tag.feature=search").await;
    assert_eq!(report["groups"].as_array().unwrap().len(), 3, "{report}");
}

/// Forget that migration `version` was applied, so `tollgate migrate`
/// applies it again (18.16: no lightweight DELETE; copy the other rows).
pub(crate) async fn forget_migration(env: &TestEnv, version: u32) {
    for sql in [
        "DROP TABLE IF EXISTS {db}.schema_migrations_keep".to_string(),
        "CREATE TABLE {db}.schema_migrations_keep AS {db}.schema_migrations".to_string(),
        format!(
            "INSERT INTO {{db}}.schema_migrations_keep SELECT * FROM {{db}}.schema_migrations WHERE version != {version}"
        ),
        "DROP TABLE {db}.schema_migrations".to_string(),
        "RENAME TABLE {db}.schema_migrations_keep TO {db}.schema_migrations".to_string(),
    ] {
        env.ch(&sql).await;
    }
}

/// Back to the state before migration `version`: drop the tables and views
/// it created, in order, and forget that it was applied.
async fn unapply(env: &TestEnv, version: u32, tables: &[&str]) {
    for table in tables {
        env.ch(&format!("DROP TABLE {{db}}.{table}")).await;
    }
    forget_migration(env, version).await;
}

/// `tollgate migrate`, which must succeed (`round` names it in the panic).
fn migrate_round(env: &TestEnv, round: &str) {
    let out = env.tollgate(&["migrate"]).output().unwrap();
    assert!(
        out.status.success(),
        "migrate ({round}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a rollup backfill test starts from: five calls stored before the
/// rollup existed (team t on 2026-03-10: u1 with k1 and k2, k2 with u1 and
/// u2, e2 of `e2_model`, a blocked call that is not billable; team t2 on
/// the 11th with an unpriced model), and e1 repriced (reversal at version
/// 1, posting at version 2).
async fn calls_before_a_rollup(env: &TestEnv, e2_model: &str) {
    env.ch(&format!(
        "INSERT INTO {{db}}.calls (event_id, kind, occurred_at, org_id, team_id, user_id, api_key_id, provider, model, \
         input_tokens, output_tokens, cost, priced, price_version) VALUES \
         ('e1', 'ai.call.completed', '2026-03-10 10:00:00', 'o', 't', 'u1', 'k1', 'p', 'm', 100, 10, toDecimal128('0.5', 12), 1, 1), \
         ('e2', 'ai.call.completed', '2026-03-10 11:00:00', 'o', 't', 'u2', 'k2', 'p', '{e2_model}', 200, 20, toDecimal128('0.25', 12), 1, 1), \
         ('e3', 'ai.call.failed', '2026-03-10 12:00:00', 'o', 't', 'u1', 'k2', 'p', 'm', 300, 0, toDecimal128('0.125', 12), 1, 1), \
         ('e4', 'ai.call.blocked', '2026-03-10 12:30:00', 'o', 't', 'u1', 'k1', 'p', 'm', 999, 0, toDecimal128('9', 12), 1, 1), \
         ('e5', 'ai.call.completed', '2026-03-11 09:00:00', 'o', 't2', 'u3', 'k3', 'p', 'x', 7, 0, toDecimal128('0', 12), 0, 0)"
    ))
    .await;
    env.ch(
        "INSERT INTO {db}.cost_adjustments (event_id, occurred_at, org_id, team_id, user_id, api_key_id, provider, model, \
         price_version, sign, input_tokens, output_tokens, cost) VALUES \
         ('e1', '2026-03-10 10:00:00', 'o', 't', 'u1', 'k1', 'p', 'm', 1, -1, -100, -10, toDecimal128('-0.5', 12)), \
         ('e1', '2026-03-10 10:00:00', 'o', 't', 'u1', 'k1', 'p', 'm', 2, 1, 100, 10, toDecimal128('0.75', 12))",
    )
    .await;
}

/// Before a backfill runs again over a filled rollup (as after a crash
/// before the migration was recorded): a call the views fold (e6, user u9,
/// key k9, on the 12th) and one whose insert they did not see (e7, stored
/// in `cost_daily` only on the 13th, as by an insert that began before the
/// views existed). Each must be counted once: e6 by the views, e7 by the
/// backfill.
async fn a_folded_call_and_an_unseen_one(env: &TestEnv) {
    env.ch(
        "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, user_id, api_key_id, provider, model, \
         input_tokens, output_tokens, cost, priced, price_version) VALUES \
         ('e6', 'ai.call.completed', '2026-03-12 10:00:00', 'o', 't', 'u9', 'k9', 'p', 'm', 1, 1, toDecimal128('1', 12), 1, 2)",
    )
    .await;
    env.ch(
        "INSERT INTO {db}.cost_daily (day, org_id, team_id, user_id, api_key_id, provider, model, price_version, \
         calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
         images, audio_ms, cost) VALUES \
         ('2026-03-13', 'o', 't', 'u9', 'k9', 'p', 'm', 2, 1, 0, 2, 2, 1, 0, 0, 0, 0, toDecimal128('2', 12))",
    )
    .await;
}

/// e2 (`model`) repriced after the views are back: 0.25 reversed at
/// version 1, 0.5 posted at version 2.
async fn reprice_e2(env: &TestEnv, model: &str) {
    env.ch(&format!(
        "INSERT INTO {{db}}.cost_adjustments (event_id, occurred_at, org_id, team_id, user_id, api_key_id, provider, model, \
         price_version, sign, input_tokens, output_tokens, cost) VALUES \
         ('e2', '2026-03-10 11:00:00', 'o', 't', 'u2', 'k2', 'p', '{model}', 1, -1, -200, -20, toDecimal128('-0.25', 12)), \
         ('e2', '2026-03-10 11:00:00', 'o', 't', 'u2', 'k2', 'p', '{model}', 2, 1, 200, 20, toDecimal128('0.5', 12))"
    ))
    .await;
}

/// `tollgate rollups check` over March 2026, with `extra` arguments.
fn rollups_check_march(env: &TestEnv, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "rollups",
        "check",
        "--from",
        "2026-03-01",
        "--to",
        "2026-04-01",
    ];
    args.extend(extra);
    env.tollgate(&args).output().unwrap()
}

/// A database that stored calls and repricing adjustments before 0023:
/// applying it fills the tag rollup from them (adjustments without tags
/// take their call's), and applying it again counts nothing twice.
#[tokio::test]
async fn migration_0023_backfills_the_tag_rollup_once() {
    let env = TestEnv::new("cost_tags_backfill").await;
    // Back to the state before 0023 (the new columns of cost_adjustments
    // stay: applying the file again must accept them as applied).
    unapply(
        &env,
        23,
        &[
            "cost_daily_tags_mv",
            "cost_adjustments_tags_mv",
            "cost_daily_tags",
        ],
    )
    .await;
    env.ch(
        "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, provider, model, \
         tag_keys, tag_values, cost, priced, price_version) VALUES \
         ('e1', 'ai.call.completed', '2026-03-10 10:00:00', 'o', 't', 'p', 'm', ['feature', 'variant'], ['search', 'b'], toDecimal128('0.5', 12), 1, 1), \
         ('e2', 'ai.call.completed', '2026-03-10 11:00:00', 'o', 't', 'p', 'm', [], [], toDecimal128('0.25', 12), 1, 1), \
         ('e3', 'ai.call.failed', '2026-03-11 11:00:00', 'o', 't', 'p', 'm', ['feature'], ['chat'], toDecimal128('0.125', 12), 1, 1), \
         ('e4', 'ai.call.blocked', '2026-03-11 12:00:00', 'o', 't', 'p', 'm', ['feature'], ['chat'], toDecimal128('0', 12), 0, 0), \
         ('e5', 'ai.call.completed', '2026-03-12 11:00:00', 'o', 't', 'p', 'x', ['feature'], ['chat'], toDecimal128('0', 12), 0, 0)",
    )
    .await;
    // e1 repriced before 0023: its adjustments have no tags of their own.
    env.ch(
        "INSERT INTO {db}.cost_adjustments (event_id, occurred_at, org_id, team_id, provider, model, \
         price_version, sign, cost) VALUES \
         ('e1', '2026-03-10 10:00:00', 'o', 't', 'p', 'm', 1, -1, toDecimal128('-0.5', 12)), \
         ('e1', '2026-03-10 10:00:00', 'o', 't', 'p', 'm', 2, 1, toDecimal128('0.75', 12))",
    )
    .await;
    let want: BTreeMap<(String, String), (i64, i64, Decimal)> = [
        (("feature", "chat"), (2, 1, d("0.125"))),
        (("feature", "search"), (1, 0, d("0.75"))),
        (("variant", "b"), (1, 0, d("0.75"))),
    ]
    .into_iter()
    .map(|((k, v), sums)| ((k.to_string(), v.to_string()), sums))
    .collect();
    for round in 0..2 {
        migrate_round(&env, &format!("round {round}"));
        assert_eq!(tag_rollup(&env).await, want, "round {round}");
        // The second round applies the whole file again over a filled
        // table (as after a crash before it was recorded).
        forget_migration(&env, 23).await;
    }
    // The rollup check reads the facts the same way: e1's adjustments
    // without tags of their own under e1's tags.
    let out = rollups_check_march(&env, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("cost_daily_tags agrees with the facts"),
        "{stdout}"
    );
    // And the views are back: a new tagged call reaches the tag rollup.
    env.ch(
        "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, provider, model, \
         tag_keys, tag_values, cost, priced, price_version) VALUES \
         ('e6', 'ai.call.completed', '2026-03-12 12:00:00', 'o', 't', 'p', 'm', ['variant'], ['b'], toDecimal128('1', 12), 1, 2)",
    )
    .await;
    let rollup = tag_rollup(&env).await;
    assert_eq!(
        rollup[&("variant".to_string(), "b".to_string())],
        (2, 0, d("1.75"))
    );
}

/// A database that stored calls and repricing adjustments before 0037:
/// applying it fills `cost_daily_by_team` from `cost_daily`, each call and
/// adjustment exactly once, also when the file is applied again over a
/// filled table, and whether the views had already folded a call (counted
/// by them, not again) or not (an insert that was running when the views
/// were created: counted by the backfill).
#[tokio::test]
async fn migration_0037_backfills_the_team_rollup_once() {
    let env = TestEnv::new("cost_by_team_backfill").await;
    unapply(
        &env,
        37,
        &[
            "cost_daily_by_team_mv",
            "cost_adjustments_by_team_mv",
            "cost_daily_by_team",
        ],
    )
    .await;
    // Two users and two keys of team t on one day and model: one cell of
    // the narrow rollup; a second team, day and an unpriced model.
    calls_before_a_rollup(&env, "m").await;
    // day, org, team, provider, model, version, then calls, unpriced,
    // input, output, cached, cache writes, reasoning, images, audio, cost.
    let want = |extra: &[&str]| {
        let mut cells: Vec<String> = [
            "2026-03-10\to\tt\tp\tm\t1\t2\t0\t500\t20\t0\t0\t0\t0\t0\t0.375000000000",
            "2026-03-10\to\tt\tp\tm\t2\t1\t0\t100\t10\t0\t0\t0\t0\t0\t0.750000000000",
            "2026-03-11\to\tt2\tp\tx\t0\t1\t1\t7\t0\t0\t0\t0\t0\t0\t0.000000000000",
        ]
        .iter()
        .chain(extra)
        .map(|c| c.to_string())
        .collect();
        cells.sort();
        cells
    };
    migrate_round(&env, "first");
    assert_eq!(by_team_cells(&env, "cost_daily_by_team").await, want(&[]));
    assert_by_team_equals_cost_daily(&env).await;

    // Applied again over the filled table.
    a_folded_call_and_an_unseen_one(&env).await;
    forget_migration(&env, 37).await;
    migrate_round(&env, "again");
    let later = [
        "2026-03-12\to\tt\tp\tm\t2\t1\t0\t1\t1\t0\t0\t0\t0\t0\t1.000000000000",
        "2026-03-13\to\tt\tp\tm\t2\t1\t0\t2\t2\t1\t0\t0\t0\t0\t2.000000000000",
    ];
    assert_eq!(
        by_team_cells(&env, "cost_daily_by_team").await,
        want(&later)
    );
    assert_by_team_equals_cost_daily(&env).await;

    // The views are back: a reprice correction reaches both rollups.
    reprice_e2(&env, "m").await;
    let moved = [
        "2026-03-10\to\tt\tp\tm\t1\t1\t0\t300\t0\t0\t0\t0\t0\t0\t0.125000000000",
        "2026-03-10\to\tt\tp\tm\t2\t2\t0\t300\t30\t0\t0\t0\t0\t0\t1.250000000000",
        "2026-03-11\to\tt2\tp\tx\t0\t1\t1\t7\t0\t0\t0\t0\t0\t0\t0.000000000000",
    ];
    let mut expected: Vec<String> = moved.iter().chain(&later).map(|c| c.to_string()).collect();
    expected.sort();
    assert_eq!(by_team_cells(&env, "cost_daily_by_team").await, expected);
    assert_by_team_equals_cost_daily(&env).await;
}

/// A database that stored calls and repricing adjustments before 0039:
/// applying it fills `cost_daily_by_user` and `cost_daily_by_key` from
/// `cost_daily`, each call and adjustment exactly once, also when the file
/// is applied again over filled tables, and whether the views had already
/// folded a call (counted by them, not again) or not (counted by the
/// backfill).
#[tokio::test]
async fn migration_0039_backfills_the_caller_rollups_once() {
    let env = TestEnv::new("cost_by_caller_backfill").await;
    unapply(
        &env,
        39,
        &[
            "cost_daily_by_user_mv",
            "cost_adjustments_by_user_mv",
            "cost_daily_by_key_mv",
            "cost_adjustments_by_key_mv",
            "cost_daily_by_user",
            "cost_daily_by_key",
        ],
    )
    .await;
    // Two users crossing two keys of team t on one day; e1's repricing is
    // one cell of each caller rollup, which has no version.
    calls_before_a_rollup(&env, "n").await;
    // day, org, team, user or key, then calls, unpriced, input, output,
    // cached, cache writes, reasoning, images, audio, cost.
    let sorted = |cells: &[&str]| {
        let mut cells: Vec<String> = cells.iter().map(|c| c.to_string()).collect();
        cells.sort();
        cells
    };
    let users = [
        "2026-03-10\to\tt\tu1\t2\t0\t400\t10\t0\t0\t0\t0\t0\t0.875000000000",
        "2026-03-10\to\tt\tu2\t1\t0\t200\t20\t0\t0\t0\t0\t0\t0.250000000000",
        "2026-03-11\to\tt2\tu3\t1\t1\t7\t0\t0\t0\t0\t0\t0\t0.000000000000",
    ];
    let keys = [
        "2026-03-10\to\tt\tk1\t1\t0\t100\t10\t0\t0\t0\t0\t0\t0.750000000000",
        "2026-03-10\to\tt\tk2\t2\t0\t500\t20\t0\t0\t0\t0\t0\t0.375000000000",
        "2026-03-11\to\tt2\tk3\t1\t1\t7\t0\t0\t0\t0\t0\t0\t0.000000000000",
    ];
    let caller_cells = || async {
        (
            cells_at(&env, "cost_daily_by_user", BY_USER).await,
            cells_at(&env, "cost_daily_by_key", BY_KEY).await,
        )
    };
    migrate_round(&env, "first");
    assert_eq!(caller_cells().await, (sorted(&users), sorted(&keys)));
    assert_by_caller_equals_cost_daily(&env).await;

    // Applied again over the filled tables.
    a_folded_call_and_an_unseen_one(&env).await;
    forget_migration(&env, 39).await;
    migrate_round(&env, "again");
    let later = |id: &str| {
        [
            format!("2026-03-12\to\tt\t{id}\t1\t0\t1\t1\t0\t0\t0\t0\t0\t1.000000000000"),
            format!("2026-03-13\to\tt\t{id}\t1\t0\t2\t2\t1\t0\t0\t0\t0\t2.000000000000"),
        ]
    };
    let with = |cells: &[&str], extra: [String; 2]| {
        let mut all = sorted(cells);
        all.extend(extra);
        all.sort();
        all
    };
    assert_eq!(
        caller_cells().await,
        (with(&users, later("u9")), with(&keys, later("k9")))
    );
    assert_by_caller_equals_cost_daily(&env).await;

    // The views are back: a reprice correction reaches both rollups.
    reprice_e2(&env, "n").await;
    let users = [
        users[0],
        "2026-03-10\to\tt\tu2\t1\t0\t200\t20\t0\t0\t0\t0\t0\t0.500000000000",
        users[2],
    ];
    let keys = [
        keys[0],
        "2026-03-10\to\tt\tk2\t2\t0\t500\t20\t0\t0\t0\t0\t0\t0.625000000000",
        keys[2],
    ];
    assert_eq!(
        caller_cells().await,
        (with(&users, later("u9")), with(&keys, later("k9")))
    );
    assert_by_caller_equals_cost_daily(&env).await;
}

/// A group's calls, unpriced calls, input tokens and cost.
type GroupSums = (i64, i64, i64, Option<Decimal>);

/// A top spender's id with its calls, unpriced calls and cost.
type Spender = (String, (i64, i64, Option<Decimal>));

/// The groups of a cost report as `id → (calls, unpriced calls, input
/// tokens, cost)`, the id being the grouped keys joined by `/`.
fn report_groups(report: &serde_json::Value, keys: &[&str]) -> BTreeMap<String, GroupSums> {
    report["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {report}"))
        .iter()
        .map(|g| {
            let id: Vec<&str> = keys.iter().map(|k| g["key"][k].as_str().unwrap()).collect();
            (
                id.join("/"),
                (
                    g["calls"].as_i64().unwrap(),
                    g["unpriced_calls"].as_i64().unwrap(),
                    g["input_tokens"].as_i64().unwrap(),
                    g["cost"].as_str().map(d),
                ),
            )
        })
        .collect()
}

/// The same groups summed from `cost_daily` (what the reports by user and
/// key read before 0039), `where` a condition on its columns.
async fn cost_daily_groups(
    env: &TestEnv,
    columns: &[&str],
    condition: &str,
) -> BTreeMap<String, GroupSums> {
    let id = if columns.len() == 1 {
        columns[0].to_string()
    } else {
        format!("concat({})", columns.join(", '/', "))
    };
    let out = env
        .ch(&format!(
            "SELECT {id} AS g, sum(calls), sum(unpriced_calls), sum(input_tokens), toString(sum(cost)) \
             FROM {{db}}.cost_daily WHERE day >= toDate('2026-03-01') AND day < toDate('2026-04-01') AND {condition} \
             GROUP BY g HAVING sum(calls) != 0 OR sum(cost) != 0 FORMAT TSV"
        ))
        .await;
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let (calls, unpriced): (i64, i64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let cost = d(f[4]);
            let priced = calls != unpriced || !cost.is_zero();
            (
                f[0].to_string(),
                (
                    calls,
                    unpriced,
                    f[3].parse().unwrap(),
                    priced.then_some(cost),
                ),
            )
        })
        .collect()
}

/// The reports that moved to the rollups per user and per key (0039) give
/// `cost_daily`'s figures to the last decimal: the report by user and by
/// key with and without filters, the overview's top users and top keys and
/// the top spenders CSV, before and after a reprice.
#[tokio::test]
async fn reports_by_user_and_key_equal_cost_daily_to_the_last_decimal() {
    let mut env = TestEnv::new("cost_by_caller_reports").await;
    let v1 = r#"{"tg-caller": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                   "input_cost_per_token": 1.3e-06, "output_cost_per_token": 7e-06}}"#;
    import(&env, v1);
    let completed = "ai.call.completed";
    let mut events = Vec::new();
    // 3 users crossing 3 keys over 2 teams, 4 days, a priced and an
    // unpriced model, a failed call; tokens differ per call so every sum
    // is distinct.
    for i in 0..18u32 {
        let team = if i % 3 == 0 { "team-b" } else { "team-a" };
        let model = if i % 7 == 6 {
            "tg-unknown"
        } else {
            "tg-caller"
        };
        let outcome = if i == 4 {
            Outcome::Error
        } else {
            Outcome::Success
        };
        let mut e = call(
            completed,
            team,
            model,
            Utc.with_ymd_and_hms(2026, 3, 5 + i % 4, 10, i, 0).unwrap(),
            usage(1_000 + 37 * u64::from(i), 0, 0, 50 + 11 * u64::from(i), 0),
            outcome,
        );
        if outcome == Outcome::Error {
            e.kind = "ai.call.failed".parse().unwrap();
        }
        e.user_id = format!("u{}", i % 3);
        e.api_key_id = format!("k{}", (i / 3) % 3);
        events.push(e);
    }
    produce(&env.events_topic, &events).await;
    env.spawn("process", &["process"]);
    let n = events.len() as u64;
    assert_eq!(
        env.wait_for_count("SELECT count() FROM {db}.calls", n, Duration::from_secs(60))
            .await,
        n
    );
    env.wait_for_cost_rollup().await;
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let march = "from=2026-03-01&to=2026-04-01";
    let check = |round: &'static str| {
        let env = &env;
        async move {
            for (params, keys, columns, condition) in [
                ("group_by=user", &["user"][..], &["user_id"][..], "1"),
                ("group_by=key", &["key"][..], &["api_key_id"][..], "1"),
                (
                    "group_by=user&team=team-a",
                    &["user"][..],
                    &["user_id"][..],
                    "team_id = 'team-a'",
                ),
                (
                    "group_by=day,key&month=2026-03",
                    &["day", "key"][..],
                    &["toString(day)", "api_key_id"][..],
                    "1",
                ),
                (
                    "group_by=team,user&key=k1",
                    &["team", "user"][..],
                    &["team_id", "user_id"][..],
                    "api_key_id = 'k1'",
                ),
            ] {
                let report: serde_json::Value = reqwest::get(format!(
                    "{}/api/v1/reports/cost?{march}&{params}",
                    env.api_url()
                ))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
                let want = cost_daily_groups(env, columns, condition).await;
                assert!(want.len() >= 2, "{round} {params}: {want:?}");
                assert_eq!(report_groups(&report, keys), want, "{round} {params}");
            }
            // The top spenders: the CSV of the page, rank by rank, against
            // cost_daily's sums in the report's order (priced first, cost
            // highest first, then id).
            let csv = reqwest::get(format!("{}/finance/cost/top.csv?{march}", env.api_url()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for (dimension, column) in [("user", "user_id"), ("key", "api_key_id")] {
                let mut want: Vec<(String, GroupSums)> = cost_daily_groups(env, &[column], "1")
                    .await
                    .into_iter()
                    .collect();
                want.sort_by(|a, b| {
                    b.1 .3
                        .unwrap_or(Decimal::MIN)
                        .cmp(&a.1 .3.unwrap_or(Decimal::MIN))
                        .then_with(|| a.0.cmp(&b.0))
                });
                let got: Vec<Spender> = csv
                    .lines()
                    .skip(1)
                    .map(|l| l.split(',').collect::<Vec<_>>())
                    .filter(|f| f[0] == dimension)
                    .enumerate()
                    .map(|(i, f)| {
                        assert_eq!(f[1], (i + 1).to_string(), "{csv}");
                        let cost = (f[5] != "unpriced").then(|| d(f[5]));
                        (
                            f[2].to_string(),
                            (f[3].parse().unwrap(), f[4].parse().unwrap(), cost),
                        )
                    })
                    .collect();
                let want: Vec<Spender> = want
                    .into_iter()
                    .map(|(id, (calls, unpriced, _, cost))| (id, (calls, unpriced, cost)))
                    .collect();
                assert_eq!(got, want, "{round} {dimension}: {csv}");
            }
        }
    };
    check("before the reprice").await;
    assert_rollups_equal_cost_daily(&env).await;

    // A corrected price, repriced: the corrections reach every rollup.
    import(&env, &v1.replace("1.3e-06", "1.7e-06"));
    let out = run_ok(
        &env,
        &[
            "reprice",
            "--model",
            "tg-caller",
            "--from",
            "2026-03-01T00:00:00Z",
            "--to",
            "2026-04-01T00:00:00Z",
        ],
    );
    assert!(out.contains("call(s) changed"), "{out}");
    assert_rollups_equal_cost_daily(&env).await;
    check("after the reprice").await;
}

/// The cache-write convention end to end, and the repair of what the old
/// formula stored: a call priced by the processor costs what Anthropic
/// bills; a call stored before the fix (cache writes billed on top of the
/// input) is corrected by `tollgate reprice --all`, visibly on the
/// statement, and a second run changes nothing.
#[tokio::test]
async fn cache_writes_are_billed_once_and_reprice_all_repairs_stored_calls() {
    let mut env = TestEnv::new("cost_cache_write").await;
    // claude-sonnet-4-5's prices: $3 / $15 per million, writes $3.75, reads $0.30.
    import(
        &env,
        r#"{"tg-sonnet": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
              "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
              "cache_creation_input_token_cost": 3.75e-06,
              "cache_read_input_token_cost": 3e-07}}"#,
    );
    let version = version_id(&versions(&env), "tg-sonnet", "2026-03-01");
    // 284 plain + 1251 written + 2884 read input tokens, 171 output tokens.
    let anthropic_usage = usage(284 + 1251 + 2884, 2884, 1251, 171, 0);
    let fresh = call(
        "ai.call.completed",
        "team-a",
        "tg-sonnet",
        Utc.with_ymd_and_hms(2026, 3, 5, 10, 0, 0).unwrap(),
        anthropic_usage.clone(),
        Outcome::Success,
    );
    produce(&env.events_topic, std::slice::from_ref(&fresh)).await;
    env.spawn("process", &["process"]);
    env.wait_for_count("SELECT count() FROM {db}.calls", 1, Duration::from_secs(60))
        .await;
    env.wait_for_cost_rollup().await;
    assert_eq!(
        effective_costs(&env).await[&fresh.event_id.to_string()],
        d("0.00897345"),
        "a freshly priced call bills its cache writes once"
    );

    // A call stored by the old formula: 0.00897345 + 1251 × 0.000003.
    let stale_id = Uuid::now_v7().to_string();
    env.ch(&format!(
        "INSERT INTO {{db}}.calls (event_id, schema_version, kind, occurred_at, occurred_at_ms, org_id, team_id, \
         user_id, api_key_id, call_id, provider, model, requested_model, attempt, operation, duration_ms, \
         input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, outcome, http_status, \
         kafka_partition, kafka_offset, cost, priced, price_version) VALUES \
         ('{stale_id}', 1, 'ai.call.completed', toDateTime('2026-03-06 10:00:00', 'UTC'), 1772791200000, \
         'org-1', 'team-a', 'team-a-user', 'team-a-key', 'stale-call', 'testprov', 'tg-sonnet', 'tg-sonnet', \
         1, 'chat', 100, 4419, 171, 2884, 1251, 'success', 200, 99, 0, toDecimal128('0.01272645', 12), 1, {version})"
    ))
    .await;

    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let statement_total = || async {
        let statement: serde_json::Value = reqwest::get(format!(
            "{}/api/v1/finance/statement?team=team-a&month=2026-03",
            env.api_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        d(statement["total"]["cost"].as_str().unwrap())
    };
    assert_eq!(statement_total().await, d("0.00897345") + d("0.01272645"));

    let range = [
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-04-01T00:00:00Z",
    ];
    let dry = run_ok(
        &env,
        &[&["reprice", "--all", "--dry-run"][..], &range[..]].concat(),
    );
    assert!(dry.contains("dry run"), "{dry}");
    assert_eq!(
        env.ch("SELECT count() FROM {db}.cost_adjustments")
            .await
            .trim(),
        "0"
    );
    let out = run_ok(&env, &["reprice", "--all"]);
    assert!(out.contains("1 call(s) changed"), "{out}");
    let costs = effective_costs(&env).await;
    assert_eq!(costs[&stale_id], d("0.00897345"));
    assert_eq!(costs[&fresh.event_id.to_string()], d("0.00897345"));
    assert_eq!(statement_total().await, d("0.0179469"));
    // The statement shows the correction, in JSON, CSV and on the page.
    let statement: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/finance/statement?team=team-a&month=2026-03",
        env.api_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        d(statement["repricing"].as_str().unwrap()),
        d("-0.003753"),
        "{statement:#}"
    );
    let line = &statement["lines"][0];
    assert_eq!(
        d(line["repricing"].as_str().unwrap()),
        d("-0.003753"),
        "{statement:#}"
    );
    assert_eq!(
        d(line["cost"].as_str().unwrap()),
        d("0.0179469"),
        "{statement:#}"
    );
    let csv = reqwest::get(format!(
        "{}/finance/statement.csv?team=team-a&month=2026-03",
        env.api_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",repricing_usd,cost_usd"),
        "{csv}"
    );
    let line = csv.lines().nth(1).unwrap();
    let cells: Vec<&str> = line.rsplitn(3, ',').collect();
    assert_eq!(d(cells[1]), d("-0.003753"), "{csv}");
    let page = reqwest::get(format!(
        "{}/finance/statement?team=team-a&month=2026-03",
        env.api_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(shows(&page, cells[1]), "{page}");
    assert_eq!(
        rollup_total(&env, "tg-sonnet").await,
        (d("0.0179469"), 2, 0)
    );

    // Idempotent: nothing more to change, nothing written.
    let adjustments = env.ch("SELECT count() FROM {db}.cost_adjustments").await;
    assert_eq!(adjustments.trim(), "2", "one reversal and one posting");
    let out = run_ok(&env, &[&["reprice", "--all"][..], &range[..]].concat());
    assert!(out.contains("0 call(s) changed"), "{out}");
    assert_eq!(
        env.ch("SELECT count() FROM {db}.cost_adjustments").await,
        adjustments
    );
}

/// Token counts beyond what one call can use are refused by the processors
/// too (an event produced straight to Kafka skips the ingest API): it goes
/// to the dead-letter topic naming the field, and the report's token sums,
/// 128-bit, cannot wrap even over rows near the 64-bit limit.
#[tokio::test]
async fn token_sums_cannot_overflow() {
    let mut env = TestEnv::new("cost_overflow").await;
    let big = call(
        "ai.call.completed",
        "team-a",
        "tg-any",
        Utc.with_ymd_and_hms(2026, 3, 5, 10, 0, 0).unwrap(),
        usage(1 << 62, 0, 0, 0, 0),
        Outcome::Success,
    );
    let ok = call(
        "ai.call.completed",
        "team-a",
        "tg-any",
        Utc.with_ymd_and_hms(2026, 3, 5, 10, 0, 0).unwrap(),
        usage(1_000_000_000, 0, 0, 0, 0),
        Outcome::Success,
    );
    produce(&env.events_topic, &[big.clone(), ok.clone()]).await;
    env.spawn("process", &["process"]);
    env.wait_for_count("SELECT count() FROM {db}.calls", 1, Duration::from_secs(60))
        .await;
    let dead = read_records(&env.dlq_topic, Duration::from_secs(60), |r| !r.is_empty()).await;
    let dead_text = format!("{dead:?}");
    assert!(dead_text.contains("call.usage.input_tokens"), "{dead_text}");
    assert!(
        dead_text.contains(&big.event_id.to_string()) || dead_text.contains("more than one call"),
        "{dead_text}"
    );
    env.wait_for_cost_rollup().await;

    // Two rollup rows whose input tokens together pass 2^63, in both
    // rollups (a report by model reads the one without user and key).
    for day in ["2026-03-07", "2026-03-08"] {
        env.ch(&format!(
            "INSERT INTO {{db}}.cost_daily (day, org_id, team_id, user_id, api_key_id, provider, model, \
             price_version, calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, \
             cache_write_tokens, reasoning_tokens, images, audio_ms, cost) VALUES \
             (toDate('{day}'), 'org-1', 'team-a', 'u', 'k', 'testprov', 'tg-any', 0, 1, 1, \
             5000000000000000000, 0, 0, 0, 0, 0, 0, toDecimal128(0, 12))"
        ))
        .await;
        env.ch(&format!(
            "INSERT INTO {{db}}.cost_daily_by_team (day, org_id, team_id, provider, model, \
             price_version, calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, \
             cache_write_tokens, reasoning_tokens, images, audio_ms, cost) VALUES \
             (toDate('{day}'), 'org-1', 'team-a', 'testprov', 'tg-any', 0, 1, 1, \
             5000000000000000000, 0, 0, 0, 0, 0, 0, toDecimal128(0, 12))"
        ))
        .await;
        for (table, caller, id) in [
            ("cost_daily_by_user", "user_id", "u"),
            ("cost_daily_by_key", "api_key_id", "k"),
        ] {
            env.ch(&format!(
                "INSERT INTO {{db}}.{table} (day, org_id, team_id, {caller}, \
                 calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, \
                 cache_write_tokens, reasoning_tokens, images, audio_ms, cost) VALUES \
                 (toDate('{day}'), 'org-1', 'team-a', '{id}', 1, 1, \
                 5000000000000000000, 0, 0, 0, 0, 0, 0, toDecimal128(0, 12))"
            ))
            .await;
        }
    }
    assert_rollups_equal_cost_daily(&env).await;
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let report: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/reports/cost?from=2026-03-01&to=2026-04-01&group_by=model",
        env.api_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // 10^9 from the stored call + 2 × 5·10^18, exactly.
    assert_eq!(
        report["total"]["input_tokens"].to_string(),
        "10000000001000000000",
        "{report}"
    );
    // So do the reports by user and by key, which read their rollups.
    for group in ["user", "key"] {
        let report: serde_json::Value = reqwest::get(format!(
            "{}/api/v1/reports/cost?from=2026-03-01&to=2026-04-01&group_by={group}",
            env.api_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(
            report["total"]["input_tokens"].to_string(),
            "10000000001000000000",
            "{report}"
        );
    }
}

/// Real entries of LiteLLM's price file (see `tests/prices/README.md`).
const LITELLM_SUBSET: &str = include_str!("../prices/litellm_subset.json");

/// `event` as a call to `provider`.
fn on(provider: &str, mut event: Event) -> Event {
    if let Some(call) = event.call.as_mut() {
        call.provider = provider.into();
    }
    event
}

fn import_with(env: &TestEnv, text: &str, extra: &[&str]) -> std::process::Output {
    let path = env
        .dir
        .path()
        .join(format!("prices-{}.json", Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    env.tollgate(&[&["prices", "import", path.to_str().unwrap()][..], extra].concat())
        .output()
        .unwrap()
}

/// The statement of team-a for March 2026, by `provider/model`.
async fn statement_lines(env: &TestEnv) -> (serde_json::Value, HashMap<String, serde_json::Value>) {
    let statement: serde_json::Value = reqwest::get(format!(
        "{}/api/v1/finance/statement?team=team-a&month=2026-03",
        env.api_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let lines = statement["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                format!(
                    "{}/{}",
                    l["provider"].as_str().unwrap(),
                    l["model"].as_str().unwrap()
                ),
                l.clone(),
            )
        })
        .collect();
    (statement, lines)
}

/// Issue 9, items 2, 3 and 6: long-context tiers price a 200,001-token
/// gemini-2.5-pro call at the tier (about double what the flat price the
/// old import kept gave); a dated Claude id and `google` / `vertex_ai`
/// events find their LiteLLM entries through the catalog's aliases, and the
/// call says which entry priced it; calls stored before the fix are
/// repaired by `tollgate reprice` (visible on the statement, idempotent);
/// what the import cannot bill is named, never dropped.
#[tokio::test]
async fn tiers_and_aliases_price_calls_and_reprice_repairs_stored_ones() {
    let mut env = TestEnv::new("cost_catalog").await;
    // What the import stored before tiers: gemini-2.5-pro's base prices,
    // its above-200k prices dropped.
    import(
        &env,
        r#"{"gemini-2.5-pro": {"litellm_provider": "gemini", "tollgate_provider": "google",
             "effective_from": "2026-01-01T00:00:00Z",
             "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05}}"#,
    );
    let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap();
    let completed = "ai.call.completed";
    let long = on(
        "google",
        call(
            completed,
            "team-a",
            "gemini-2.5-pro",
            day(5, 10),
            usage(200_001, 0, 0, 1000, 0),
            Outcome::Success,
        ),
    );
    let at_threshold = on(
        "google",
        call(
            completed,
            "team-a",
            "gemini-2.5-pro",
            day(5, 11),
            usage(200_000, 0, 0, 1000, 0),
            Outcome::Success,
        ),
    );
    produce(&env.events_topic, &[long.clone(), at_threshold.clone()]).await;
    env.spawn("process", &["process"]);
    assert_eq!(
        env.wait_for_count("SELECT count() FROM {db}.calls", 2, Duration::from_secs(60))
            .await,
        2
    );
    // A dated Claude call as the fold stored it before aliases: unpriced
    // (the shipped catalog prices `claude-sonnet-4-5`, not its snapshot id).
    let dated_id = Uuid::now_v7().to_string();
    let secs = day(6, 10).timestamp();
    env.ch(&format!(
        "INSERT INTO {{db}}.calls (event_id, schema_version, kind, occurred_at, occurred_at_ms, org_id, \
         team_id, user_id, api_key_id, provider, model, input_tokens, output_tokens, priced, cost, \
         price_version) SELECT '{dated_id}', toUInt16(1), 'ai.call.completed', toDateTime({secs}), \
         toUInt64({secs}000), 'org-1', 'team-a', 'team-a-user', 'team-a-key', 'anthropic', \
         'claude-sonnet-4-5-20250929', toUInt64(1000), toUInt64(100), toUInt8(0), \
         toDecimal128(0, 12), toUInt64(0)"
    ))
    .await;
    env.wait_for_cost_rollup().await;
    let before = effective_costs(&env).await;
    // 200001 * 0.00000125 + 1000 * 0.00001: the halved price.
    assert_eq!(before[&long.event_id.to_string()], d("0.26000125"));
    assert_eq!(before[&at_threshold.event_id.to_string()], d("0.26"));
    assert_eq!(before[&dated_id], d("0"));

    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let (_, lines) = statement_lines(&env).await;
    let dated = &lines["anthropic/claude-sonnet-4-5-20250929"];
    assert!(dated["cost"].is_null(), "{dated}");
    assert_eq!(dated["unpriced_calls"], 1, "{dated}");

    // LiteLLM's own file, tiers and all.
    let first = import_with(
        &env,
        LITELLM_SUBSET,
        &["--effective-from", "2026-01-01T00:00:00Z"],
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Nothing is dropped silently: what is not imported is named, key and entry.
    assert!(
        stdout.contains("`tiered_pricing` not imported, 1 entries refused")
            && stdout.contains("dashscope/qwen-flash"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`input_cost_per_image` not imported, 1 entries imported without this price: gemini-3-pro-image-preview"),
        "{stdout}"
    );
    let listed = versions(&env);
    let grok = listed
        .iter()
        .find(|v| v["provider"] == "xai" && v["model"] == "grok-4.3")
        .unwrap();
    assert_eq!(grok["tiers"][0]["above_tokens"], 200000, "{grok}");
    assert_eq!(grok["tiers"][0]["inclusive"], true, "{grok}");
    let image = listed
        .iter()
        .find(|v| v["model"] == "gemini-3-pro-image-preview")
        .unwrap();
    assert_eq!(image["per_image"], "0.134", "{image}");
    // The repair: the version events name (`google`) corrected with
    // LiteLLM's tiered entry ...
    let mut entry: serde_json::Value = serde_json::from_str(LITELLM_SUBSET).unwrap();
    let mut gemini = entry["gemini/gemini-2.5-pro"].take();
    gemini["tollgate_provider"] = "google".into();
    gemini["effective_from"] = "2026-01-01T00:00:00Z".into();
    let out = import(
        &env,
        &serde_json::json!({ "gemini-2.5-pro": gemini }).to_string(),
    );
    assert!(out.contains("1 version(s) added"), "{out}");

    // New calls are priced through the aliases and say by which entry.
    let fresh = [
        on(
            "anthropic",
            call(
                completed,
                "team-b",
                "claude-sonnet-4-5-20250929",
                day(7, 10),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
        ),
        on(
            "anthropic",
            call(
                completed,
                "team-b",
                "claude-sonnet-4-6-20990101",
                day(7, 10),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
        ),
        on(
            "vertex_ai",
            call(
                completed,
                "team-b",
                "claude-sonnet-4-5@20250929",
                day(7, 10),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
        ),
        on(
            "google",
            call(
                completed,
                "team-b",
                "gemini-2.5-flash-lite",
                day(7, 10),
                usage(1000, 0, 0, 100, 0),
                Outcome::Success,
            ),
        ),
        on(
            "google",
            call(
                completed,
                "team-b",
                "gemini-2.5-pro",
                day(7, 10),
                usage(200_001, 0, 0, 1000, 0),
                Outcome::Success,
            ),
        ),
    ];
    produce(&env.events_topic, &fresh).await;
    let ids = fresh
        .iter()
        .map(|e| format!("'{}'", e.event_id))
        .collect::<Vec<_>>()
        .join(",");
    env.wait_for_count(
        &format!("SELECT count() FROM {{db}}.calls WHERE event_id IN ({ids})"),
        5,
        crate::support::PATIENCE,
    )
    .await;
    let priced = env
        .ch(&format!(
            "SELECT model, priced, priced_as, toString(cost) FROM {{db}}.calls \
             WHERE event_id IN ({ids}) ORDER BY model FORMAT TSV"
        ))
        .await;
    assert_eq!(
        priced,
        "claude-sonnet-4-5-20250929\t1\tanthropic/claude-sonnet-4-5\t0.004500000000\n\
         claude-sonnet-4-5@20250929\t1\tvertex_ai-anthropic_models/claude-sonnet-4-5@20250929\t0.004500000000\n\
         claude-sonnet-4-6-20990101\t0\t\t0.000000000000\n\
         gemini-2.5-flash-lite\t1\tgemini/gemini-2.5-flash-lite\t0.000140000000\n\
         gemini-2.5-pro\t1\tgoogle/gemini-2.5-pro\t0.515002500000\n",
    );

    // ... and `tollgate reprice` brings the stored calls to it.
    let range = [
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-04-01T00:00:00Z",
    ];
    let reprice_gemini = [
        &[
            "reprice",
            "--provider",
            "google",
            "--model",
            "gemini-2.5-pro",
        ][..],
        &range[..],
    ]
    .concat();
    let reprice_claude = [
        &[
            "reprice",
            "--provider",
            "anthropic",
            "--model",
            "claude-sonnet-4-5-20250929",
        ][..],
        &range[..],
    ]
    .concat();
    let out = run_ok(&env, &reprice_gemini);
    // The call at the threshold keeps its cost but moves to the corrected
    // version; the new call was priced right.
    assert!(out.contains("2 call(s) changed"), "{out}");
    let out = run_ok(&env, &reprice_claude);
    assert!(out.contains("1 call(s) changed"), "{out}");
    let after = effective_costs(&env).await;
    // 200001 * 0.0000025 + 1000 * 0.000015
    assert_eq!(after[&long.event_id.to_string()], d("0.5150025"));
    assert_eq!(after[&at_threshold.event_id.to_string()], d("0.26"));
    // 1000 * 0.000003 + 100 * 0.000015 at claude-sonnet-4-5's price.
    assert_eq!(after[&dated_id], d("0.0045"));

    // The statement shows the repaired lines: the dated id priced by the
    // family's version, gemini at the corrected version with its tier.
    let (statement, lines) = statement_lines(&env).await;
    let dated = &lines["anthropic/claude-sonnet-4-5-20250929"];
    assert_eq!(d(dated["cost"].as_str().unwrap()), d("0.0045"), "{dated}");
    assert_eq!(dated["unpriced_calls"], 0, "{dated}");
    assert_eq!(dated["prices"]["model"], "claude-sonnet-4-5", "{dated}");
    let gemini = &lines["google/gemini-2.5-pro"];
    assert_eq!(
        d(gemini["cost"].as_str().unwrap()),
        d("0.7750025"),
        "{gemini}"
    );
    assert_eq!(
        gemini["prices"]["tiers"][0]["input_per_token"], "0.0000025",
        "{gemini}"
    );
    assert_eq!(lines.len(), 2, "{statement:#}");
    assert_eq!(
        d(statement["total"]["cost"].as_str().unwrap()),
        d("0.7795025")
    );

    // Running the repair again changes nothing.
    let adjustments = env.ch("SELECT count() FROM {db}.cost_adjustments").await;
    for args in [&reprice_gemini, &reprice_claude] {
        let out = run_ok(&env, args);
        assert!(out.contains("0 call(s) changed"), "{out}");
    }
    assert_eq!(
        env.ch("SELECT count() FROM {db}.cost_adjustments").await,
        adjustments
    );
    assert_eq!(effective_costs(&env).await, after);
}

/// Issue 9, item 6: importing the same LiteLLM file again adds nothing,
/// with `--effective-from` or without (before, every import without a date
/// added every version again); two entries for one version either resolve
/// the same way on every import (`provider/model` beats a bare key, the
/// loser named) or refuse the file, naming both (before, they were stored
/// as a version and its correction, flipping on every import).
#[tokio::test]
async fn reimporting_a_litellm_file_adds_nothing_and_duplicate_entries_never_flip() {
    let env = TestEnv::new("cost_reimport").await;
    let first = import_with(
        &env,
        LITELLM_SUBSET,
        &["--effective-from", "2026-01-01T00:00:00Z"],
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for extra in [
        &["--effective-from", "2026-01-01T00:00:00Z"][..],
        &[][..],
        &[][..],
    ] {
        let again = import_with(&env, LITELLM_SUBSET, extra);
        let out = String::from_utf8_lossy(&again.stdout);
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert!(
            out.contains("prices: 0 version(s) added"),
            "{extra:?}: {out}"
        );
    }
    let listed = versions(&env);
    // Two equally specific prices for one version in one file: refused,
    // naming both entries, nothing stored (they would flip on every import).
    let count = listed.len();
    let twice = import_with(
        &env,
        r#"{"a": {"litellm_provider": "p", "tollgate_model": "m", "input_cost_per_token": 1e-06},
            "b": {"litellm_provider": "p", "tollgate_model": "m", "input_cost_per_token": 2e-06}}"#,
        &["--effective-from", "2026-01-01T00:00:00Z"],
    );
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(!twice.status.success());
    assert!(err.contains("entries `a` and `b`"), "{err}");
    assert_eq!(versions(&env).len(), count);

    // `gemini-x` and `gemini/gemini-x` price the same version differently:
    // the `provider/model` entry wins on every import, the other is named.
    let pair = r#"{"gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 1e-06},
        "gemini/gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 2e-06}}"#;
    for added in ["1 version(s) added", "0 version(s) added"] {
        let out = import_with(&env, pair, &["--effective-from", "2026-01-01T00:00:00Z"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(added), "{stdout}");
        assert!(
            stdout.contains("entry `gemini-x` not imported: `gemini/gemini-x`"),
            "{stdout}"
        );
    }
    let gemini_x: Vec<_> = versions(&env)
        .into_iter()
        .filter(|v| v["model"] == "gemini-x")
        .collect();
    assert_eq!(gemini_x.len(), 1, "{gemini_x:?}");
    assert_eq!(gemini_x[0]["input_per_token"], "0.000002");
}

/// A cost rollup left short of the facts (as by a server killed between the
/// part of `calls` and its views' parts) and one left long: `tollgate
/// rollups check` says which, by how many calls and how much money, and
/// exits 1; `--repair` is refused while a processor runs, then inserts
/// exactly the difference: both rollups equal the calls and adjustments
/// again, cell by cell, and a second repair finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_check_finds_what_a_rollup_lacks_and_repair_restores_the_facts() {
    let env = TestEnv::new("cost_rollup_check").await;
    env.ch(
        "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, user_id, api_key_id, provider, model, \
         input_tokens, output_tokens, cost, priced, price_version) VALUES \
         ('r1', 'ai.call.completed', '2026-03-10 10:00:00', 'o', 't', 'u1', 'k1', 'p', 'm', 100, 10, toDecimal128('0.5', 12), 1, 1), \
         ('r2', 'ai.call.completed', '2026-03-10 11:00:00', 'o', 't', 'u2', 'k2', 'p', 'm', 200, 20, toDecimal128('0.25', 12), 1, 1), \
         ('r3', 'ai.call.failed', '2026-03-11 12:00:00', 'o', 't2', 'u1', 'k2', 'p', 'm', 300, 0, toDecimal128('0.125', 12), 1, 1), \
         ('r4', 'ai.call.completed', '2026-04-02 09:00:00', 'o', 't', 'u3', 'k3', 'p', 'm', 7, 1, toDecimal128('0.001', 12), 1, 1)",
    )
    .await;
    env.ch(
        "INSERT INTO {db}.cost_adjustments (event_id, occurred_at, org_id, team_id, user_id, api_key_id, provider, model, \
         price_version, sign, input_tokens, output_tokens, cost) VALUES \
         ('r1', '2026-03-10 10:00:00', 'o', 't', 'u1', 'k1', 'p', 'm', 1, -1, -100, -10, toDecimal128('-0.5', 12)), \
         ('r1', '2026-03-10 10:00:00', 'o', 't', 'u1', 'k1', 'p', 'm', 2, 1, 100, 10, toDecimal128('0.75', 12))",
    )
    .await;
    let facts_by_team = by_team_cells(&env, "cost_daily").await;
    let facts_by_key = cells_at(&env, "cost_daily", BY_KEY).await;
    let out = rollups_check_march(&env, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in [
        "cost_daily",
        "cost_daily_by_team",
        "cost_daily_by_user",
        "cost_daily_by_key",
    ] {
        assert!(
            stdout.contains(&format!("{table} agrees with the facts")),
            "{stdout}"
        );
    }

    // cost_daily loses r2's cell (the views' part of an insert that never
    // landed); cost_daily_by_team counts r3 twice; April is outside the
    // checked days and is spoiled too, to be left alone.
    env.ch(
        "INSERT INTO {db}.cost_daily (day, org_id, team_id, user_id, api_key_id, provider, model, price_version, \
         calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
         images, audio_ms, cost) VALUES \
         ('2026-03-10', 'o', 't', 'u2', 'k2', 'p', 'm', 1, -1, 0, -200, -20, 0, 0, 0, 0, 0, toDecimal128('-0.25', 12)), \
         ('2026-04-02', 'o', 't', 'u3', 'k3', 'p', 'm', 1, -1, 0, -7, -1, 0, 0, 0, 0, 0, toDecimal128('-0.001', 12))",
    )
    .await;
    env.ch(
        "INSERT INTO {db}.cost_daily_by_team (day, org_id, team_id, provider, model, price_version, \
         calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
         images, audio_ms, cost) VALUES \
         ('2026-03-11', 'o', 't2', 'p', 'm', 1, 1, 0, 300, 0, 0, 0, 0, 0, 0, toDecimal128('0.125', 12))",
    )
    .await;
    // cost_daily_by_key (0039) counts r3 twice too; cost_daily_by_user is
    // left whole.
    env.ch(
        "INSERT INTO {db}.cost_daily_by_key (day, org_id, team_id, api_key_id, \
         calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
         images, audio_ms, cost) VALUES \
         ('2026-03-11', 'o', 't2', 'k2', 1, 0, 300, 0, 0, 0, 0, 0, 0, toDecimal128('0.125', 12))",
    )
    .await;
    let out = rollups_check_march(&env, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "cost_daily disagrees in 1 cell(s): the facts have 1 call(s) and 0.250000000000 USD more than it"
        ) && stdout.contains(
            "cost_daily_by_team disagrees in 1 cell(s): the facts have -1 call(s) and -0.125000000000 USD more than it"
        ) && stdout.contains(
            "cost_daily_by_key disagrees in 1 cell(s): the facts have -1 call(s) and -0.125000000000 USD more than it"
        ) && stdout.contains("cost_daily_by_user agrees with the facts"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "cost_daily_by_team, cost_daily_by_key, cost_daily disagree(s) with the facts"
        ),
        "{stderr}"
    );

    // Not while a processor runs.
    let mut processor = env.spawn_child("process", &["process", "--folds", "calls"]);
    let start = std::time::Instant::now();
    while !crate::processor::log_of(&env, "process").contains("partitions assigned") {
        assert!(
            start.elapsed() < support::PATIENCE,
            "the processor joined no group; log:\n{}",
            crate::processor::log_of(&env, "process")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = rollups_check_march(&env, &["--repair"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not repairing while processors run") && stderr.contains("1 member(s)"),
        "{stderr}"
    );
    support::signal(processor.id(), "TERM");
    let status = crate::processor::wait_exit(&mut processor, Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");

    let out = rollups_check_march(&env, &["--repair"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cost_daily repaired: 1 cell(s) corrected")
            && stdout.contains("cost_daily_by_team repaired: 1 cell(s) corrected")
            && stdout.contains("cost_daily_by_key repaired: 1 cell(s) corrected")
            && !stdout.contains("cost_daily_by_user repaired"),
        "{stdout}"
    );
    assert_eq!(
        cells_at(&env, "cost_daily_by_key", BY_KEY).await,
        facts_by_key,
        "the rollup per key as the facts say"
    );
    // Cell by cell the facts again (the full rollup summed over user and
    // key as before the damage, and the narrow one likewise), except April.
    assert_eq!(
        by_team_cells(&env, "cost_daily").await,
        facts_by_team
            .iter()
            .filter(|c| !c.starts_with("2026-04-02"))
            .cloned()
            .collect::<Vec<_>>(),
        "March as the facts say; April's cell, all sums 0 after the damage, is left as it was"
    );
    assert_eq!(
        by_team_cells(&env, "cost_daily_by_team").await,
        facts_by_team,
        "the narrow rollup was not damaged in April"
    );
    assert_eq!(
        env.ch("SELECT toString(sum(cost)) FROM {db}.cost_daily WHERE user_id = 'u2'")
            .await
            .trim(),
        "0.250000000000"
    );
    let out = rollups_check_march(&env, &["--repair"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("cost_daily agrees with the facts")
            && stdout.contains("cost_daily_by_team agrees with the facts")
            && stdout.contains("cost_daily_by_user agrees with the facts")
            && stdout.contains("cost_daily_by_key agrees with the facts")
            && !stdout.contains("repaired"),
        "{stdout}"
    );
}

/// An insert whose `calls` part landed and whose views did not (here a
/// view that throws for one team's rows; in the wild a replica restarting
/// under the processor, `cluster::clickhouse`), found stored when the
/// processor retried it: the processor checks the cost rollups of the
/// batch's teams and days against `calls` and inserts what they lack, so
/// every rollup holds each team's calls and cost to the last decimal. A
/// team outside the batch is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_stored_without_its_views_leaves_no_rollup_short() {
    let env = TestEnv::new("cost_partial_insert").await;
    import(&env, PRICES_V1);
    crate::processor::break_views_for_team(&env, "team-boom").await;
    // Per call on tg-test before 12:00: 1000 input tokens at 0.000002,
    // 100 output at 0.000008 and 0.001 per request = 0.0038.
    let one = |team: &str, minute: u32| {
        call(
            "ai.call.completed",
            team,
            "tg-test",
            at(10, minute),
            usage(1000, 0, 0, 100, 0),
            Outcome::Success,
        )
    };
    // Another team the same day, stored before, in no failed batch.
    let mut earlier = one("team-early", 0);
    earlier.occurred_at = at(9, 0);
    produce(&env.events_topic, &[earlier]).await;
    let mut processor = env.spawn_child("process", &["process", "--folds", "calls"]);
    let calls = "SELECT count() FROM {db}.calls";
    assert_eq!(env.wait_for_count(calls, 1, support::PATIENCE).await, 1);

    // Tags: the tag rollup is leveled too, a call with two tags in both
    // cells. team-boom: 3 calls feature=chat (one of them also env=prod),
    // one untagged; team-ok: feature=search.
    let tag = |mut e: Event, tags: &[(&str, &str)]| {
        e.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        e
    };
    let batch: Vec<Event> = (0..4)
        .map(|m| match m {
            0 => tag(one("team-boom", m), &[("feature", "chat"), ("env", "prod")]),
            1 | 2 => tag(one("team-boom", m), &[("feature", "chat")]),
            _ => one("team-boom", m),
        })
        .chain((0..3).map(|m| tag(one("team-ok", 10 + m), &[("feature", "search")])))
        .collect();
    produce(&env.events_topic, &batch).await;
    assert_eq!(
        env.wait_for_count(calls, 8, support::PATIENCE).await,
        8,
        "log:\n{}",
        crate::processor::log_of(&env, "process")
    );
    let log = crate::processor::wait_for_log(&env, "process", "repaired it").await;
    assert!(
        log.contains("failed insert was stored after all"),
        "log:\n{log}"
    );
    for table in [
        "cost_daily",
        "cost_daily_by_team",
        "cost_daily_by_user",
        "cost_daily_by_key",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("repaired it") && l.contains(&format!("table=\"{table}\"")))
            .or_else(|| {
                log.lines()
                    .find(|l| l.contains("repaired it") && l.contains(&format!("table={table} ")))
            })
            .unwrap_or_else(|| panic!("{table} not repaired; log:\n{log}"));
        assert!(line.contains("calls=7"), "{line}");
        assert!(line.contains("0.026600000000"), "{line}");
        let per_team = env
            .ch(&format!(
                "SELECT team_id, sum(calls), toString(sum(cost)) FROM {{db}}.{table} \
                 GROUP BY team_id ORDER BY team_id FORMAT CSV"
            ))
            .await;
        assert_eq!(
            per_team,
            "\"team-boom\",4,\"0.015200000000\"\n\
             \"team-early\",1,\"0.003800000000\"\n\
             \"team-ok\",3,\"0.011400000000\"\n",
            "{table}"
        );
    }
    let tags_line = log
        .lines()
        .find(|l| l.contains("repaired it") && l.contains("cost_daily_tags"))
        .unwrap_or_else(|| panic!("cost_daily_tags not repaired; log:\n{log}"));
    // A row per tag of a call: team-boom's 3 + 1, team-ok's 3.
    assert!(tags_line.contains("calls=7"), "{tags_line}");
    assert_eq!(
        env.ch(
            "SELECT team_id, tag_key, tag_value, sum(calls), toString(sum(cost)) \
             FROM {db}.cost_daily_tags GROUP BY team_id, tag_key, tag_value \
             ORDER BY team_id, tag_key, tag_value FORMAT CSV"
        )
        .await,
        "\"team-boom\",\"env\",\"prod\",1,\"0.003800000000\"\n\
         \"team-boom\",\"feature\",\"chat\",3,\"0.011400000000\"\n\
         \"team-ok\",\"feature\",\"search\",3,\"0.011400000000\"\n"
    );
    assert_rollups_equal_cost_daily(&env).await;
    support::signal(processor.id(), "TERM");
    let status = crate::processor::wait_exit(&mut processor, Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    // The offline check agrees, over every day.
    let out = rollups_check_march(&env, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.matches("agrees with the facts").count(),
        5,
        "{stdout}"
    );
}
