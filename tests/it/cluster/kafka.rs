//! The Kafka tier of the cluster stack: topics replicated as configured
//! (`kafka.replication_factor`, `kafka.min_insync_replicas`), and HTTP ingest
//! through the processor while a broker is SIGKILLed and restarted, with
//! every accepted event stored exactly once (docs/deployment.md, "Kafka").

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use super::{cluster_kafka, Killed, CLUSTER_FAULTS};
use crate::faults::kafka_outage::{
    ingest_and_processor, paced_clients, records_in, run_with, secs, stored_once, team_events,
    wait_until,
};
use crate::support::{TestEnv, PATIENCE};

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// Per partition of `topic`: (leader, replicas, in-sync replicas), as the
/// cluster's metadata says.
pub(super) async fn partitions_of(brokers: &str, topic: &str) -> Vec<(i32, usize, usize)> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let metadata = admin(&brokers)
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .unwrap();
        let t = &metadata.topics()[0];
        assert!(t.error().is_none(), "topic {topic}: {:?}", t.error());
        t.partitions()
            .iter()
            .map(|p| (p.leader(), p.replicas().len(), p.isr().len()))
            .collect()
    })
    .await
    .unwrap()
}

/// Per partition of `topic` once the metadata shows `partitions` of them:
/// a topic just created reaches each broker's metadata a moment after the
/// controller acknowledged it, and this client may ask another broker.
async fn partitions_once_known(
    brokers: &str,
    topic: &str,
    partitions: usize,
) -> Vec<(i32, usize, usize)> {
    wait_until(
        &format!("{topic} known with {partitions} partition(s)"),
        PATIENCE,
        || async move { topic_known(brokers, topic, partitions).await },
    )
    .await;
    partitions_of(brokers, topic).await
}

async fn topic_known(brokers: &str, topic: &str, partitions: usize) -> bool {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        admin(&brokers)
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .is_ok_and(|metadata| {
                metadata.topics().iter().any(|t| {
                    t.error().is_none()
                        && t.partitions().len() == partitions
                        && t.partitions().iter().all(|p| !p.replicas().is_empty())
                })
            })
    })
    .await
    .unwrap()
}

/// Wait until every partition of `topic` has all its replicas in sync
/// again (a restarted broker caught up); how long that took.
pub(super) async fn back_in_sync(brokers: &str, topic: &str) -> Duration {
    wait_until(
        "the restarted broker back in sync",
        PATIENCE,
        || async move {
            partitions_of(brokers, topic)
                .await
                .iter()
                .all(|(_, replicas, isr)| isr == replicas)
        },
    )
    .await
}

/// `setting` of `topic` as the brokers report it (DescribeConfigs).
async fn topic_setting(brokers: &str, topic: &str, setting: &str) -> Option<String> {
    let results = admin(brokers)
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource.get(setting).and_then(|entry| entry.value.clone())
}

/// Delete the topics of test namespace `name` (`<name>.*`) on the cluster
/// Kafka (a [`TestEnv`] cleans only the single-node broker's).
pub(super) async fn delete_cluster_topics(brokers: &str, name: &str) {
    let (brokers_list, prefix) = (brokers.to_string(), format!("{name}."));
    let names = tokio::task::spawn_blocking(move || {
        admin(&brokers_list)
            .inner()
            .fetch_metadata(None, Duration::from_secs(30))
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|t| t.starts_with(&prefix))
                    .collect::<Vec<_>>()
            })
    })
    .await
    .unwrap();
    let names = match names {
        Ok(names) if names.is_empty() => return,
        Ok(names) => names,
        Err(err) => return eprintln!("listing the cluster's topics of {name}: {err}"),
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Err(err) = admin(brokers)
        .delete_topics(&names, &AdminOptions::new())
        .await
    {
        eprintln!("deleting cluster topics {names:?}: {err}");
    }
}

/// The settings that point `env`'s roles at the cluster, replicated 3/2.
pub(super) fn cluster_vars(brokers: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("TOLLGATE_KAFKA__BROKERS", brokers),
        ("TOLLGATE_KAFKA__REPLICATION_FACTOR", "3"),
        ("TOLLGATE_KAFKA__MIN_INSYNC_REPLICAS", "2"),
        // A crashed leader's partitions wait for its session to time out and
        // the in-sync set to shrink: a produce rides that out, never fails.
        ("TOLLGATE_KAFKA__MESSAGE_TIMEOUT_MS", "300000"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_every_topic_with_three_replicas_and_min_insync_two() {
    let brokers = cluster_kafka();
    // Every broker must be up: a fault test's kill would make this one
    // see two brokers.
    let _all_up = CLUSTER_FAULTS.lock().await;
    let env = TestEnv::new("cluster_topics").await;
    let vars = cluster_vars(&brokers);

    // More replicas than brokers: refused before anything is created.
    let refused = |setting: (&'static str, &'static str)| {
        let mut vars = vars.clone();
        vars.retain(|(key, _)| *key != setting.0);
        vars.push(setting);
        let out = env.tollgate(&["migrate"]).envs(vars).output().unwrap();
        assert!(!out.status.success(), "migrate took {setting:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = refused(("TOLLGATE_KAFKA__REPLICATION_FACTOR", "4"));
    assert!(
        stderr.contains(&format!(
            "kafka.replication_factor is 4 but the Kafka cluster at {brokers} has 3 broker(s) up"
        )),
        "{stderr}"
    );
    let stderr = refused(("TOLLGATE_KAFKA__MIN_INSYNC_REPLICAS", "4"));
    assert!(
        stderr.contains(
            "kafka.min_insync_replicas is 4 but kafka.replication_factor is 3: \
             no write could ever be acknowledged"
        ),
        "{stderr}"
    );

    let stdout = run_with(&env, &["migrate"], &vars);
    let topics = [
        (env.events_topic.clone(), 4),
        (env.dlq_topic.clone(), 1),
        (env.decisions_topic.clone(), 4),
        (format!("{}.audit.checkpoints", env.name), 1),
    ];
    for (topic, partitions) in &topics {
        assert!(
            stdout.contains(&format!(
                "kafka: topic {topic} created ({partitions} partitions wanted, 3 replicas)"
            )),
            "{stdout}"
        );
        let read_back = partitions_once_known(&brokers, topic, *partitions).await;
        assert_eq!(read_back.len(), *partitions, "{topic}");
        for (partition, (_, replicas, _)) in read_back.iter().enumerate() {
            assert_eq!(*replicas, 3, "{topic} partition {partition}");
        }
        assert_eq!(
            topic_setting(&brokers, topic, "min.insync.replicas")
                .await
                .as_deref(),
            Some("2"),
            "{topic}"
        );
    }
    // The compacted decisions topic keeps its own settings beside them.
    assert_eq!(
        topic_setting(&brokers, &env.decisions_topic, "cleanup.policy")
            .await
            .as_deref(),
        Some("compact")
    );
    // Again: nothing to create, and says what the topics have.
    let again = run_with(&env, &["migrate"], &vars);
    assert!(
        again.contains(&format!(
            "kafka: topic {} already exists (4 partitions wanted, 3 replicas)",
            env.events_topic
        )),
        "{again}"
    );
    delete_cluster_topics(&brokers, &env.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_and_restarted_under_http_ingest_loses_and_duplicates_no_event() {
    const EVENTS: u64 = 3_000;
    let brokers = cluster_kafka();
    let _fault = CLUSTER_FAULTS.lock().await;
    let env = TestEnv::new("cluster_ingest").await;
    let vars = cluster_vars(&brokers);
    let (key, _processes) = ingest_and_processor(&env, &vars).await;

    // About 500 events/s from four clients.
    let (clients, log) = paced_clients(&env, &key, team_events("cluster", EVENTS as usize));
    let accepted = || log.lock().unwrap().accepted;
    wait_until("600 events accepted", PATIENCE, || {
        let n = accepted();
        async move { n >= 600 }
    })
    .await;

    // The leader of the events topic's first partition: its crash moves
    // leaderships, not just a follower.
    let victim = partitions_of(&brokers, &env.events_topic).await[0].0;
    assert!((1..=3).contains(&victim), "leader {victim}");
    let down = Killed::kill("kafka.sh", victim).await;
    let killed = Instant::now();
    let at_kill = accepted();
    // Ingest goes on with two brokers of three (min.insync 2): 600 more
    // events accepted while the broker is down.
    let down_for = wait_until("600 events accepted with a broker down", PATIENCE, || {
        let n = accepted();
        async move { n >= at_kill + 600 }
    })
    .await;
    let accepted_while_down = accepted() - at_kill;
    down.restart().await;
    let restarted = killed.elapsed();
    for client in clients {
        client.await.unwrap();
    }
    // Back in every in-sync set before the lock is released.
    let caught_up = back_in_sync(&brokers, &env.events_topic).await;

    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    assert_eq!(log.accepted, EVENTS);
    // Exactly once: in Kafka (idempotent producer: a retried produce is one
    // record), and in ClickHouse through the processor.
    assert_eq!(
        records_in(&brokers, &env.events_topic).await as u64,
        EVENTS,
        "records on the events topic"
    );
    stored_once(&env, EVENTS, PATIENCE).await;
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.calls WHERE team_id = 'cluster'")
            .await,
        EVENTS
    );
    eprintln!(
        "FIGURES cluster-kafka: broker {victim} (leader of partition 0) killed, answering again {} later ({accepted_while_down} events \
         accepted meanwhile, the first 600 within {}, {} 503s in the whole run); back in sync {} after its restart; {EVENTS} of {EVENTS} \
         stored once",
        secs(restarted),
        secs(down_for),
        log.unavailable,
        secs(caught_up),
    );
    delete_cluster_topics(&brokers, &env.name).await;
}
