//! A consumer its broker stops serving: librdkafka's fetchers have been
//! seen stuck after a broker restart or a leader change (its issues 4492,
//! 5153), and a broker holds back the fetches of a client over its quota.
//! Here a quota does it for real: at 1 byte a second the broker holds a
//! fetch back for hours, and librdkafka waits (until its request timeout,
//! 60 s, then asks again and is held back again). The fold is stalled
//! (nothing consumed while the lag sampler says events wait); after
//! `processor.stall_restart_secs` it closes its consumer and joins the
//! group with a new one (`docs/processor.md`, "Stalls"), which is served
//! once the quota is lifted. Every event is stored once across the
//! replacement.

use std::error::Error;
use std::sync::Mutex;
use std::time::Instant;

use super::kafka_outage::{
    last_line, post_until_accepted, run_with, secs, spawn_with, stored_once, team_events,
    ClientLog, Processes,
};
use crate::processor::wait_for_log;
use crate::support::private_kafka::PrivateKafka;
use crate::support::{self, TestEnv, PATIENCE};

const RESTARTS: &str = "tollgate_process_consumer_restarts_total{fold=\"calls\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_its_broker_stops_serving_is_replaced_and_every_event_stored_once(
) -> Result<(), Box<dyn Error>> {
    let kafka = PrivateKafka::start_shared().await;
    let brokers = kafka.brokers();
    let env = TestEnv::with_extra_config(
        "faults_stall",
        "[processor]\ngroup_id = \"stall\"\nhealth_sample_secs = 1\nstall_restart_secs = 15\nbatch_max_wait_ms = 200\n",
    )
    .await;
    let vars = [("TOLLGATE_KAFKA__BROKERS", brokers.as_str())];
    run_with(&env, &["migrate"], &vars);
    let key = last_line(&run_with(
        &env,
        &["keys", "create", "--name", "stall", "--role", "ingest"],
        &vars,
    ));
    let _processes = Processes(vec![
        spawn_with(&env, "ingest", &["ingest"], &vars),
        spawn_with(
            &env,
            "process",
            &[
                "process",
                "--folds",
                "calls",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            &vars,
        ),
    ]);
    support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        PATIENCE,
        &env.log_path("ingest"),
    )
    .await;
    let port = support::listening_port(&env.log_path("process"), PATIENCE);
    let metrics = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", env.ingest_url());
    let log = Mutex::new(ClientLog::default());

    post_until_accepted(&http, &url, &key, team_events("before", 100), &log).await;
    stored_once(&env, 100, PATIENCE).await;
    assert_eq!(support::metric(&metrics, RESTARTS).await, 0.0);

    // The producer is not held back (no producer quota); the consumer's
    // next fetch is answered empty, with a wait of hours.
    kafka.client_quota("consumer_byte_rate=1");
    let throttled = Instant::now();
    post_until_accepted(&http, &url, &key, team_events("during", 200), &log).await;
    wait_for_log(
        &env,
        "process",
        "stalled: nothing consumed or stored while events wait",
    )
    .await;
    let stalled = throttled.elapsed();
    // Replaced while the quota holds (librdkafka's own request timeout,
    // 60 s, only reconnects it to the same answer).
    wait_for_log(
        &env,
        "process",
        "closed the kafka consumer and joined the group with a new one",
    )
    .await;
    let replaced = throttled.elapsed();
    assert!(support::metric(&metrics, RESTARTS).await >= 1.0);
    // Lifted: a consumer that fetches now is served.
    kafka.client_quota("consumer_byte_rate");
    stored_once(&env, 300, PATIENCE).await;
    eprintln!(
        "stall seen {}, consumer replaced {}, all 300 events stored once {} after the quota",
        secs(stalled),
        secs(replaced),
        secs(throttled.elapsed())
    );
    Ok(())
}
