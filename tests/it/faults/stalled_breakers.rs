//! The breakers' events reader its broker stops serving (a consumer quota
//! of 1 byte a second, as in `stalled_consumer`): it is no group's member,
//! so until 2026-12-07 nothing watched it, and a stuck fetcher left every
//! circuit closed without a word. Now its lag is sampled
//! (`tollgate_process_consumer_lag{fold="breakers"}`), a stall is warned
//! of, and past `processor.stall_restart_secs` the reader is replaced at
//! the same positions (`tollgate_process_consumer_restarts_total{fold=
//! "breakers"}`); once the broker serves again, the failures produced
//! during the stall open the circuit.

use std::error::Error;
use std::time::Instant;

use rdkafka::producer::FutureRecord;

use super::kafka_outage::{run_with, secs, spawn_with, Processes};
use crate::breakers::{call, encoded, JUDGING, LEASE, MODEL, PROVIDER};
use crate::processor::wait_for_log;
use crate::support::kafka::producer_at;
use crate::support::private_kafka::PrivateKafka;
use crate::support::{self, TestEnv, PATIENCE};

const RESTARTS: &str = "tollgate_process_consumer_restarts_total{fold=\"breakers\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breakers_reader_its_broker_stops_serving_is_replaced_and_the_circuit_opens(
) -> Result<(), Box<dyn Error>> {
    let kafka = PrivateKafka::start_shared().await;
    let brokers = kafka.brokers();
    let env = TestEnv::with_extra_config(
        "faults_bstall",
        "[processor]\ngroup_id = \"bstall\"\nhealth_sample_secs = 1\nstall_restart_secs = 15\n\
         [breakers]\nminimum_calls = 10\nwindow_secs = 600\n",
    )
    .await;
    let vars = [("TOLLGATE_KAFKA__BROKERS", brokers.as_str())];
    run_with(&env, &["migrate"], &vars);
    let _processes = Processes(vec![spawn_with(
        &env,
        "process",
        &[
            "process",
            "--folds",
            "breakers",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &vars,
    )]);
    wait_for_log(&env, "process", JUDGING).await;
    wait_for_log(&env, "process", LEASE).await;
    let port = support::listening_port(&env.log_path("process"), PATIENCE);
    let metrics = format!("http://127.0.0.1:{port}");
    assert_eq!(support::metric(&metrics, RESTARTS).await, 0.0);

    // Held back: the failures wait on the topic, unread.
    kafka.client_quota("consumer_byte_rate=1");
    let throttled = Instant::now();
    let failures: Vec<_> = (0..20).map(|_| call(false, 40)).collect();
    let producer = producer_at(&brokers);
    for (key, payload) in encoded(&failures) {
        producer
            .send(
                FutureRecord::to(&env.events_topic)
                    .key(&key)
                    .payload(&payload),
                PATIENCE,
            )
            .await
            .map_err(|(err, _)| err)?;
    }
    wait_for_log(
        &env,
        "process",
        "breakers stalled: nothing read while events wait",
    )
    .await;
    let stalled = throttled.elapsed();
    wait_for_log(&env, "process", "closed the breakers' kafka reader").await;
    let replaced = throttled.elapsed();
    assert!(support::metric(&metrics, RESTARTS).await >= 1.0);
    let open = format!(
        "SELECT count() FROM {{db}}.breaker_transitions \
         WHERE provider = '{PROVIDER}' AND model = '{MODEL}' AND to_state = 'open'"
    );
    assert_eq!(env.ch(&open).await.trim(), "0", "nothing read yet");

    // Served again: the reader reads what waited, and the circuit opens.
    kafka.client_quota("consumer_byte_rate");
    assert_eq!(env.wait_for_count(&open, 1, PATIENCE).await, 1);
    eprintln!(
        "stall seen {}, reader replaced {}, circuit open {} after the quota",
        secs(stalled),
        secs(replaced),
        secs(throttled.elapsed())
    );
    Ok(())
}
