//! End to end: known events through the ingest API, Kafka, the processor and
//! ClickHouse, read back from the latency report API. Counts must be exact and
//! percentiles must be numpy's (type 7) for these groups of 1000 calls, and
//! say so (`"method": "exact"`).

use crate::latency_fixture;
use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use latency_fixture::assert_percentiles;
use serde_json::Value;
use support::{wait_http, TestEnv};
use tollgate_contract::{Event, KIND_CALL_COMPLETED, KIND_CALL_FAILED, SCHEMA_VERSION};

const N: usize = 3_000;

fn generate() -> Vec<Event> {
    // The test states its own data (seeded, three models with different
    // medians, half streamed, one in 17 failed) rather than reusing the
    // simulator, so a bug in the simulator cannot hide a bug in the report.
    // One in 23 of the others was cancelled by its client: a failed call
    // that is no error.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let models = [
        ("openai", "gpt-4o", 1500.0),
        ("openai", "gpt-4o-mini", 700.0),
        ("anthropic", "claude-haiku-4-5", 1000.0),
    ];
    let now = chrono::Utc::now();
    (0..N)
        .map(|i| {
            let (provider, model, median) = models[i % models.len()];
            let factor: f64 = (rng.random::<f64>() * 2.0 - 1.0).exp();
            let duration_ms = (median * factor) as u32 + rng.random_range(0..50);
            let stream = i % 2 == 0;
            let failed = i % 17 == 0;
            let cancelled = !failed && i % 23 == 0;
            let ttft = stream.then(|| (duration_ms / 4).max(1));
            let occurred_at = now - chrono::Duration::milliseconds(((N - i) * 500) as i64);
            let value = serde_json::json!({
                "schema_version": SCHEMA_VERSION,
                "event_id": uuid::Uuid::now_v7(),
                "kind": if failed || cancelled { KIND_CALL_FAILED } else { KIND_CALL_COMPLETED },
                "occurred_at": occurred_at,
                "org_id": "acme",
                "team_id": format!("team-{}", i % 4),
                "user_id": format!("user-{}", i % 9),
                "api_key_id": "key-1",
                "call": {
                    "call_id": format!("call-{i}"),
                    "provider": provider,
                    "model": model,
                    "operation": "chat",
                    "stream": stream,
                    "duration_ms": duration_ms,
                    "ttft_ms": ttft,
                    "usage": {"input_tokens": 100 + i as u64, "output_tokens": 20},
                    "outcome": if failed { "error" } else if cancelled { "cancelled" } else { "success" },
                    "http_status": if failed { 500 } else { 200 },
                    "error": if failed { serde_json::json!({"type": "server_error", "message": "boom"}) } else { Value::Null },
                }
            });
            let mut value = value;
            if !failed {
                value["call"].as_object_mut().unwrap().remove("error");
            }
            if !stream {
                value["call"].as_object_mut().unwrap().remove("ttft_ms");
            }
            serde_json::from_value(value).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_report_matches_exact_statistics() {
    let mut env = TestEnv::new("e2e").await;
    let key = env.create_key("acme");
    env.spawn("ingest", &["ingest"]);
    env.spawn("process", &["process"]);
    env.spawn("api", &["api"]);
    wait_http(
        &format!("{}/healthz", env.ingest_url()),
        crate::support::PATIENCE,
        &env.log_path("ingest"),
    )
    .await;
    wait_http(
        &format!("{}/healthz", env.api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;

    let events = generate();
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for chunk in events.chunks(500) {
        // One malformed item per request: it is rejected, the rest accepted.
        let mut items: Vec<Value> = chunk
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        let mut bad = items[0].clone();
        bad["call"]["usage"]["input_tokens"] = serde_json::json!(-5);
        items.push(bad);
        let response = client
            .post(format!("{}/v1/events", env.ingest_url()))
            .bearer_auth(&key)
            .json(&items)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "ingest answered {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["rejected"], 1, "{body}");
        accepted += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, N as u64);

    let stored = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            N as u64,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        stored,
        N as u64,
        "processor log:\n{}",
        std::fs::read_to_string(env.log_path("process")).unwrap_or_default()
    );

    let from = (chrono::Utc::now() - chrono::Duration::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // The views write a moment after the `calls` part of the same insert is
    // visible: read the report until it holds every terminal call.
    let terminal = events
        .iter()
        .filter(|e| e.kind == KIND_CALL_COMPLETED || e.kind == KIND_CALL_FAILED)
        .count() as u64;
    let report = env
        .latency_report_counting(
            &[
                ("from", from.as_str()),
                ("to", to.as_str()),
                ("group_by", "provider,model"),
                ("bucket", "1h"),
            ],
            terminal,
        )
        .await;

    // Exact statistics per provider/model, computed here from what was sent.
    let mut durations: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut ttfts: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in &events {
        let call = e.call.as_ref().unwrap();
        let key = (call.provider.clone(), call.model.clone());
        durations
            .entry(key.clone())
            .or_default()
            .push(f64::from(call.duration_ms));
        if let Some(t) = call.ttft_ms {
            ttfts.entry(key.clone()).or_default().push(f64::from(t));
        }
        // Only the `error` calls: the cancelled ones are not errors.
        *errors.entry(key).or_default() +=
            u64::from(call.outcome == tollgate_contract::Outcome::Error);
    }
    let groups = report["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups in {report}"));
    assert_eq!(groups.len(), durations.len(), "{report}");
    for group in groups {
        let key = (
            group["key"]["provider"].as_str().unwrap().to_string(),
            group["key"]["model"].as_str().unwrap().to_string(),
        );
        let total = &group["total"];
        let sorted = {
            let mut v = durations[&key].clone();
            v.sort_by(f64::total_cmp);
            v
        };
        assert_eq!(
            total["count"].as_u64().unwrap(),
            sorted.len() as u64,
            "count for {key:?}"
        );
        assert_eq!(
            total["errors"].as_u64().unwrap(),
            errors[&key],
            "errors for {key:?}"
        );
        let rate = errors[&key] as f64 / sorted.len() as f64;
        assert!(
            (total["error_rate"].as_f64().unwrap() - rate).abs() < 1e-9,
            "error rate for {key:?}"
        );
        assert_eq!(total["duration_ms"]["method"], "exact", "{key:?}: {total}");
        assert_percentiles(&format!("{key:?} duration"), &total["duration_ms"], &sorted);
        assert_percentiles(&format!("{key:?} ttft"), &total["ttft_ms"], &ttfts[&key]);
        let series_count: u64 = group["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["stats"]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            series_count,
            sorted.len() as u64,
            "series counts add up to the total for {key:?}"
        );
    }
}
