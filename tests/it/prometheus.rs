//! The pipeline's own `/metrics` through a real Prometheus (Debian's,
//! started by `dev/stack up`, scraping every second; its URL in
//! `TOLLGATE_TEST_PROMETHEUS`): the test starts `tollgate ingest`,
//! `process`, `api` and `proxy` on ports chosen at run time, registers them
//! as file_sd targets (in the directory Prometheus's own configuration
//! names), sends each a known amount of traffic and asks Prometheus's HTTP
//! API: every role is up, each request counter rose by exactly what was
//! sent (refused ingest requests by their reason too), the lag of both
//! consumer folds (calls, audit) appeared for every partition of the
//! events topic while a backlog lasted and drained to 0, and every event
//! sent was inserted once. An event the processor cannot read is
//! dead-lettered, counted once, and the shipped rule `TollgateDeadLetters`
//! fires for that processor and reaches the stack's Alertmanager. The
//! shipped `deploy/prometheus/` configuration passes `promtool check
//! config`, `check rules` and the rules' own unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tollgate_contract::Outcome;

use crate::proxy::Proxy;
use crate::support::events::{call_event, usage};
use crate::support::kafka::produce_all;
use crate::support::{
    alertmanager_alerts, alertmanager_url, free_port, kafka_brokers, listening_port, unique,
    wait_http,
};

/// Events produced straight to Kafka while `tollgate process` holds each
/// batch for [`BATCH_WAIT_MS`]: the lag is above 0 for that long, whatever
/// the machine's speed, and then drains to 0.
const BACKLOG: usize = 200;
const BATCH_WAIT_MS: u64 = 4000;
const INGEST_REQUESTS: usize = 5;
/// The keys of `POST /v1/events` requests answered 401: none, and an
/// unknown one.
const UNAUTHENTICATED_KEYS: [Option<&str>; 2] = [None, Some("nonsense")];
/// `POST /v1/events` with a body that is not JSON: 400.
const MALFORMED_INGEST_REQUESTS: usize = 1;
const API_REQUESTS: usize = 3;
const PROXY_CALLS: usize = 4;

fn prometheus_url() -> String {
    std::env::var("TOLLGATE_TEST_PROMETHEUS").unwrap_or_else(|_| "http://127.0.0.1:9097".into())
}

fn repo() -> std::path::PathBuf {
    crate::support::repo_root()
}

/// One series of a query's answer: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

async fn query(prom: &str, expr: &str) -> Vec<Sample> {
    let body: Value = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap_or_else(|e| panic!("prometheus unreachable at {prom} ({e}); run dev/stack up"))
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            labels: serde_json::from_value(s["metric"].clone()).unwrap(),
            value: s["value"][1].as_str().unwrap().parse().unwrap(),
        })
        .collect()
}

/// One number (`sum(...) or vector(0)` style expressions).
async fn value(prom: &str, expr: &str) -> f64 {
    query(prom, expr).await.first().map_or(0.0, |s| s.value)
}

/// Poll `expr` until `done` accepts its answer, or panic after `timeout`
/// with the last answer and `context()`.
async fn wait_for(
    prom: &str,
    expr: &str,
    timeout: Duration,
    done: impl Fn(&[Sample]) -> bool,
    context: impl Fn() -> String,
) -> Vec<Sample> {
    let start = Instant::now();
    loop {
        let samples = query(prom, expr).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            start.elapsed() < timeout,
            "{expr} never got there within {timeout:?}: {samples:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Poll a one-number `expr` until it is exactly `want`.
async fn wait_for_value(
    prom: &str,
    expr: &str,
    want: f64,
    timeout: Duration,
    context: impl Fn() -> String,
) {
    wait_for(
        prom,
        expr,
        timeout,
        |s| s.first().map(|s| s.value) == Some(want),
        context,
    )
    .await;
}

/// The directory Prometheus reads file_sd targets from, as its running
/// configuration says (the first `files:` glob).
async fn targets_dir(prom: &str) -> PathBuf {
    let body: Value = reqwest::get(format!("{prom}/api/v1/status/config"))
        .await
        .unwrap_or_else(|e| panic!("prometheus unreachable at {prom} ({e}); run dev/stack up"))
        .json()
        .await
        .unwrap();
    let yaml = body["data"]["yaml"].as_str().unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "- files:");
    let glob = lines
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("- "))
        .unwrap_or_else(|| panic!("prometheus at {prom} has no file_sd_configs:\n{yaml}"));
    Path::new(glob.trim_matches('"'))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file_sd file of this test's targets; removed when dropped.
struct Targets(PathBuf);

impl Targets {
    fn write(dir: &Path, test: &str, roles: &[(&str, String)]) -> Self {
        let groups: Vec<Value> = roles
            .iter()
            .map(|(role, address)| {
                json!({"targets": [address], "labels": {"job": format!("tollgate-{role}"), "tollgate_test": test}})
            })
            .collect();
        let path = dir.join(format!("{test}.json"));
        let tmp = dir.join(format!(".{test}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&groups).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        Self(path)
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn partition_count(topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), crate::support::PATIENCE)
        .unwrap();
    metadata.topics()[0].partitions().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_all_four_roles_and_sees_the_traffic_and_the_lag() {
    let prom = prometheus_url();
    let dir = targets_dir(&prom).await;
    let test = unique("prom");
    let processor = format!(
        "\n[processor]\ngroup_id = \"{test}\"\nhealth_sample_secs = 1\nbatch_max_wait_ms = {BATCH_WAIT_MS}\n\n[audit]\ngroup_id = \"{test}-audit\"\n"
    );
    let mut proxy = Proxy::start("prom", &processor, None).await;
    proxy.run_proxy().await;
    proxy.env.spawn("ingest", &["ingest"]);
    wait_http(
        &format!("{}/healthz", proxy.env.ingest_url()),
        Duration::from_secs(60),
        &proxy.env.log_path("ingest"),
    )
    .await;
    proxy.env.start_api().await;

    // The processor serves /metrics on a port of its own.
    let process_port = free_port();
    let _targets = Targets::write(
        &dir,
        &test,
        &[
            ("ingest", format!("127.0.0.1:{}", proxy.env.ingest_port)),
            ("process", format!("127.0.0.1:{process_port}")),
            ("api", format!("127.0.0.1:{}", proxy.env.api_port)),
            (
                "proxy",
                proxy.url().trim_start_matches("http://").to_string(),
            ),
        ],
    );
    let process_listen = format!("127.0.0.1:{process_port}");
    proxy.env.spawn(
        "process",
        &[
            "process",
            "--folds",
            "calls,audit",
            "--metrics-listen",
            &process_listen,
        ],
    );
    assert_eq!(
        listening_port(&proxy.env.log_path("process"), Duration::from_secs(60)),
        process_port
    );
    let logs = || {
        ["ingest", "process", "api", "proxy"]
            .iter()
            .map(|l| {
                let text = std::fs::read_to_string(proxy.env.log_path(l)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {l}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mine = format!("tollgate_test=\"{test}\"");

    // Every role is scraped.
    let up = wait_for(
        &prom,
        &format!("up{{{mine}}}"),
        Duration::from_secs(60),
        |s| s.len() == 4 && s.iter().all(|s| s.value == 1.0),
        logs,
    )
    .await;
    let jobs: BTreeSet<&str> = up.iter().map(|s| s.labels["job"].as_str()).collect();
    assert_eq!(
        jobs,
        BTreeSet::from([
            "tollgate-api",
            "tollgate-ingest",
            "tollgate-process",
            "tollgate-proxy"
        ])
    );

    // Every partition of the events topic has its lag in each consumer
    // fold's group, 0 while idle.
    let partitions = partition_count(&proxy.env.events_topic);
    let lag =
        format!("tollgate_process_consumer_lag_messages{{{mine},fold=\"calls\",group=\"{test}\"}}");
    let audit_lag = format!(
        "tollgate_process_consumer_lag_messages{{{mine},fold=\"audit\",group=\"{test}-audit\"}}"
    );
    let idle = |s: &[Sample]| s.len() == partitions && s.iter().all(|s| s.value == 0.0);
    wait_for(&prom, &lag, Duration::from_secs(60), idle, logs).await;
    wait_for(&prom, &audit_lag, Duration::from_secs(60), idle, logs).await;

    // Traffic of a known size to each HTTP role, counted from before it.
    let requests = |job: &str, route: &str, method: &str| {
        format!(
            "sum(tollgate_http_requests_total{{{mine},job=\"tollgate-{job}\",route=\"{route}\",method=\"{method}\"}}) or vector(0)"
        )
    };
    let before = [
        value(&prom, &requests("ingest", "/v1/events", "POST")).await,
        value(&prom, &requests("api", "/api/v1/reports/cost", "GET")).await,
        value(&prom, &requests("proxy", "/v1/chat/completions", "POST")).await,
    ];
    // A backlog straight into Kafka, and traffic to each HTTP role.
    let at = chrono::Utc::now();
    let backlog: Vec<(String, Vec<u8>)> = (0..BACKLOG)
        .map(|i| {
            let e = call_event(
                &format!("team-{}", i % 7),
                "openai",
                "gpt-4o",
                at,
                usage(100, 0, 0, 10, 0),
                Outcome::Success,
            );
            (e.team_id.clone(), serde_json::to_vec(&e).unwrap())
        })
        .collect();
    produce_all(&proxy.env.events_topic, &backlog).await;
    // One record no fold can read: the calls fold dead-letters it.
    produce_all(
        &proxy.env.events_topic,
        &[("team-0".to_string(), b"{\"schema_version\": 1,".to_vec())],
    )
    .await;
    let http = reqwest::Client::new();
    let ingest_key = proxy.env.create_key_with_role("ingest", None);
    let mut rejected_field = String::new();
    for i in 0..INGEST_REQUESTS {
        let good = call_event(
            "team-ingest",
            "openai",
            "gpt-4o",
            chrono::Utc::now(),
            usage(50, 0, 0, 5, 0),
            Outcome::Success,
        );
        let mut bad = serde_json::to_value(&good).unwrap();
        bad["event_id"] = json!(uuid::Uuid::now_v7());
        bad["call"]["usage"]["input_tokens"] = json!("many");
        let response = http
            .post(format!("{}/v1/events", proxy.env.ingest_url()))
            .bearer_auth(&ingest_key)
            .json(&json!([good, bad]))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["accepted"].as_u64(), body["rejected"].as_u64()),
            (Some(1), Some(1)),
            "request {i}: {body}"
        );
        rejected_field = body["results"][1]["field"].as_str().unwrap().to_string();
    }
    // Requests refused whole: counted by reason, with no event of theirs.
    for key in UNAUTHENTICATED_KEYS {
        let mut request = http
            .post(format!("{}/v1/events", proxy.env.ingest_url()))
            .header("content-type", "application/json")
            .body("[]");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{}", response.text().await.unwrap());
    }
    for _ in 0..MALFORMED_INGEST_REQUESTS {
        let response = http
            .post(format!("{}/v1/events", proxy.env.ingest_url()))
            .bearer_auth(&ingest_key)
            .header("content-type", "application/json")
            .body("[{\"schema_version\": 1,")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["field"], "body", "{body}");
    }
    for _ in 0..API_REQUESTS {
        let response = http
            .get(format!("{}/api/v1/reports/cost", proxy.env.api_url()))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }
    let proxy_key = proxy.key("org-1", "team-proxy", "u1", None);
    for _ in 0..PROXY_CALLS {
        let response = proxy.chat(&proxy_key, "gpt-4o-mini", &[]).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    // The backlog showed as lag while each fold held it.
    for lag in [&lag, &audit_lag] {
        let peak = wait_for(
            &prom,
            &format!("sum(max_over_time({lag}[1m]))"),
            Duration::from_secs(60),
            |s| s.first().is_some_and(|s| s.value > 0.0),
            logs,
        )
        .await;
        assert!(
            peak[0].value <= (BACKLOG + 1 + INGEST_REQUESTS + PROXY_CALLS) as f64,
            "{lag}: {peak:?}"
        );
    }

    // Each counter rose by exactly what was sent.
    let expected = [
        (
            requests("ingest", "/v1/events", "POST"),
            before[0]
                + (INGEST_REQUESTS + UNAUTHENTICATED_KEYS.len() + MALFORMED_INGEST_REQUESTS)
                    as f64,
        ),
        (
            requests("api", "/api/v1/reports/cost", "GET"),
            before[1] + API_REQUESTS as f64,
        ),
        (
            requests("proxy", "/v1/chat/completions", "POST"),
            before[2] + PROXY_CALLS as f64,
        ),
        (
            format!(
                "sum(tollgate_ingest_rejected_events_total{{{mine},api=\"events\",field=\"{rejected_field}\"}})"
            ),
            INGEST_REQUESTS as f64,
        ),
        (
            format!(
                "sum(tollgate_ingest_rejected_requests_total{{{mine},api=\"events\",reason=\"unauthenticated\"}})"
            ),
            UNAUTHENTICATED_KEYS.len() as f64,
        ),
        (
            format!(
                "sum(tollgate_ingest_rejected_requests_total{{{mine},api=\"events\",reason=\"malformed\"}})"
            ),
            MALFORMED_INGEST_REQUESTS as f64,
        ),
        (
            format!("count(tollgate_ingest_rejected_requests_total{{{mine}}} > 0)"),
            2.0,
        ),
        (
            format!("sum(tollgate_proxy_upstream_attempts_total{{{mine}}})"),
            PROXY_CALLS as f64,
        ),
        (
            format!("sum(tollgate_process_dead_letters_total{{{mine},fold=\"calls\"}})"),
            1.0,
        ),
    ];
    for (expr, want) in &expected {
        wait_for_value(&prom, expr, *want, crate::support::PATIENCE, logs).await;
    }

    // Every event sent was inserted once, and the lag drains to 0 on every
    // partition.
    let events = (BACKLOG + INGEST_REQUESTS + PROXY_CALLS) as f64;
    wait_for_value(
        &prom,
        &format!("sum(tollgate_process_rows_inserted_total{{{mine},fold=\"calls\"}})"),
        events,
        Duration::from_secs(240),
        logs,
    )
    .await;
    wait_for(&prom, &lag, Duration::from_secs(60), idle, logs).await;
    wait_for(&prom, &audit_lag, Duration::from_secs(120), idle, logs).await;
    let calls = proxy.env.ch_u64("SELECT count() FROM {db}.calls").await;
    assert_eq!(calls as f64, events);

    // The dead letter fired the shipped rule for this processor, and
    // Prometheus sent it on to Alertmanager.
    let am = alertmanager_url();
    let deadline = Instant::now() + crate::support::PATIENCE;
    let alert = loop {
        let alerts = alertmanager_alerts(&am, "TollgateDeadLetters").await;
        if let Some(a) = alerts
            .into_iter()
            .find(|a| a["labels"]["instance"] == process_listen.as_str())
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no TollgateDeadLetters for {process_listen} in Alertmanager at {am}; Prometheus's alerts: {}",
            reqwest::get(format!("{prom}/api/v1/alerts"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        (
            alert["labels"]["job"].as_str(),
            alert["labels"]["fold"].as_str(),
            alert["labels"]["severity"].as_str()
        ),
        (Some("tollgate-process"), Some("calls"), Some("warning")),
        "{alert:#}"
    );
    assert_eq!(
        alert["annotations"]["summary"], "1 events dead-lettered by the calls fold in 10 minutes",
        "{alert:#}"
    );
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); dev/stack up installs Debian's prometheus")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_shipped_prometheus_configuration_and_rules_pass_promtool() {
    let config = promtool(&["check", "config", "prometheus.yml"]);
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = promtool(&["check", "rules", "tollgate-rules.yml"]);
    assert!(rules.contains("SUCCESS: 10 rules found"), "{rules}");
    let tests = promtool(&["test", "rules", "tollgate-rules.test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // The scrape config names the five roles the rules select on.
    let yml = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    for job in ["ingest", "process", "api", "proxy", "alerts"] {
        assert!(
            yml.contains(&format!("job_name: tollgate-{job}\n")),
            "{job}"
        );
    }
}

#[test]
fn every_alert_has_a_summary_and_a_description() {
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/tollgate-rules.yml")).unwrap();
    // TollgateAlertEvaluatorStalled is two rules (its `stalled` label).
    let alerts = rules.matches("- alert: ").count();
    assert_eq!(alerts, 10);
    assert_eq!(rules.matches("          summary: ").count(), alerts);
    assert_eq!(rules.matches("          description: ").count(), alerts);
}
