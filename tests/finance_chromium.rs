//! The finance pages in a real browser: calls priced by `tollgate process`,
//! `tollgate api` serving `/finance/cost` and `/finance/statement`, Debian's
//! headless Chromium running the page script and Chart.js. Checks that the
//! cost chart plotted a bar per priced group, that every cost in the table
//! is the CSV's string for that row, and that unpriced calls read
//! "unpriced". Saves screenshots under `tests/artifacts/`.
//!
//! Chromium comes from `TOLLGATE_TEST_CHROMIUM`, else `/usr/bin/chromium`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use support::chromium::run_chromium;
use support::{kafka_brokers, TestEnv};
use tollgate_ingest::contract::{Call, Event, Operation, Outcome, Usage, SCHEMA_VERSION};
use uuid::Uuid;

fn event(team: &str, model: &str, input: u64, output: u64) -> Event {
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::now_v7(),
        kind: "ai.call.completed".into(),
        occurred_at: Utc::now(),
        org_id: "org-1".into(),
        team_id: team.into(),
        user_id: format!("{team}-user"),
        api_key_id: format!("{team}-key"),
        call: Some(Call {
            call_id: Uuid::now_v7().to_string(),
            trace_id: String::new(),
            provider: if model.starts_with("claude") {
                "anthropic"
            } else {
                "openai"
            }
            .into(),
            model: model.into(),
            requested_model: model.into(),
            attempt: 1,
            fallback_of: String::new(),
            operation: Operation::Chat,
            stream: false,
            duration_ms: 100,
            ttft_ms: None,
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: input / 4,
                ..Usage::default()
            },
            outcome: Outcome::Success,
            http_status: 200,
            error: None,
            cache_hit: false,
            prompt_sha256: None,
            response_sha256: None,
        }),
        admin: None,
        tags: Default::default(),
        reported_cost: None,
    }
}

async fn dom_of(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_string();
    let path = profile.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || run_chromium(&url, &path, &["--dump-dom"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn screenshot(url: &str, name: &str) {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(name);
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_string();
    let path = profile.path().to_path_buf();
    let arg = format!("--screenshot={}", shot.display());
    let out = tokio::task::spawn_blocking(move || {
        run_chromium(&url, &path, &[&arg, "--window-size=1400,900"])
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_pages_in_chromium_match_the_csv() {
    let mut env = TestEnv::new("finance_page").await;
    // Default catalog (seeded by migrate) prices gpt-4o and claude-haiku-4-5;
    // `unknown-model` has no price.
    let events = vec![
        event("team-a", "gpt-4o", 12_000, 800),
        event("team-a", "claude-haiku-4-5", 3_000, 300),
        event("team-b", "gpt-4o", 1_000, 100),
        event("team-b", "unknown-model", 1_000, 100),
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    for e in &events {
        let payload = serde_json::to_vec(e).unwrap();
        producer
            .send(
                FutureRecord::to(&env.events_topic)
                    .key(&e.team_id)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    env.spawn("process", &["process"]);
    assert_eq!(
        env.wait_for_count("SELECT count() FROM {db}.calls", 4, Duration::from_secs(60))
            .await,
        4
    );
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.api_url()),
        Duration::from_secs(30),
        &env.log_path("api"),
    )
    .await;

    let query = "group_by=model";
    let csv = reqwest::get(format!("{}/finance/cost.csv?{query}", env.api_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let url = format!("{}/finance/cost?{query}", env.api_url());
    let dom = dom_of(&url).await;
    // The chart drew one bar per priced model.
    let tag = &dom[dom.find("<canvas id=\"cost-chart\"").expect("cost chart")..];
    let tag = &tag[..tag.find('>').unwrap()];
    assert!(tag.contains("data-points=\"2\""), "{tag}");
    // Every CSV row's cost is in the table, unpriced shown as such.
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{csv}");
    for line in &lines {
        let cost = line.rsplit(',').next().unwrap();
        assert!(
            dom.contains(&format!(">{cost}</td>")),
            "page lacks {cost}; csv:\n{csv}"
        );
    }
    assert!(
        dom.contains("unpriced</td>"),
        "unknown-model shows as unpriced"
    );
    screenshot(&url, "finance_cost.png").await;

    let month = Utc::now().format("%Y-%m").to_string();
    let url = format!(
        "{}/finance/statement?team=team-a&month={month}",
        env.api_url()
    );
    let dom = dom_of(&url).await;
    let csv = reqwest::get(format!(
        "{}/finance/statement.csv?team=team-a&month={month}",
        env.api_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let total = csv
        .lines()
        .last()
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .to_string();
    assert!(
        dom.contains(&format!("id=\"statement-total\">{total}<")),
        "{dom}"
    );
    assert!(
        dom.contains("0.0000025"),
        "unit price of gpt-4o input on the statement"
    );
    assert!(
        dom.contains("statement-forecast"),
        "the running month has a forecast"
    );
    screenshot(&url, "finance_statement.png").await;
}
