//! The fleet-wide breakers (`tollgate process --folds breakers`) against
//! the real Kafka and ClickHouse: call events produced straight to the
//! events topic, the `circuit/…` decisions read from the decisions topic as
//! a proxy reads them (every partition assigned, short fetch wait), and the
//! transitions checked in `breaker_transitions` and as
//! `admin.breaker.transition` events.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tollgate_contract::decisions::{
    recovery_subject, Action, Decision, RankedStrategy, RecoveryPlan,
};
use tollgate_contract::signature::{signature, ErrorInput, SignatureId};
use tollgate_contract::{Event, Outcome, ProviderError, Strategy};

use crate::support::events::{call_event, usage};
use crate::support::kafka::{produce_all, producer, read_records};
use crate::support::{kafka_brokers, unique, TestEnv};

pub(crate) const PROVIDER: &str = "mockai";
pub(crate) const MODEL: &str = "m-flaky";
const SUBJECT: &str = "circuit/mockai/m-flaky";

/// Short periods so a whole cycle runs in seconds; thresholds as the
/// defaults except the minimum.
const CONFIG: &str = r#"
[breakers]
minimum_calls = 10
open_secs = 2
max_wait_in_half_open_secs = 3
half_open_probes = 3
probes_per_proxy = 2
"#;

/// A call on the flaky model ending now: a success, or a 503 overload.
pub(crate) fn call(success: bool, duration_ms: u32) -> Event {
    let outcome = if success {
        Outcome::Success
    } else {
        Outcome::Error
    };
    let mut event = call_event(
        "team-b",
        PROVIDER,
        MODEL,
        Utc::now(),
        usage(10, 0, 0, 5, 0),
        outcome,
    );
    let c = event.call.as_mut().unwrap();
    c.duration_ms = duration_ms;
    if !success {
        c.http_status = 503;
        c.error = Some(ProviderError {
            error_type: "overloaded_error".into(),
            message: format!("Overloaded, please retry in {} ms", rand::random::<u16>()),
            signature: None,
        });
    }
    event
}

/// The signature of the overloads [`call`] makes.
fn overload_signature() -> SignatureId {
    let event = call(false, 40);
    let c = event.call.as_ref().unwrap();
    signature(&ErrorInput::from_call(
        &c.provider,
        c.http_status,
        c.error.as_ref().unwrap(),
    ))
    .id
}

/// A learned recovery for the overloads: retrying fails, another model of
/// the provider or m-steady of another provider work.
fn recovery_plan() -> Decision {
    let sig = overload_signature();
    let ranked = |strategy, provider: &str, model: &str, successes| RankedStrategy {
        strategy,
        provider: provider.into(),
        model: model.into(),
        attempts: 40,
        successes,
        lower_bound: 0.5,
        mean_wait_ms: 0,
    };
    Decision {
        subject: recovery_subject(PROVIDER, MODEL, sig),
        action: Action::Allow,
        reason: "learned".into(),
        retry_after_secs: None,
        reroute_to: None,
        valid_until: None,
        budget: None,
        recovery: Some(RecoveryPlan {
            signature: sig,
            provider: PROVIDER.into(),
            model: MODEL.into(),
            order: vec![
                ranked(Strategy::Retry, PROVIDER, MODEL, 30),
                ranked(Strategy::FallbackModel, PROVIDER, "m-sibling", 36),
                ranked(Strategy::FallbackProvider, "steadyai", "m-steady", 39),
            ],
            as_of: Utc::now(),
        }),
        breaker: None,
    }
}

pub(crate) fn encoded(events: &[Event]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect()
}

/// Every record of `topic` from the beginning as it arrives: (when it
/// arrived, key, value), read as a proxy reads decisions.
fn tail(topic: &str) -> mpsc::UnboundedReceiver<(Instant, String, serde_json::Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("tail"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), crate::support::PATIENCE)
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        list.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(message) = consumer.recv().await {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
            let value =
                serde_json::from_slice(message.payload().unwrap_or(b"null")).unwrap_or_default();
            if tx.send((Instant::now(), key, value)).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next `circuit/mockai/m-flaky` record in `state` (other records are
/// skipped), within `wait`.
async fn next_state(
    decisions: &mut mpsc::UnboundedReceiver<(Instant, String, serde_json::Value)>,
    state: &str,
    wait: Duration,
    log: &Path,
) -> (Instant, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, decisions.recv()).await {
            Ok(Some((at, key, value))) => {
                if key == SUBJECT && value["breaker"]["state"] == state {
                    return (at, value);
                }
            }
            _ => panic!(
                "no {state} decision for {SUBJECT} within {wait:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }
}

pub(crate) const JUDGING: &str = "breakers judging every partition from its end";
pub(crate) const LEASE: &str = "breaker lease acquired";

/// Start the breakers and wait until they judge every partition and
/// publish (hold the lease).
async fn start_breakers(env: &mut TestEnv) {
    env.spawn("process", &["process", "--folds", "breakers"]);
    crate::processor::wait_for_log(env, "process", JUDGING).await;
    crate::processor::wait_for_log(env, "process", LEASE).await;
}

/// The model's transitions as `from>to@generation calls/failures`, from
/// `breaker_transitions` once it holds `want` of them.
async fn transition_rows(env: &TestEnv, want: u64) -> Vec<String> {
    let count = format!(
        "SELECT count() FROM {{db}}.breaker_transitions WHERE provider = '{PROVIDER}' AND model = '{MODEL}'"
    );
    let got = env
        .wait_for_count(&count, want, crate::support::PATIENCE)
        .await;
    assert_eq!(got, want, "breaker_transitions rows");
    env.ch(&format!(
        "SELECT concat(from_state, '>', to_state, '@', toString(generation), ' ', toString(calls), '/', toString(failures)), event_id \
         FROM {{db}}.breaker_transitions WHERE provider = '{PROVIDER}' AND model = '{MODEL}' ORDER BY at_ms FORMAT TSV"
    ))
    .await
    .lines()
    .map(|l| l.to_string())
    .collect()
}

/// The `admin.breaker.transition` events of the model, as the rows spell
/// them (`from>to@generation calls/failures`, event id).
async fn transition_events(env: &TestEnv, want: usize) -> Vec<String> {
    let is_ours = |v: &serde_json::Value| {
        v["kind"] == "admin.breaker.transition" && v["admin"]["model"] == MODEL
    };
    let records = read_records(&env.events_topic, crate::support::PATIENCE, |r| {
        r.iter().filter(|(_, v)| is_ours(v)).count() >= want
    })
    .await;
    let mut events: Vec<&serde_json::Value> = records
        .iter()
        .map(|(_, v)| v)
        .filter(|v| is_ours(v))
        .collect();
    events.sort_by_key(|v| v["event_id"].as_str().unwrap().to_string());
    events
        .iter()
        .map(|v| {
            let a = &v["admin"];
            assert_eq!(a["actor"], "tollgate-processor");
            assert_eq!(a["provider"], PROVIDER);
            format!(
                "{}>{}@{} {}/{}\t{}",
                a["from"].as_str().unwrap(),
                a["to"].as_str().unwrap(),
                a["generation"],
                a["calls"],
                a["failures"],
                v["event_id"].as_str().unwrap()
            )
        })
        .collect()
}

/// Check that `breaker_transitions` holds exactly `want` for the model
/// (`from>to@generation calls/failures`, in order) and that the
/// `admin.breaker.transition` events are the same transitions under the
/// same ids.
async fn assert_transitions(env: &TestEnv, want: &[&str]) {
    let mut rows = transition_rows(env, want.len() as u64).await;
    let shapes: Vec<&str> = rows.iter().map(|r| r.split('\t').next().unwrap()).collect();
    assert_eq!(shapes, want);
    let mut events = transition_events(env, want.len()).await;
    let by_id = |l: &String| l.split('\t').nth(1).unwrap().to_string();
    events.sort_by_key(by_id);
    rows.sort_by_key(by_id);
    assert_eq!(events, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_opens_within_a_second_and_successful_probes_close_it() {
    let mut env = TestEnv::with_extra_config("breakers_close", CONFIG).await;
    let mut decisions = tail(&env.decisions_topic);
    // The recovery learner's plan for the overload: a retry works badly,
    // the fallbacks to m-sibling and m-steady well.
    let plan = recovery_plan();
    produce_all(
        &env.decisions_topic,
        &[(plan.subject.clone(), serde_json::to_vec(&plan).unwrap())],
    )
    .await;
    start_breakers(&mut env).await;
    let log = env.log_path("process");

    // Healthy: 10 successes. Then failing: 9 failures keep it at 9 of 19
    // (47%); the 10th failure is 10 of 20, the threshold.
    let healthy: Vec<Event> = (0..10).map(|_| call(true, 120)).collect();
    produce_all(&env.events_topic, &encoded(&healthy)).await;
    // Copies of the healthy calls (a client retried its report): the same
    // calls, not counted again. Counted, they would hold the failures
    // below at 10 of 30 (33%) and the breaker closed.
    produce_all(&env.events_topic, &encoded(&healthy)).await;
    let failing: Vec<Event> = (0..9).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&failing)).await;
    // Timed from the send on a producer that is already connected (a new
    // idempotent producer spends its first few hundred ms on set-up).
    let producer = producer();
    let crossing = encoded(&[call(false, 40)]).remove(0);
    let warm_up = encoded(&[call(true, 120)]).remove(0);
    producer
        .send(
            FutureRecord::to(&env.dlq_topic)
                .key(&warm_up.0)
                .payload(&warm_up.1),
            crate::support::PATIENCE,
        )
        .await
        .unwrap();
    let sent = Instant::now();
    producer
        .send(
            FutureRecord::to(&env.events_topic)
                .key(&crossing.0)
                .payload(&crossing.1),
            crate::support::PATIENCE,
        )
        .await
        .unwrap();
    let (seen, open) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    println!(
        "breaker: threshold-crossing event produced -> open decision seen in {} ms",
        seen.duration_since(sent).as_millis()
    );
    assert_eq!(open["subject"], SUBJECT);
    assert_eq!(open["action"], "reroute");
    assert_eq!(open["breaker"]["generation"], 1);
    assert_eq!(open["breaker"]["calls"], 20);
    assert_eq!(open["breaker"]["failures"], 10);
    assert!(open["breaker"]["signature"].is_string(), "{open}");
    let retry = open["retry_after_secs"].as_u64().unwrap();
    assert!((1..=2).contains(&retry), "{open}");
    assert!(open["valid_until"].is_string(), "{open}");
    // The learned fallback for the failure seen most: the sibling model.
    // Every call here is on mockai, but all of them are m-flaky's, so its
    // provider breaker stays closed (it opens only when its calls fail at
    // the threshold even leaving out the model failing most; here none is
    // left) and keeps nothing of mockai out.
    assert_eq!(open["reroute_to"], "m-sibling", "{open}");
    assert!(
        open["reason"]
            .as_str()
            .unwrap()
            .starts_with("10 of 20 calls failed (50%, threshold 50%)"),
        "{open}"
    );

    // After open_secs: half-open with the probe allowance.
    let (_, half) = next_state(&mut decisions, "half_open", crate::support::PATIENCE, &log).await;
    assert_eq!(half["action"], "reroute");
    assert_eq!(half["breaker"]["generation"], 1);
    assert_eq!(half["breaker"]["probes_per_proxy"], 2);

    // Probes sent after half-open began, all successful: closed.
    let probes: Vec<Event> = (0..3).map(|_| call(true, 0)).collect();
    produce_all(&env.events_topic, &encoded(&probes)).await;
    let (_, closed) = next_state(&mut decisions, "closed", crate::support::PATIENCE, &log).await;
    assert_eq!(closed["action"], "allow");
    assert_eq!(closed["breaker"]["generation"], 1);
    assert_eq!(closed["breaker"]["calls"], 3);
    assert_eq!(closed["breaker"]["failures"], 0);
    assert!(closed.get("valid_until").is_none(), "{closed}");

    // The rows, and the events: the same transitions under the same ids.
    assert_transitions(
        &env,
        &[
            "closed>open@1 20/10",
            "open>half_open@1 0/0",
            "half_open>closed@1 3/0",
        ],
    )
    .await;
}

/// Breakers more than two windows behind the events skip to the last
/// window instead of reading what they would leave out: 2,000 reports of
/// failures that Kafka stamped ten minutes ago (a backlog the breakers
/// fell behind on) are passed over, and the failures after them, stamped
/// now, are read and open the breaker with only themselves counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_behind_by_more_than_two_windows_skip_to_the_last_one() {
    let mut env =
        TestEnv::with_extra_config("breakers_catch_up", &format!("{CONFIG}window_secs = 5\n"))
            .await;
    let mut decisions = tail(&env.decisions_topic);
    start_breakers(&mut env).await;
    let log = env.log_path("process");
    let then = Utc::now() - chrono::Duration::minutes(10);
    let old: Vec<Event> = (0..2_000)
        .map(|_| {
            let mut e = call(false, 40);
            e.occurred_at = then;
            e
        })
        .collect();
    let producer = producer();
    let sends: Vec<_> = encoded(&old)
        .into_iter()
        .map(|(key, payload)| {
            let producer = producer.clone();
            let topic = env.events_topic.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .key(&key)
                            .payload(&payload)
                            .timestamp(then.timestamp_millis()),
                        crate::support::PATIENCE,
                    )
                    .await
                    .unwrap();
            }
        })
        .collect();
    futures::future::join_all(sends).await;
    let fresh: Vec<Event> = (0..10).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&fresh)).await;

    let text = crate::processor::wait_for_log(&env, "process", "skipped to the last window").await;
    let line = text
        .lines()
        .find(|l| l.contains("skipped to the last window"))
        .unwrap();
    let passed: u64 = line
        .split("passed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no passed= in {line}"));
    assert!(passed > 0, "{line}");
    assert!(line.contains("window_secs=5"), "{line}");
    let (_, open) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    assert_eq!(open["breaker"]["calls"], 10, "{open}");
    assert_eq!(open["breaker"]["failures"], 10, "{open}");
    println!("breakers skipped {passed} of 2,000 messages stamped ten minutes ago");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_probes_reopen_with_a_new_generation_and_absent_probes_do_not_stick() {
    let mut env = TestEnv::with_extra_config("breakers_reopen", CONFIG).await;
    let mut decisions = tail(&env.decisions_topic);
    start_breakers(&mut env).await;
    let log = env.log_path("process");

    // 100% failing from the start: open after the minimum of 10 calls.
    let failing: Vec<Event> = (0..10).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&failing)).await;
    let (_, open) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    assert_eq!(open["breaker"]["generation"], 1);
    assert_eq!(open["breaker"]["failures"], 10);
    let _ = next_state(&mut decisions, "half_open", crate::support::PATIENCE, &log).await;

    // Probes that fail: open again, a new generation.
    let probes: Vec<Event> = (0..3).map(|_| call(false, 0)).collect();
    produce_all(&env.events_topic, &encoded(&probes)).await;
    let (_, again) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    assert_eq!(again["breaker"]["generation"], 2);
    assert_eq!(again["breaker"]["calls"], 3);
    assert_eq!(again["breaker"]["failures"], 3);
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .starts_with("probes: 3 of 3 calls failed"),
        "{again}"
    );

    // Half-open of generation 2; no probe ever comes: it does not stay
    // half-open, it closes after max_wait_in_half_open_secs.
    let (half_seen, half) =
        next_state(&mut decisions, "half_open", crate::support::PATIENCE, &log).await;
    assert_eq!(half["breaker"]["generation"], 2);
    let (closed_seen, closed) =
        next_state(&mut decisions, "closed", crate::support::PATIENCE, &log).await;
    let waited = closed_seen.duration_since(half_seen);
    assert!(
        waited >= Duration::from_millis(2500),
        "closed after {waited:?}"
    );
    assert_eq!(closed["action"], "allow");
    assert_eq!(closed["breaker"]["generation"], 2);
    assert!(
        closed["reason"]
            .as_str()
            .unwrap()
            .starts_with("no probe outcome within 3 s of half-open"),
        "{closed}"
    );

    // The rows, and the events: the same transitions under the same ids.
    assert_transitions(
        &env,
        &[
            "closed>open@1 10/10",
            "open>half_open@1 0/0",
            "half_open>open@2 3/3",
            "open>half_open@2 0/0",
            "half_open>closed@2 0/0",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_each_transition_once_and_the_survivor_takes_over() {
    let mut env = TestEnv::with_extra_config("breakers_replicas", CONFIG).await;
    let mut decisions = tail(&env.decisions_topic);
    let pids = [
        (
            "process-a",
            env.spawn("process-a", &["process", "--folds", "breakers"]),
        ),
        (
            "process-b",
            env.spawn("process-b", &["process", "--folds", "breakers"]),
        ),
    ];
    for (label, _) in pids {
        crate::processor::wait_for_log(&env, label, JUDGING).await;
    }
    // One of the two holds the lease.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (leader, leader_pid, survivor) = loop {
        let holds = |label: &str| {
            std::fs::read_to_string(env.log_path(label))
                .unwrap_or_default()
                .contains(LEASE)
        };
        match (holds("process-a"), holds("process-b")) {
            (true, false) => break ("process-a", pids[0].1, "process-b"),
            (false, true) => break ("process-b", pids[1].1, "process-a"),
            (true, true) => panic!("both replicas hold the lease"),
            (false, false) => {}
        }
        assert!(Instant::now() < deadline, "no replica took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = env.log_path(leader);

    // A whole cycle while both judge every event.
    let failing: Vec<Event> = (0..10).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&failing)).await;
    let _ = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    let _ = next_state(&mut decisions, "half_open", crate::support::PATIENCE, &log).await;
    let probes: Vec<Event> = (0..3).map(|_| call(true, 0)).collect();
    produce_all(&env.events_topic, &encoded(&probes)).await;
    let _ = next_state(&mut decisions, "closed", crate::support::PATIENCE, &log).await;
    assert_transitions(
        &env,
        &[
            "closed>open@1 10/10",
            "open>half_open@1 0/0",
            "half_open>closed@1 3/0",
        ],
    )
    .await;
    // By the time the events were read back, a second writer's rows would
    // be there too: each transition is recorded once.
    assert_eq!(
        transition_rows(&env, 3).await.len(),
        3,
        "a transition was recorded twice"
    );

    // The publishing replica stops; the other takes the lease and goes on
    // from the same generation.
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(leader_pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    crate::processor::wait_for_log(&env, survivor, LEASE).await;
    let log = env.log_path(survivor);
    let failing: Vec<Event> = (0..10).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&failing)).await;
    let (_, open) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    assert_eq!(open["breaker"]["generation"], 2);
    let rows = transition_rows(&env, 4).await;
    // The survivor's evidence is its own window. It read the three probes
    // and the leader's "closed" record from two topics: probes first, it
    // judged them as half-open probes itself (window 10/10 here); the
    // record first, they sit in its closed window as successes and it
    // opens at the seventh failure (10/7). Both are one transition, once,
    // in generation 2 (docs/breakers.md, "Replicas").
    let transition = rows[3].split('\t').next().unwrap();
    assert!(
        ["closed>open@2 10/10", "closed>open@2 10/7"].contains(&transition),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_that_cannot_work_stops_the_processor_naming_the_key() {
    let env =
        TestEnv::with_extra_config("breakers_config", "[breakers]\nfailure_rate_percent = 0\n")
            .await;
    let out = env
        .tollgate(&["process", "--folds", "breakers"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("breakers.failure_rate_percent must be a percentage from 1 to 100 (got 0)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_breaker_carries_on_from_the_published_state() {
    let mut env = TestEnv::with_extra_config("breakers_restart", CONFIG).await;
    let mut decisions = tail(&env.decisions_topic);
    let first = env.spawn("process", &["process", "--folds", "breakers"]);
    crate::processor::wait_for_log(&env, "process", LEASE).await;
    let log = env.log_path("process");
    let failing: Vec<Event> = (0..10).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&failing)).await;
    let (_, open) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(first.to_string())
        .status()
        .unwrap();
    assert!(status.success());

    // A new instance knows nothing but the decisions topic: it takes on the
    // open breaker of generation 1 and goes on with its episode.
    env.spawn("restarted", &["process", "--folds", "breakers"]);
    crate::processor::wait_for_log(&env, "restarted", LEASE).await;
    let log = env.log_path("restarted");
    let (_, half) = next_state(&mut decisions, "half_open", crate::support::PATIENCE, &log).await;
    assert_eq!(half["breaker"]["generation"], 1);
    assert!(
        half["breaker"]["since"].as_str() > open["breaker"]["since"].as_str(),
        "{half} after {open}"
    );
    let (_, closed) = next_state(&mut decisions, "closed", crate::support::PATIENCE, &log).await;
    assert_eq!(closed["breaker"]["generation"], 1);
    assert_transitions(
        &env,
        &[
            "closed>open@1 10/10",
            "open>half_open@1 0/0",
            "half_open>closed@1 0/0",
        ],
    )
    .await;
}

/// Calls reported through the ingest API (by any holder of an ingest key,
/// of any org) do not judge a provider: the breakers read the proxies'
/// records (and events produced to Kafka directly). 20 reported calls (10
/// failed) would have made the breaker open at 10 calls of which 5
/// failed; it opens at 10 of 10, as if they were not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reported_through_the_ingest_api_judge_no_provider() {
    let mut env = TestEnv::with_extra_config("breakers_reported", CONFIG).await;
    let mut decisions = tail(&env.decisions_topic);
    start_breakers(&mut env).await;
    let log = env.log_path("process");
    env.spawn("ingest", &["ingest"]);
    crate::support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        crate::support::PATIENCE,
        &env.log_path("ingest"),
    )
    .await;
    let key = env.create_key_with_role("ingest", None);

    // Failures reported after the fact: none of them counts either.
    let reported: Vec<Event> = (0..20).map(|i| call(i % 2 == 0, 40)).collect();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/events", env.ingest_url()))
        .bearer_auth(&key)
        .json(&reported)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 20, "{answer}");
    let failing: Vec<Event> = (0..10).map(|_| call(false, 40)).collect();
    produce_all(&env.events_topic, &encoded(&failing)).await;
    let (_, open) = next_state(&mut decisions, "open", crate::support::PATIENCE, &log).await;
    assert_eq!(
        (&open["breaker"]["calls"], &open["breaker"]["failures"]),
        (&serde_json::json!(10), &serde_json::json!(10)),
        "{open}"
    );
}
