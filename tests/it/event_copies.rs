//! A copy of an event on the topic (a client that sent the same body again
//! after losing the answer) is stored, counted and billed once: the calls
//! fold leaves out an `event_id` among its partition's recent ones, also
//! after the processor restarted (the window is read back from `calls`).
//! Real `tollgate ingest`, Kafka, `tollgate process` and ClickHouse.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::ingest_api::{call_event, start_ingest};
use crate::processor::wait_exit;
use crate::support::{self, signal, TestEnv, PATIENCE};

const REPEATED: &str = "tollgate_process_events_repeated_total{fold=\"calls\"}";

async fn post(env: &TestEnv, key: &str, events: &[Value]) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", env.ingest_url()))
        .bearer_auth(key)
        .json(events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], events.len(), "{body}");
    body
}

/// Start `tollgate process` with a metrics listener; returns the child and
/// the listener's base URL.
fn start_processor(env: &TestEnv, label: &str) -> (std::process::Child, String) {
    let child = env.spawn_child(label, &["process", "--metrics-listen", "127.0.0.1:0"]);
    let port = support::listening_port(&env.log_path(label), PATIENCE);
    (child, format!("http://127.0.0.1:{port}"))
}

/// Poll the processor's count of left-out copies until it is `want`.
async fn wait_for_repeats(metrics: &str, want: f64, env: &TestEnv, label: &str) {
    let start = Instant::now();
    loop {
        let got = support::metric_if_present(metrics, REPEATED)
            .await
            .unwrap_or(0.0);
        if got == want {
            return;
        }
        assert!(
            got < want && start.elapsed() < PATIENCE,
            "{got} copies left out, want {want}; log:\n{}",
            std::fs::read_to_string(env.log_path(label)).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start a processor as `label`, wait until it left out `copies` copies
/// and `calls` holds `rows` rows with their rollups; the processor and
/// [`totals`].
async fn fold(
    env: &TestEnv,
    label: &str,
    copies: f64,
    rows: u64,
) -> (std::process::Child, (u64, u64, u64, String, String)) {
    let (child, metrics) = start_processor(env, label);
    wait_for_repeats(&metrics, copies, env, label).await;
    env.wait_for_count("SELECT count() FROM {db}.calls", rows, PATIENCE)
        .await;
    env.wait_for_cost_rollup().await;
    (child, totals(env).await)
}

/// `(calls rows, distinct event ids, calls in cost_daily, cost in calls,
/// cost in cost_daily)`.
async fn totals(env: &TestEnv) -> (u64, u64, u64, String, String) {
    let row = env
        .ch("SELECT count(), uniqExact(event_id), toString(sum(cost)) FROM {db}.calls FORMAT TSV")
        .await;
    let cols: Vec<&str> = row.trim().split('\t').collect();
    let rollup = env
        .ch("SELECT sum(calls), toString(sum(cost)) FROM {db}.cost_daily FORMAT TSV")
        .await;
    let rcols: Vec<&str> = rollup.trim().split('\t').collect();
    (
        cols[0].parse().unwrap(),
        cols[1].parse().unwrap(),
        rcols[0].parse().unwrap(),
        cols[2].to_string(),
        rcols[1].to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_twice_is_stored_and_billed_once_also_after_a_processor_restart() {
    let mut env = TestEnv::new("event_copies").await;
    start_ingest(&mut env).await;
    let key = env.create_key("acme");
    let events: Vec<Value> = (0..20)
        .map(|i| call_event("acme", &format!("team-{}", i % 3)))
        .collect();

    // The client lost the first answer and sent the same body again: the
    // ingest API accepts both (it keeps no ids), the topic holds 40.
    post(&env, &key, &events).await;
    post(&env, &key, &events).await;
    let (mut first, (rows, distinct, billed, cost, rollup_cost)) =
        fold(&env, "process-1", 20.0, 20).await;
    assert_eq!((rows, distinct, billed), (20, 20, 20));
    assert_eq!(cost, rollup_cost, "cost_daily bills what calls holds");
    let one_call = env
        .ch("SELECT toString(any(cost)) FROM {db}.calls WHERE cost > 0 FORMAT TSV")
        .await;
    let one_call = support::d(one_call.trim());
    assert!(one_call > support::d("0"), "the calls are priced");
    assert_eq!(support::d(&cost), one_call * support::d("20"));

    // Stopped, then five of them arrive again with five new ones: the new
    // processor reads the window back from `calls` and leaves the five out.
    signal(first.id(), "TERM");
    assert!(wait_exit(&mut first, PATIENCE).await.success());
    let mut again: Vec<Value> = events[..5].to_vec();
    again.extend((0..5).map(|i| call_event("acme", &format!("team-{}", i % 3))));
    post(&env, &key, &again).await;
    let (mut second, (rows, distinct, billed, cost, rollup_cost)) =
        fold(&env, "process-2", 5.0, 25).await;
    assert_eq!((rows, distinct, billed), (25, 25, 25));
    assert_eq!(cost, rollup_cost);
    assert_eq!(support::d(&cost), one_call * support::d("25"));
    let log = std::fs::read_to_string(env.log_path("process-2")).unwrap_or_default();
    assert!(
        log.contains("recent event ids read back from calls"),
        "log:\n{log}"
    );
    signal(second.id(), "TERM");
    assert!(wait_exit(&mut second, PATIENCE).await.success());
}
