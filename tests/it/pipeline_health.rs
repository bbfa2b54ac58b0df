//! The `pipeline_health` alert signal from the components' own samples,
//! against real Kafka, ClickHouse and PostgreSQL: `tollgate process` (one
//! message per insert, so a backlog lasts a few samples, sampling every
//! second) is given valid events and malformed messages, and `measure`
//! must give exactly the number of dead letters and a consumer lag that was
//! above 0 while the backlog lasted and drains to 0; a rule on the dead
//! letters fires in a backtest over that period, whose steps add up to the
//! same count. `tollgate ingest` answering a batch with N bad events must
//! make `measure` count exactly N rejected events. While a scratch Kafka
//! broker is stopped, the proxy's spool depth still reaches ClickHouse and
//! `measure` sees it above 0. No sample at all is unknown, not 0.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_contract::alert_lifecycle::{Observation, Transition};
use tollgate_contract::alerts::{PipelineHealthSignal, PipelineMetric, RuleSpec, Signal};
use tollgate_contract::Outcome;
use tollgate_control::config::ClickHouseConfig;
use tollgate_queries::alert_signals::{backtest, measure, Measurement, SignalSources};
use tollgate_queries::ReadModels;

use crate::proxy::{kafka_scratch, Proxy, ScratchKafka};
use crate::support::events::{call_event, usage};
use crate::support::kafka::produce_all;
use crate::support::{clickhouse_url, unique, wait_http, TestEnv};

const VALID: usize = 300;
/// Malformed messages among them: not JSON, an empty value, an event
/// without its call.
const MALFORMED: usize = 7;
const BAD_EVENTS: usize = 4;

fn signal(metric: PipelineMetric, window_secs: u32) -> Signal {
    Signal::PipelineHealth(PipelineHealthSignal {
        metric,
        above: 0,
        window_secs,
    })
}

fn read_models(env: &TestEnv) -> ReadModels {
    ReadModels::new(&ClickHouseConfig {
        url: clickhouse_url(),
        database: env.ch_database.clone(),
        ..ClickHouseConfig::default()
    })
}

/// The measurement at `at` (the window ends at `at`'s whole minute: a
/// minute ahead of now reads the minute in progress too).
async fn at(read: &ReadModels, signal: &Signal, at: DateTime<Utc>) -> Measurement {
    let sources = SignalSources {
        read,
        budgets: None,
    };
    measure(sources, "org-1", signal, at).await.unwrap()
}

fn next_minute() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(60)
}

/// Poll `signal` (read a minute ahead) until its value is `want`, or panic
/// after `timeout` with the last measurement.
async fn wait_for_value(
    read: &ReadModels,
    signal: &Signal,
    want: u64,
    timeout: Duration,
    log: &str,
) -> Measurement {
    let start = Instant::now();
    loop {
        let m = at(read, signal, next_minute()).await;
        if m.value == Some(Decimal::from(want)) {
            return m;
        }
        assert!(
            start.elapsed() < timeout,
            "{signal:?} never reached {want}: {m:?}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_counted_exactly_and_consumer_lag_drains_to_zero() {
    let group = unique("pipehealth");
    let mut env = TestEnv::with_extra_config(
        "pipehealth",
        &format!(
            "[processor]\ngroup_id = \"{group}\"\nhealth_sample_secs = 1\nbatch_max_rows = 1\n"
        ),
    )
    .await;
    let read = read_models(&env);
    let dead_letters = signal(PipelineMetric::DeadLetters, 600);
    let lag = signal(PipelineMetric::ConsumerLag, 60);

    // Nothing has reported yet: unknown, not 0.
    let before = at(&read, &dead_letters, next_minute()).await;
    assert_eq!(
        (before.value, before.observation),
        (None, Observation::Unknown),
        "{before:?}"
    );

    let started = Utc::now();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..VALID {
        let e = call_event(
            &format!("team-{}", i % 5),
            "openai",
            "gpt-4o",
            started,
            usage(100, 0, 0, 10, 0),
            Outcome::Success,
        );
        messages.push((e.team_id.clone(), serde_json::to_vec(&e).unwrap()));
        let bad_so_far = messages.len() - (i + 1);
        if i % (VALID / MALFORMED) == 0 && bad_so_far < MALFORMED {
            let bad = match bad_so_far % 3 {
                0 => b"not json at all".to_vec(),
                1 => Vec::new(),
                _ => {
                    let mut v = serde_json::to_value(&e).unwrap();
                    v.as_object_mut().unwrap().remove("call");
                    serde_json::to_vec(&v).unwrap()
                }
            };
            messages.push((format!("bad-{i}"), bad));
        }
    }
    let malformed = messages.len() - VALID;
    assert_eq!(malformed, MALFORMED);
    produce_all(&env.events_topic, &messages).await;
    env.spawn("process", &["process", "--folds", "calls"]);
    let log = || std::fs::read_to_string(env.log_path("process")).unwrap_or_default();

    let calls = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            VALID as u64,
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(calls, VALID as u64, "log:\n{}", log());

    // Every dead letter is counted once, in the samples of the window.
    let m = wait_for_value(
        &read,
        &dead_letters,
        MALFORMED as u64,
        crate::support::PATIENCE,
        &log(),
    )
    .await;
    assert_eq!(m.observation, Observation::Holds, "{m:?}");
    // A few more samples later it is still exactly that (nothing counted twice).
    let samples = env
        .ch_u64("SELECT count() FROM {db}.pipeline_health WHERE metric = 'dead_letters'")
        .await;
    env.wait_for_count(
        "SELECT count() FROM {db}.pipeline_health WHERE metric = 'dead_letters'",
        samples + 3,
        crate::support::PATIENCE,
    )
    .await;
    let again = at(&read, &dead_letters, next_minute()).await;
    assert_eq!(again.value, Some(Decimal::from(MALFORMED)), "{again:?}");

    // The lag was sampled above 0 while the backlog lasted, then drains to 0.
    let max_lag = env
        .ch_u64("SELECT max(value) FROM {db}.pipeline_health WHERE metric = 'consumer_lag'")
        .await;
    assert!(
        max_lag > 0,
        "no lag sample saw the backlog of {} messages; log:\n{}",
        messages.len(),
        log()
    );
    let drained = wait_for_value(&read, &lag, 0, Duration::from_secs(60), &log()).await;
    assert_eq!(drained.observation, Observation::Clear, "{drained:?}");
    let partitions = env
        .ch_u64(
            "SELECT uniqExact(kafka_partition) FROM {db}.pipeline_health WHERE metric = 'consumer_lag'",
        )
        .await;
    assert!(partitions >= 1, "no partition reported");

    // A rule on the dead letters fires in a backtest over the period; its
    // one-minute windows split the same count between them.
    let rule = RuleSpec::from_json(
        json!({
            "org_id": "org-1",
            "name": "dead letters",
            "signal": {"kind": "pipeline_health", "metric": "dead_letters", "above": 0, "window_secs": 60},
            "for_secs": 0,
            "severity": "warning"
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let minute = |t: DateTime<Utc>| t.duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let from = minute(started) + chrono::Duration::minutes(1);
    // At least one step, even when the whole test ran inside one minute.
    let to = (minute(Utc::now()) + chrono::Duration::minutes(1))
        .max(from + chrono::Duration::minutes(1));
    let sources = SignalSources {
        read: &read,
        budgets: None,
    };
    let result = backtest(sources, &rule, from, to, 60)
        .await
        .unwrap()
        .unwrap();
    let total: Decimal = result
        .series
        .iter()
        .filter_map(|p| p.measurement.value)
        .sum();
    assert_eq!(total, Decimal::from(MALFORMED), "{:?}", result.series);
    assert!(
        result
            .transitions
            .iter()
            .any(|(_, t)| matches!(t, Transition::Firing { .. })),
        "the rule never fired: {:?}",
        result.series
    );
}

/// A `tollgate ingest` sampling every second; killed on drop.
struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_ingest_counts_every_bad_event_of_a_batch() {
    let env = TestEnv::new("pipehealth_ingest").await;
    let read = read_models(&env);
    let rejected = signal(PipelineMetric::RejectedIngest, 600);
    let key = env.create_key("org-1");
    let log = std::fs::File::create(env.log_path("ingest")).unwrap();
    let _ingest = Ingest(
        env.tollgate(&["ingest"])
            .env("TOLLGATE_INGEST__HEALTH_SAMPLE_SECS", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(env.log_path("ingest")).unwrap_or_default();
    wait_http(
        &format!("{}/healthz", env.ingest_url()),
        Duration::from_secs(60),
        &env.log_path("ingest"),
    )
    .await;
    // Before any batch: samples of 0, an answer.
    let zero = wait_for_value(&read, &rejected, 0, crate::support::PATIENCE, &log()).await;
    assert_eq!(zero.observation, Observation::Clear, "{zero:?}");

    let good = |i: usize| {
        serde_json::to_value(call_event(
            &format!("team-{i}"),
            "openai",
            "gpt-4o",
            Utc::now(),
            usage(100, 0, 0, 10, 0),
            Outcome::Success,
        ))
        .unwrap()
    };
    let mut batch: Vec<Value> = (0..6).map(good).collect();
    let mut missing_call = good(100);
    missing_call.as_object_mut().unwrap().remove("call");
    let mut other_org = good(101);
    other_org["org_id"] = json!("org-2");
    let mut bad_tokens = good(102);
    bad_tokens["call"]["usage"]["input_tokens"] = json!("many");
    batch.extend([
        missing_call,
        json!({"hello": "world"}),
        other_org,
        bad_tokens,
    ]);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", env.ingest_url()))
        .bearer_auth(&key)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["rejected"], json!(BAD_EVENTS), "{body}");
    assert_eq!(body["accepted"], json!(6), "{body}");

    let m = wait_for_value(
        &read,
        &rejected,
        BAD_EVENTS as u64,
        crate::support::PATIENCE,
        &log(),
    )
    .await;
    assert_eq!(m.observation, Observation::Holds, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_spool_depth_reaches_clickhouse_while_kafka_is_down() {
    let data = tempfile::tempdir().unwrap();
    let ports = (crate::support::free_port(), crate::support::free_port());
    kafka_scratch("start", data.path(), Some(ports));
    let _guard = ScratchKafka(data.path().to_path_buf());
    let brokers = format!("127.0.0.1:{}", ports.0);
    let mut proxy =
        Proxy::start("pipehealth_proxy", "health_sample_secs = 1", Some(&brokers)).await;
    proxy.run_proxy().await;
    let read = read_models(&proxy.env);
    let depth = signal(PipelineMetric::ProxySpoolDepth, 60);
    let key = proxy.key("acme", "team-a", "u", None);
    assert_eq!(proxy.chat(&key, "gpt-4o-mini", &[]).await.status(), 200);
    assert_eq!(proxy.events(1).len(), 1);
    // Kafka up, nothing spooled: samples of 0 bytes, clear.
    let empty = wait_for_value(&read, &depth, 0, crate::support::PATIENCE, &proxy.log()).await;
    assert_eq!(empty.observation, Observation::Clear, "{empty:?}");

    kafka_scratch("stop", data.path(), None);
    for _ in 0..5 {
        assert_eq!(proxy.chat(&key, "gpt-4o-mini", &[]).await.status(), 200);
    }
    // The samples travel to ClickHouse, not through the stopped Kafka: the
    // deepest spool of the window is the spool file's size (it only grows
    // while Kafka is down).
    let spool = proxy.env.dir.path().join("spool/events.ndjson");
    let start = Instant::now();
    let m = loop {
        let bytes = std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0);
        let m = at(&read, &depth, next_minute()).await;
        if bytes > 0 && m.value == Some(Decimal::from(bytes)) {
            break m;
        }
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "spool {bytes} bytes, measured {m:?}; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(m.observation, Observation::Holds, "{m:?}");
}
