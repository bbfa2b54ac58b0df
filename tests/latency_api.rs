//! `GET /api/v1/reports/latency` against real ClickHouse: known calls are
//! written into `calls`, the materialized view folds them into
//! `latency_minute`, and the report must give exact counts and error rates,
//! percentiles within the t-digest's error, working grouping and filters,
//! and a 400 that names the parameter for every bad request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod latency_fixture;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use latency_fixture::{assert_stats, dataset, noise, Call, ReportEnv};
use serde_json::{json, Value};

/// 2026-01-15T10:00:00Z; the data covers [BASE, BASE + 1 h).
const BASE: i64 = 1_768_471_200;
const FROM: &str = "2026-01-15T10:00:00Z";
const TO: &str = "2026-01-15T11:00:00Z";

async fn env_with_data(label: &str) -> (ReportEnv, Vec<Call>) {
    let mut env = ReportEnv::new(label).await;
    let calls = dataset(BASE);
    env.insert(&calls).await;
    env.insert(&noise(BASE)).await;
    env.start_api().await;
    (env, calls)
}

async fn fetch_report(env: &ReportEnv, query: &str) -> Value {
    let (status, body) = env
        .get_json(&format!(
            "/api/v1/reports/latency?from={FROM}&to={TO}&{query}"
        ))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn groups_of(report: &Value) -> &Vec<Value> {
    report["groups"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_matches_exact_statistics_per_group_and_bucket() {
    let (env, calls) = env_with_data("latency_api").await;
    let report = fetch_report(&env, "group_by=provider,model&bucket=5m").await;

    assert_eq!(report["from"], FROM);
    assert_eq!(report["to"], TO);
    assert_eq!(report["bucket_secs"], 300);
    assert_eq!(report["group_by"], json!(["provider", "model"]));

    let mut expected: BTreeMap<(&str, &str), Vec<&Call>> = BTreeMap::new();
    for call in &calls {
        expected
            .entry((call.provider, call.model))
            .or_default()
            .push(call);
    }
    let groups = groups_of(&report);
    let keys: Vec<Value> = groups.iter().map(|g| g["key"].clone()).collect();
    let want: Vec<Value> = expected
        .keys()
        .map(|(provider, model)| json!({"provider": provider, "model": model}))
        .collect();
    assert_eq!(
        keys, want,
        "groups are the provider/model pairs, in key order"
    );

    for group in groups {
        let key = (
            group["key"]["provider"].as_str().unwrap(),
            group["key"]["model"].as_str().unwrap(),
        );
        let group_calls = &expected[&key];
        assert_stats(&format!("{key:?} total"), &group["total"], group_calls);

        // Series: every bucket with calls, in order, each exact.
        let mut by_bucket: BTreeMap<i64, Vec<&Call>> = BTreeMap::new();
        for call in group_calls {
            by_bucket
                .entry(call.at - call.at % 300)
                .or_default()
                .push(call);
        }
        let series = group["series"].as_array().unwrap();
        let starts: Vec<String> = series
            .iter()
            .map(|p| p["bucket_start"].as_str().unwrap().to_string())
            .collect();
        let want_starts: Vec<String> = by_bucket
            .keys()
            .map(|t| {
                chrono::DateTime::from_timestamp(*t, 0)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .collect();
        assert_eq!(starts, want_starts, "{key:?} bucket starts");
        for (point, (start, bucket_calls)) in series.iter().zip(&by_bucket) {
            assert_stats(
                &format!("{key:?} bucket {start}"),
                &point["stats"],
                bucket_calls,
            );
        }
    }

    // Mistral never streams: no TTFT at all.
    let mistral = groups
        .iter()
        .find(|g| g["key"]["provider"] == "mistral")
        .unwrap();
    assert!(mistral["total"]["ttft_ms"].is_null());
    assert_eq!(mistral["total"]["ttft_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_and_filters() {
    let (env, calls) = env_with_data("latency_groups").await;
    let count = |pred: &dyn Fn(&Call) -> bool| calls.iter().filter(|c| pred(c)).count() as u64;

    // By team: keys carry only the team.
    let report = fetch_report(&env, "group_by=team&bucket=1h").await;
    let groups = groups_of(&report);
    assert_eq!(groups.len(), 3);
    for group in groups {
        let team = group["key"]["team"].as_str().unwrap();
        assert_eq!(
            group["key"].as_object().unwrap().len(),
            1,
            "{}",
            group["key"]
        );
        let team_calls: Vec<&Call> = calls.iter().filter(|c| c.team == team).collect();
        assert_stats(team, &group["total"], &team_calls);
        // One 1 h bucket: the series point equals the total.
        let series = group["series"].as_array().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0]["bucket_start"], FROM);
        assert_eq!(series[0]["stats"]["count"], group["total"]["count"]);
    }

    // By org then team.
    let report = fetch_report(&env, "group_by=org,team").await;
    let keys: Vec<Value> = groups_of(&report)
        .iter()
        .map(|g| g["key"].clone())
        .collect();
    assert_eq!(
        keys,
        vec![
            json!({"org": "org-1", "team": "team-a"}),
            json!({"org": "org-1", "team": "team-b"}),
            json!({"org": "org-2", "team": "team-c"}),
        ]
    );

    // Provider filter.
    let report = fetch_report(&env, "group_by=provider&provider=openai").await;
    let groups = groups_of(&report);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["key"], json!({"provider": "openai"}));
    let openai: Vec<&Call> = calls.iter().filter(|c| c.provider == "openai").collect();
    assert_stats("openai", &groups[0]["total"], &openai);

    // Model and team filters together.
    let report = fetch_report(&env, "group_by=model&model=gpt-4o&team=team-b").await;
    let subset: Vec<&Call> = calls
        .iter()
        .filter(|c| c.model == "gpt-4o" && c.team == "team-b")
        .collect();
    assert_eq!(groups_of(&report).len(), 1);
    assert_stats("gpt-4o/team-b", &groups_of(&report)[0]["total"], &subset);

    // Org filter with default grouping (provider, model).
    let report = fetch_report(&env, "org=org-2").await;
    let total: u64 = groups_of(&report)
        .iter()
        .map(|g| g["total"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, count(&|c| c.org == "org-2"));
    assert_eq!(groups_of(&report).len(), 4);

    // No grouping: one group of everything, empty key.
    let report = fetch_report(&env, "group_by=").await;
    let groups = groups_of(&report);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["key"], json!({}));
    let all: Vec<&Call> = calls.iter().collect();
    assert_stats("all", &groups[0]["total"], &all);

    // A filter that matches nothing: no groups, not an error.
    let report = fetch_report(&env, "provider=nobody").await;
    assert_eq!(report["groups"], json!([]));

    // Defaults: the last hour (no data there), 1-minute buckets.
    let (status, report) = env.get_json("/api/v1/reports/latency").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["bucket_secs"], 60);
    let from = chrono::DateTime::parse_from_rfc3339(report["from"].as_str().unwrap()).unwrap();
    let to = chrono::DateTime::parse_from_rfc3339(report["to"].as_str().unwrap()).unwrap();
    assert!(
        (to - from).num_seconds() == 3_600 || (to - from).num_seconds() == 3_660,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_parameter_is_a_400_naming_it() {
    let mut env = ReportEnv::new("latency_bad").await;
    env.start_api().await;
    let cases = [
        ("from=yesterday", "from", "RFC 3339"),
        ("to=2026-01-15T25:00:00Z", "to", "RFC 3339"),
        (
            "from=2026-01-15T11:00:00Z&to=2026-01-15T10:00:00Z",
            "from",
            "earlier than",
        ),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-15T10:00:00Z",
            "from",
            "at most 31 days",
        ),
        (
            "group_by=provider,region",
            "group_by",
            "unknown dimension `region`",
        ),
        ("group_by=model,model", "group_by", "twice"),
        ("bucket=fast", "bucket", "not a duration"),
        ("bucket=30s", "bucket", "whole number of minutes"),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-15T00:00:00Z&bucket=1m",
            "bucket",
            "at most 1440",
        ),
        ("groupby=model", "groupby", "unknown parameter"),
        ("model=a&model=b", "model", "more than once"),
    ];
    for (query, parameter, reason) in cases {
        let (status, body) = env
            .get_json(&format!("/api/v1/reports/latency?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(reason), "{query}: {error}");
        assert!(
            error.contains(parameter),
            "{query}: the message names the parameter: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_to_start_with_clear_errors() {
    // Nothing listens on this port.
    let port = support::free_port();
    let env = ReportEnv::with_clickhouse(&format!("http://127.0.0.1:{port}"), "tollgate".into());
    let out = run_with_timeout(env.tollgate(&["api"]), Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("[clickhouse] url"), "{stderr}");

    // Reachable, but the database was never migrated.
    let env = ReportEnv::with_database(support::unique("never_migrated"));
    let out = run_with_timeout(env.tollgate(&["api"]), Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not migrated"), "{stderr}");
    assert!(stderr.contains("tollgate migrate"), "{stderr}");
}

fn run_with_timeout(mut command: std::process::Command, timeout: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("tollgate api kept running although it cannot work");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}
