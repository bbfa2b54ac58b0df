//! The cost fold end to end against real Kafka, ClickHouse and PostgreSQL:
//! prices imported with `tollgate prices import`, calls produced to the
//! events topic, `tollgate process` pricing them, the `cost_daily` rollup,
//! and the cost report (JSON, CSV and page) agreeing with the facts to the
//! last of 12 decimal places.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rust_decimal::Decimal;
use support::{kafka_brokers, TestEnv};
use tollgate_ingest::contract::{Call, Event, Operation, Outcome, Usage, SCHEMA_VERSION};
use uuid::Uuid;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

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

#[allow(clippy::too_many_arguments)]
fn call(
    kind: &str,
    team: &str,
    model: &str,
    occurred_at: DateTime<Utc>,
    usage: Usage,
    outcome: Outcome,
) -> Event {
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::now_v7(),
        kind: kind.into(),
        occurred_at,
        org_id: "org-1".into(),
        team_id: team.into(),
        user_id: format!("{team}-user"),
        api_key_id: format!("{team}-key"),
        call: Some(Call {
            call_id: Uuid::now_v7().to_string(),
            trace_id: String::new(),
            provider: "testprov".into(),
            model: model.into(),
            requested_model: model.into(),
            attempt: 1,
            fallback_of: String::new(),
            operation: Operation::Chat,
            stream: false,
            duration_ms: 100,
            ttft_ms: None,
            usage,
            outcome,
            http_status: if outcome == Outcome::Success {
                200
            } else {
                500
            },
            error: None,
            cache_hit: false,
            prompt_sha256: None,
            response_sha256: None,
        }),
        admin: None,
        tags: BTreeMap::new(),
        reported_cost: None,
    }
}

fn usage(input: u64, cached: u64, cache_write: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cache_write_tokens: cache_write,
        reasoning_tokens: reasoning,
        images: 0,
        audio_seconds: 0.0,
    }
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
              "output_cost_per_reasoning_token": 1e-05, "input_cost_per_image": 0.01,
              "input_cost_per_audio_per_second": 0.0006}
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
            // 600*0.000002 + 400*0.0000005 + 200*0.0000025 + 300*0.000008 + 0.001
            event: call(
                completed,
                "team-a",
                "tg-test",
                at(6, 0),
                usage(1000, 400, 200, 300, 0),
                Outcome::Success,
            ),
            cost: Some("0.0053"),
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
                Duration::from_secs(30),
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
    assert!(again.contains("0 version(s) added, 2 unchanged"), "{again}");
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
        Duration::from_secs(30),
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
        d("0.0053") + d("0.0048") + d("0.00103") + d("0.003")
    );
    assert_eq!(d(cost_of("tg-reason").as_str().unwrap()), d("0.0296"));
    assert!(cost_of("tg-unknown").is_null(), "unpriced, not 0: {report}");
    assert_eq!(d(report["total"]["cost"].as_str().unwrap()), want_total);
    assert_eq!(report["total"]["unpriced_calls"], 2);

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
        assert!(page.contains(&format!(">{cost}</td>")), "page lacks {cost}");
    }
}
