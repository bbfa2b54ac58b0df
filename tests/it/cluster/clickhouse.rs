//! ClickHouse cluster mode (`clickhouse.cluster`): two real 18.16 replicas
//! of one shard with ZooKeeper (`dev/cluster/clickhouse.sh`), addresses in
//! `TOLLGATE_TEST_CLUSTER_CLICKHOUSE` (replica 1, replica 2) and the
//! cluster's name in `TOLLGATE_TEST_CLUSTER_NAME`. Each test has its own
//! database on the cluster (and its `_dist` read database), dropped on the
//! cluster when it passes. The replica-kill test's topics are on the
//! single-node test Kafka (one fault at a time: `full_stack` kills a broker
//! as well); the two-processor tests' are on the cluster Kafka, replicated
//! 3/min.insync 2, where the consumer group, its coordinator and its
//! committed offsets live as in production.
//!
//! - migrations give replicated tables on both replicas and `Distributed`
//!   read tables, and a row written on one replica reaches the other, its
//!   rollup and the read tables; a block inserted twice (on either
//!   replica) is stored once;
//! - the latency report reads the read tables from the calls (exact) and
//!   from the minute rollups (histogram estimates above 1000 values);
//! - the processor folds while the replica it writes to is SIGKILLed and
//!   restarted: every call once on both replicas, and the cost report read
//!   through the API (served by the other replica meanwhile) the same
//!   before, during and after;
//! - two processors on different replicas share the partitions; one is
//!   SIGKILLed while the other's replica is not fetching (`SYSTEM STOP
//!   FETCHES`), and the other takes its partitions over within the session
//!   timeout, waits for its replica to catch up before it resumes, and
//!   every call is stored once.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::FutureRecord;

use super::kafka::delete_cluster_topics;
use super::{cluster_kafka, Killed, CLUSTER_FAULTS};
use crate::processor::{
    committed_at, log_of, processor_config, rewind_commits_at, traffic, Traffic, NO_ANNOUNCEMENTS,
};
use crate::support::kafka::producer_at;
use crate::support::{
    clickhouse_query_at, clickhouse_url, kafka_brokers, unique, Stall, TestEnv, PATIENCE,
};

/// `processor.session_timeout_ms` of the takeover test (the default).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The two replicas and the cluster's name, from the environment.
pub(super) struct Replicas {
    urls: Vec<String>,
    name: String,
}

fn required(var: &str, example: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{var} is not set: the cluster tests need the cluster stack's ClickHouse replicas \
             (`dev/stack up --cluster`, or `dev/cluster/clickhouse.sh up`), e.g. {var}={example}"
            )
        })
}

pub(super) fn replicas() -> Replicas {
    let urls: Vec<String> = required(
        "TOLLGATE_TEST_CLUSTER_CLICKHOUSE",
        "http://127.0.0.1:18123,http://127.0.0.1:18124",
    )
    .split(',')
    .map(|u| u.trim().to_string())
    .collect();
    assert_eq!(
        urls.len(),
        2,
        "TOLLGATE_TEST_CLUSTER_CLICKHOUSE must name two replicas (replica 1, replica 2), not {urls:?}"
    );
    Replicas {
        urls,
        name: required("TOLLGATE_TEST_CLUSTER_NAME", "tollgate"),
    }
}

impl Replicas {
    /// Replica `n` (1 or 2).
    pub(super) fn url(&self, n: usize) -> &str {
        &self.urls[n - 1]
    }

    pub(super) async fn query(&self, n: usize, sql: &str) -> String {
        clickhouse_query_at(self.url(n), sql).await
    }

    pub(super) async fn u64(&self, n: usize, sql: &str) -> u64 {
        let body = self.query(n, sql).await;
        body.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number from replica {n}: {body:?} ({sql})"))
    }

    /// Poll `sql` (one number) on replica `n` until it equals `want`; fail
    /// when it stops moving for 120 s without getting there.
    pub(super) async fn wait_for(&self, n: usize, sql: &str, want: u64) {
        self.wait_for_or(n, sql, want, &String::new).await;
    }

    /// [`Replicas::wait_for`], failing with `context()` (a processor's log)
    /// after the figures.
    pub(super) async fn wait_for_or(
        &self,
        n: usize,
        sql: &str,
        want: u64,
        context: &dyn Fn() -> String,
    ) {
        let mut stall = Stall::new(PATIENCE);
        loop {
            let got = self.u64(n, sql).await;
            if got == want {
                return;
            }
            assert!(
                !stall.stuck(got),
                "replica {n}: {got}, not {want}, from {sql}\n{}",
                context()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn answers(&self, n: usize) -> bool {
        reqwest::Client::new()
            .get(format!("{}/ping", self.url(n)))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// SIGKILL replica `n` (through the script that started it) and wait
    /// until it no longer answers; it is started again by
    /// [`Replicas::start`], or when the guard is dropped.
    pub(super) async fn kill(&self, n: usize) -> Killed {
        let down = Killed::kill("clickhouse.sh", n).await;
        let start = Instant::now();
        while self.answers(n).await {
            assert!(
                start.elapsed() < PATIENCE,
                "replica {n} at {} still answers after `dev/cluster/clickhouse.sh kill {n}` \
                 (was the cluster started from another checkout?)",
                self.url(n)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        down
    }

    /// Start replica `n` again (killed as `down`) and wait until it answers.
    pub(super) async fn start(&self, n: usize, down: Killed) {
        down.restart().await;
        let start = Instant::now();
        while !self.answers(n).await {
            assert!(start.elapsed() < PATIENCE, "replica {n} does not answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The test's databases on the cluster, and its topics when they are on
/// the cluster Kafka; dropped there when the test passed (its [`TestEnv`]
/// drops only what it made on the single-node stack).
pub(super) struct ClusterNamespace {
    url: String,
    cluster: String,
    database: String,
    /// The cluster Kafka's bootstrap list, when the topics are there.
    kafka: Option<String>,
}

impl Drop for ClusterNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: keeping databases {0} and {0}_dist on cluster {1}{2}",
                self.database,
                self.cluster,
                if self.kafka.is_some() {
                    format!(" and topics {}.* on the cluster Kafka", self.database)
                } else {
                    String::new()
                }
            );
            return;
        }
        let (url, cluster, database, kafka) = (
            self.url.clone(),
            self.cluster.clone(),
            self.database.clone(),
            self.kafka.clone(),
        );
        let cleanup = crate::support::on_a_runtime_of_its_own(async move {
            for db in [format!("{database}_dist"), database.clone()] {
                let sql = format!("DROP DATABASE IF EXISTS {db} ON CLUSTER {cluster}");
                if let Err(err) = reqwest::Client::new().post(&url).body(sql).send().await {
                    eprintln!("dropping {db} on cluster {cluster}: {err}");
                }
            }
            if let Some(brokers) = kafka {
                delete_cluster_topics(&brokers, &database).await;
            }
        });
        if !cleanup {
            eprintln!(
                "dropping {} on cluster {} failed",
                self.database, self.cluster
            );
        }
    }
}

/// Where a cluster test's topics are.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Topics {
    /// The single-node test Kafka (`TOLLGATE_TEST_KAFKA`).
    SingleNode,
    /// The cluster's three brokers (`TOLLGATE_TEST_CLUSTER_KAFKA`), every
    /// topic with 3 replicas and `min.insync.replicas` 2.
    Cluster,
}

/// A [`TestEnv`] whose `[clickhouse]` is the cluster (`url` = replica
/// `api_replica`, which `tollgate api` reads through) and whose topics are
/// where `topics` says, migrated there.
pub(super) async fn cluster_env(
    replicas: &Replicas,
    topics: Topics,
    label: &str,
    extra: &str,
    api_replica: usize,
) -> (TestEnv, ClusterNamespace) {
    let env = TestEnv::with_extra_config(label, extra).await;
    let mut config = std::fs::read_to_string(&env.config_path).unwrap();
    let kafka = (topics == Topics::Cluster).then(cluster_kafka);
    if let Some(brokers) = &kafka {
        let single = format!("brokers = \"{}\"\n", kafka_brokers());
        assert!(config.contains(&single), "{config}");
        // A crashed leader's partitions wait for its session to time out
        // and the in-sync set to shrink: a produce rides that out, never
        // fails (as `kafka::cluster_vars`).
        config = config.replace(
            &single,
            &format!(
                "brokers = \"{brokers}\"\nreplication_factor = 3\nmin_insync_replicas = 2\n\
                 message_timeout_ms = 300000\n"
            ),
        );
    }
    let single = format!(
        "url = \"{}\"\ndatabase = \"{}\"\n",
        clickhouse_url(),
        env.ch_database
    );
    assert!(config.contains(&single), "{config}");
    let clustered = config.replace(
        &single,
        &format!(
            "url = \"{}\"\ndatabase = \"{}\"\ncluster = \"{}\"\n",
            replicas.url(api_replica),
            env.ch_database,
            replicas.name
        ),
    );
    std::fs::write(&env.config_path, clustered).unwrap();
    let guard = ClusterNamespace {
        url: replicas.url(api_replica).to_string(),
        cluster: replicas.name.clone(),
        database: env.ch_database.clone(),
        kafka,
    };
    let out = env.tollgate(&["migrate"]).output().unwrap();
    assert!(
        out.status.success(),
        "migrate on cluster {}: {}",
        replicas.name,
        String::from_utf8_lossy(&out.stderr)
    );
    (env, guard)
}

/// The `[processor]` settings of a test's processors: consumer group
/// `group`, `extra`, and no pattern announcements on the events topic
/// (the tests count what is on it).
pub(super) fn processor_settings(group: &str, extra: &str) -> String {
    format!("{}{NO_ANNOUNCEMENTS}", processor_config(group, extra))
}

/// A `tollgate process`, SIGKILLed when dropped (a failing test leaves
/// none running).
pub(super) struct Processor(Child);

impl Processor {
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }

    pub(super) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tollgate process` writing to replica `replica`; stderr to `<label>.log`.
pub(super) fn spawn_processor(
    env: &TestEnv,
    replicas: &Replicas,
    replica: usize,
    label: &str,
) -> Processor {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.log_path(label))
        .unwrap();
    env.tollgate(&["process", "--folds", "calls"])
        .env("TOLLGATE_CLICKHOUSE__URL", replicas.url(replica))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Processor)
        .unwrap()
}

/// Produce every message of `traffic` to `topic` on `brokers` and wait
/// for their acks.
async fn produce(brokers: &str, topic: &str, traffic: &Traffic) {
    let producer = producer_at(brokers);
    let sends = traffic.messages.iter().map(|(key, payload)| {
        producer.send(FutureRecord::to(topic).key(key).payload(payload), PATIENCE)
    });
    for delivery in futures::future::join_all(sends).await {
        delivery.map_err(|(e, _)| e).unwrap();
    }
}

/// Poll until `calls` on replica `n` holds `want` rows, or has not grown
/// for 120 s; the last count.
pub(super) async fn wait_for_calls(replicas: &Replicas, n: usize, db: &str, want: u64) -> u64 {
    let mut stall = Stall::new(PATIENCE);
    loop {
        let got = replicas
            .u64(n, &format!("SELECT count() FROM {db}.calls"))
            .await;
        if got >= want || stall.stuck(got) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The logs of processors `process-a` and `process-b`.
fn logs_of_a_and_b(env: &TestEnv) -> String {
    format!(
        "A:\n{}\nB:\n{}",
        log_of(env, "process-a"),
        log_of(env, "process-b")
    )
}

/// Every call once on replica `n`: the count, distinct event ids and Kafka
/// positions, the token total, and the cost rollup's count; `log` (the
/// processors' logs) is shown when the rollup falls short.
pub(super) async fn assert_exactly_once(
    replicas: &Replicas,
    n: usize,
    db: &str,
    calls: u64,
    tokens: u64,
    log: &dyn Fn() -> String,
) {
    let q = |sql: &str| sql.replace("{db}", db);
    assert_eq!(
        replicas.u64(n, &q("SELECT count() FROM {db}.calls")).await,
        calls,
        "calls on replica {n}"
    );
    assert_eq!(
        replicas
            .u64(n, &q("SELECT uniqExact(event_id) FROM {db}.calls"))
            .await,
        calls,
        "distinct event ids on replica {n}"
    );
    assert_eq!(
        replicas
            .u64(
                n,
                &q("SELECT uniqExact(kafka_partition, kafka_offset) FROM {db}.calls")
            )
            .await,
        calls,
        "distinct Kafka positions on replica {n}"
    );
    assert_eq!(
        replicas
            .u64(n, &q("SELECT sum(input_tokens) FROM {db}.calls"))
            .await,
        tokens,
        "input tokens on replica {n}"
    );
    // Every generated call is completed or failed: all are billable.
    replicas
        .wait_for_or(
            n,
            &q("SELECT toUInt64(sum(calls)) FROM {db}.cost_daily"),
            calls,
            &|| format!("log:\n{}", log()),
        )
        .await;
}

/// The cost report by team over yesterday to tomorrow, through the API.
pub(super) async fn cost_report(env: &TestEnv) -> serde_json::Value {
    let today = Utc::now().date_naive();
    let from = (today - chrono::Duration::days(1)).to_string();
    let to = (today + chrono::Duration::days(1)).to_string();
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/reports/cost", env.api_url()))
        .query(&[
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("group_by", "team"),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "cost report: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

/// Read the cost report until it counts `calls` calls (the read follows
/// the rollup by a moment); the report.
pub(super) async fn cost_report_counting(env: &TestEnv, calls: u64) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let report = cost_report(env).await;
        if report["total"]["calls"].as_u64() == Some(calls) {
            return report;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the cost report counts {} calls, not {calls}: {report}",
            report["total"]["calls"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_on_the_cluster_make_replicated_tables_on_both_replicas_and_distributed_read_tables(
) {
    let replicas = replicas();
    // Both replicas up: the migrations run ON CLUSTER and both are read.
    let _all_up = CLUSTER_FAULTS.lock().await;
    let (env, _db) = cluster_env(&replicas, Topics::SingleNode, "clmig", "", 1).await;
    let db = env.ch_database.clone();
    let migrations = tollgate_processors::migrations::migrations().unwrap().len() as u64;
    for n in 1..=2 {
        let engines = replicas
            .query(
                n,
                &format!(
                    "SELECT name, engine FROM system.tables WHERE database = '{db}' \
                     AND engine != 'MaterializedView' ORDER BY name FORMAT TSV"
                ),
            )
            .await;
        let engines: Vec<(&str, &str)> = engines
            .lines()
            .map(|l| l.split_once('\t').unwrap())
            .collect();
        assert!(engines.len() >= 19, "replica {n}: {engines:?}");
        for (table, engine) in &engines {
            assert!(
                engine.starts_with("Replicated") && engine.ends_with("MergeTree"),
                "replica {n}: {table} is {engine}"
            );
        }
        for (table, engine) in [
            ("calls", "ReplicatedMergeTree"),
            ("cost_daily", "ReplicatedSummingMergeTree"),
            ("cost_daily_by_team", "ReplicatedSummingMergeTree"),
            ("cost_daily_by_user", "ReplicatedSummingMergeTree"),
            ("cost_daily_by_key", "ReplicatedSummingMergeTree"),
            ("latency_minute_hist", "ReplicatedAggregatingMergeTree"),
            ("latency_minute_calls", "ReplicatedAggregatingMergeTree"),
            ("latency_minute_buckets", "ReplicatedSummingMergeTree"),
            ("audit_search", "ReplicatedMergeTree"),
            ("fold_progress", "ReplicatedReplacingMergeTree"),
            ("schema_migrations", "ReplicatedMergeTree"),
        ] {
            assert!(
                engines.contains(&(table, engine)),
                "replica {n}: {table} is not {engine}: {engines:?}"
            );
        }
        // The ZooKeeper path is the shard's, the database's and the
        // table's; the replica name is this server's macro.
        let replica = replicas
            .query(
                n,
                &format!(
                    "SELECT zookeeper_path, replica_name FROM system.replicas \
                     WHERE database = '{db}' AND table = 'calls' FORMAT TSV"
                ),
            )
            .await;
        assert_eq!(
            replica.trim(),
            format!("/clickhouse/tables/01/{db}/calls\tch{n}"),
            "replica {n}"
        );
        // A Distributed read table for each replicated one but the
        // migrations' bookkeeping, with the same columns.
        let read = replicas
            .query(
                n,
                &format!(
                    "SELECT name, engine FROM system.tables WHERE database = '{db}_dist' \
                     ORDER BY name FORMAT TSV"
                ),
            )
            .await;
        let read: Vec<(&str, &str)> = read.lines().map(|l| l.split_once('\t').unwrap()).collect();
        let want: Vec<(&str, &str)> = engines
            .iter()
            .filter(|(t, _)| *t != "schema_migrations")
            .map(|(t, _)| (*t, "Distributed"))
            .collect();
        assert_eq!(read, want, "replica {n}");
        let columns = |database: String| {
            format!(
                "SELECT name, type FROM system.columns WHERE database = '{database}' \
                 AND table = 'calls' ORDER BY name FORMAT TSV"
            )
        };
        assert_eq!(
            replicas.query(n, &columns(format!("{db}_dist"))).await,
            replicas.query(n, &columns(db.clone())).await,
            "replica {n}: the read table's columns"
        );
        // The bookkeeping replicated too: every migration is recorded.
        replicas
            .wait_for(
                n,
                &format!("SELECT count() FROM {db}.schema_migrations"),
                migrations,
            )
            .await;
    }

    // A call written on replica 1 reaches replica 2, its cost rollup (the
    // view ran once, on replica 1) and the read tables of both.
    replicas
        .query(
            1,
            &format!(
                "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, provider, \
                 model, input_tokens, kafka_partition, kafka_offset) VALUES \
                 ('e-1', 'ai.call.completed', now(), 'org-1', 'team-a', 'openai', 'gpt-4o', 1234, 0, 0)"
            ),
        )
        .await;
    for (n, sql) in [
        (2, format!("SELECT sum(input_tokens) FROM {db}.calls")),
        (2, format!("SELECT sum(input_tokens) FROM {db}.cost_daily")),
        (
            2,
            format!("SELECT sum(input_tokens) FROM {db}_dist.cost_daily"),
        ),
        (
            2,
            format!("SELECT sum(input_tokens) FROM {db}.cost_daily_by_team"),
        ),
        (
            1,
            format!("SELECT sum(input_tokens) FROM {db}_dist.cost_daily_by_team"),
        ),
        (
            2,
            format!("SELECT sum(input_tokens) FROM {db}.cost_daily_by_user"),
        ),
        (
            1,
            format!("SELECT sum(input_tokens) FROM {db}_dist.cost_daily_by_user"),
        ),
        (
            2,
            format!("SELECT sum(input_tokens) FROM {db}.cost_daily_by_key"),
        ),
        (
            1,
            format!("SELECT sum(input_tokens) FROM {db}_dist.cost_daily_by_key"),
        ),
        (1, format!("SELECT sum(input_tokens) FROM {db}_dist.calls")),
    ] {
        replicas.wait_for(n, &sql, 1234).await;
    }

    // Replicated block deduplication: the same block again is dropped
    // (with its view's rows); a different block whose rollup rows are
    // identical is not.
    let insert = |event: &str| {
        format!(
            "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, provider, \
             model, input_tokens, kafka_partition, kafka_offset) VALUES \
             ('{event}', 'ai.call.completed', toDateTime('2026-11-02 10:00:00', 'UTC'), 'org-1', \
             'team-b', 'openai', 'gpt-4o', 10, 1, 0)"
        )
    };
    replicas.query(1, &insert("e-2")).await;
    replicas.query(2, &insert("e-2")).await;
    replicas.query(1, &insert("e-3")).await;
    for n in 1..=2 {
        for (sql, want) in [
            (
                format!("SELECT count() FROM {db}.calls WHERE team_id = 'team-b'"),
                2,
            ),
            (
                format!("SELECT sum(input_tokens) FROM {db}.cost_daily WHERE team_id = 'team-b'"),
                20,
            ),
            (
                format!(
                    "SELECT sum(input_tokens) FROM {db}.cost_daily_by_team WHERE team_id = 'team-b'"
                ),
                20,
            ),
            (
                format!(
                    "SELECT sum(input_tokens) FROM {db}.cost_daily_by_user WHERE team_id = 'team-b'"
                ),
                20,
            ),
            (
                format!(
                    "SELECT sum(input_tokens) FROM {db}.cost_daily_by_key WHERE team_id = 'team-b'"
                ),
                20,
            ),
        ] {
            replicas.wait_for(n, &sql, want).await;
        }
    }

    // Migrating again applies nothing and keeps the read tables.
    let created = format!(
        "SELECT name, metadata_modification_time FROM system.tables \
         WHERE database = '{db}_dist' ORDER BY name FORMAT TSV"
    );
    let before = replicas.query(1, &created).await;
    let out = env.tollgate(&["migrate"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("clickhouse: applied"), "{stdout}");
    assert_eq!(
        replicas.query(1, &created).await,
        before,
        "the read tables were re-created"
    );
}

/// The latency report through the `Distributed` read tables, from both
/// sources (`latency_source`): 2,500 calls written on replica 1, read by an
/// API on replica 2. From the calls every percentile is numpy's exactly;
/// from the minute rollups the group is a histogram estimate within 1/256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_report_reads_the_cluster_from_the_calls_and_from_the_rollups() {
    use crate::latency_fixture::type7;
    let replicas = replicas();
    // Both replicas up: written on one, read on the other.
    let _all_up = CLUSTER_FAULTS.lock().await;
    // 2026-01-01T00:00:00Z, and 2,500 calls over its hour: durations
    // 100..1096 ms, every other call streamed with a TTFT of 10..40 ms.
    let base: i64 = 1_767_225_600;
    let n: u64 = 2_500;
    let durations: Vec<f64> = (0..n).map(|i| (100 + i % 997) as f64).collect();
    let ttfts: Vec<f64> = (0..n)
        .filter(|i| i % 2 == 1)
        .map(|i| (10 + i % 31) as f64)
        .collect();
    // From the calls (the totals sorted, then counted per value), and
    // from the rollups.
    for (label, setting, method) in [
        ("cllat_calls", "latency_count_min_calls = 1000000", "exact"),
        ("cllat_counted", "latency_count_min_calls = 0", "exact"),
        ("cllat_rollups", "latency_sort_max_calls = 0", "histogram"),
    ] {
        let (mut env, _db) = cluster_env(&replicas, Topics::SingleNode, label, "", 2).await;
        let db = env.ch_database.clone();
        let config = std::fs::read_to_string(&env.config_path).unwrap();
        let cluster = format!("cluster = \"{}\"\n", replicas.name);
        assert!(config.contains(&cluster), "{config}");
        let config = config.replacen(&cluster, &format!("{cluster}{setting}\n"), 1);
        std::fs::write(&env.config_path, config).unwrap();
        replicas
            .query(
                1,
                &format!(
                    "INSERT INTO {db}.calls (event_id, kind, occurred_at, org_id, team_id, provider, \
                     model, duration_ms, has_ttft, ttft_ms, outcome, kafka_partition, kafka_offset) \
                     SELECT concat('e-', toString(number)), 'ai.call.completed', \
                     toDateTime({base} + number % 3600, 'UTC'), 'org-1', 'team-a', 'openai', 'gpt-4o', \
                     100 + number % 997, number % 2, 10 + number % 31, 'success', 0, number \
                     FROM system.numbers LIMIT {n}"
                ),
            )
            .await;
        for sql in [
            format!("SELECT count() FROM {db}_dist.calls"),
            format!("SELECT countMerge(calls) FROM {db}_dist.latency_minute_calls"),
            format!("SELECT sum(calls) FROM {db}_dist.latency_minute_buckets WHERE metric = 0"),
        ] {
            replicas.wait_for(2, &sql, n).await;
        }
        env.start_api().await;
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/reports/latency", env.api_url()))
            .query(&[
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2026-01-01T01:00:00Z"),
                ("group_by", "provider,model"),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let report: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "{label}: {status} {report}");
        let total = &report["groups"][0]["total"];
        assert_eq!(total["count"], n, "{label}: {total}");
        assert_eq!(total["ttft_count"], ttfts.len(), "{label}: {total}");
        for (field, values) in [("duration_ms", &durations), ("ttft_ms", &ttfts)] {
            let got = &total[field];
            assert_eq!(got["method"], method, "{label} {field}: {got}");
            for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
                let value = got[name].as_f64().unwrap();
                let exact = type7(values, q);
                if method == "exact" {
                    assert_eq!(value, exact, "{label} {field} {name}");
                } else {
                    assert!(
                        (value - exact).abs() <= exact / 256.0 + 0.000_5,
                        "{label} {field} {name}: {value} against numpy's {exact}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_folds_every_call_once_while_the_replica_it_writes_to_is_killed_and_restarted(
) {
    let _faults = CLUSTER_FAULTS.lock().await;
    let replicas = replicas();
    let group = unique("grp");
    // The API reads through replica 2; the processor writes to replica 1.
    let (mut env, _db) = cluster_env(
        &replicas,
        Topics::SingleNode,
        "clkill",
        &processor_settings(&group, "batch_max_wait_ms = 200"),
        2,
    )
    .await;
    let db = env.ch_database.clone();
    env.start_api().await;
    let start = Utc::now() - chrono::Duration::hours(1);
    let first = traffic(3_000, start, rand::random());
    let second = traffic(3_000, start + chrono::Duration::minutes(5), rand::random());
    let (calls, tokens) = (
        first.calls + second.calls,
        first.input_tokens + second.input_tokens,
    );

    produce(&kafka_brokers(), &env.events_topic, &first).await;
    let mut processor = spawn_processor(&env, &replicas, 1, "process");
    for n in 1..=2 {
        let got = wait_for_calls(&replicas, n, &db, first.calls).await;
        assert_eq!(
            got,
            first.calls,
            "replica {n}; log:\n{}",
            log_of(&env, "process")
        );
    }
    let before = cost_report_counting(&env, first.calls).await;

    // Replica 1 dies; the second half arrives while it is down.
    let down = replicas.kill(1).await;
    let killed = Instant::now();
    produce(&kafka_brokers(), &env.events_topic, &second).await;
    let deadline = Instant::now() + PATIENCE;
    while !log_of(&env, "process").contains("insert failed, retrying") {
        assert!(
            Instant::now() < deadline,
            "the processor never failed an insert with replica 1 down; log:\n{}",
            log_of(&env, "process")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep it down a while: the processor keeps retrying.
    while killed.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reports are served by replica 2 meanwhile, and nothing moved.
    let during = cost_report(&env).await;
    assert_eq!(during, before, "the cost report while replica 1 is down");
    replicas.start(1, down).await;
    let down = killed.elapsed();

    for n in 1..=2 {
        let got = wait_for_calls(&replicas, n, &db, calls).await;
        assert_eq!(got, calls, "replica {n}; log:\n{}", log_of(&env, "process"));
        assert_exactly_once(&replicas, n, &db, calls, tokens, &|| {
            log_of(&env, "process")
        })
        .await;
    }
    let after = cost_report_counting(&env, calls).await;
    assert_eq!(
        after["total"]["input_tokens"].as_u64(),
        Some(tokens),
        "{after}"
    );
    // The first half's groups are unchanged in sum: the report after is
    // the report before plus the second half, team by team.
    let by_team = |report: &serde_json::Value| -> std::collections::BTreeMap<String, u64> {
        report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["key"]["team"].as_str().unwrap().to_string(),
                    g["calls"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let second_by_team = {
        let mut out = std::collections::BTreeMap::<String, u64>::new();
        for (team, payload) in &second.messages {
            let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
            if event["kind"].as_str().unwrap().starts_with("ai.call.") {
                *out.entry(team.clone()).or_default() += 1;
            }
        }
        out
    };
    let mut expected = by_team(&before);
    for (team, n) in second_by_team {
        *expected.entry(team).or_default() += n;
    }
    assert_eq!(
        by_team(&after),
        expected,
        "calls per team after the restart"
    );
    processor.kill();
    eprintln!(
        "replica 1 down {:.1} s; {calls} calls stored once on both replicas",
        down.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_on_the_other_replica_takes_over_a_killed_ones_partitions_and_counts_stay_exact(
) {
    let _faults = CLUSTER_FAULTS.lock().await;
    let replicas = replicas();
    let group = unique("grp");
    let brokers = cluster_kafka();
    let (env, _ns) = cluster_env(
        &replicas,
        Topics::Cluster,
        "cltakeover",
        &processor_settings(&group, "batch_max_wait_ms = 200\nbatch_max_rows = 500"),
        1,
    )
    .await;
    let db = env.ch_database.clone();
    let start = Utc::now() - chrono::Duration::hours(1);
    let first = traffic(4_000, start, rand::random());
    let second = traffic(4_000, start + chrono::Duration::minutes(5), rand::random());
    let (calls, tokens) = (
        first.calls + second.calls,
        first.input_tokens + second.input_tokens,
    );

    // Two processors in one group, each writing to its own replica.
    let mut a = spawn_processor(&env, &replicas, 1, "process-a");
    let mut b = spawn_processor(&env, &replicas, 2, "process-b");
    for label in ["process-a", "process-b"] {
        let deadline = Instant::now() + PATIENCE;
        while !log_of(&env, label).contains("partitions assigned") {
            assert!(
                Instant::now() < deadline,
                "{label} got no partitions; log:\n{}",
                log_of(&env, label)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    produce(&brokers, &env.events_topic, &first).await;
    let partial = wait_for_calls(&replicas, 1, &db, first.calls / 2).await;
    assert!(
        partial >= first.calls / 2,
        "log:\n{}",
        log_of(&env, "process-a")
    );

    // A dies mid-stream; B must take its partitions over after A's
    // session expires, resuming from what replica 2 holds once it fetched
    // what A wrote to replica 1.
    let assignments_before = log_of(&env, "process-b")
        .matches("partitions assigned")
        .count();
    // Replica 2 stops fetching what A writes to replica 1, so when B takes
    // over, A's last parts are not on B's replica yet: B must wait for them
    // (the fence syncs its replica) instead of resuming below them and
    // storing those rows twice.
    replicas
        .query(2, &format!("SYSTEM STOP FETCHES {db}.calls"))
        .await;
    a.kill();
    let killed = Instant::now();
    // What A stored that replica 2 has not fetched.
    let behind = replicas
        .u64(1, &format!("SELECT count() FROM {db}.calls"))
        .await
        .saturating_sub(
            replicas
                .u64(2, &format!("SELECT count() FROM {db}.calls"))
                .await,
        );
    produce(&brokers, &env.events_topic, &second).await;
    let deadline = Instant::now() + SESSION_TIMEOUT + PATIENCE;
    while log_of(&env, "process-b")
        .matches("partitions assigned")
        .count()
        <= assignments_before
    {
        assert!(
            Instant::now() < deadline,
            "process-b was never assigned A's partitions; log:\n{}",
            log_of(&env, "process-b")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let taken_over = killed.elapsed();
    // Hold replica 2 behind a while after the takeover, then let it fetch.
    while killed.elapsed() < taken_over + Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    replicas
        .query(2, &format!("SYSTEM START FETCHES {db}.calls"))
        .await;
    let got = wait_for_calls(&replicas, 2, &db, calls).await;
    assert_eq!(got, calls, "log of B:\n{}", log_of(&env, "process-b"));
    for n in 1..=2 {
        assert_eq!(wait_for_calls(&replicas, n, &db, calls).await, calls);
        assert_exactly_once(&replicas, n, &db, calls, tokens, &|| logs_of_a_and_b(&env)).await;
    }
    b.kill();
    eprintln!(
        "takeover {:.1} s after the SIGKILL (session timeout {:?}), B's replica {behind} calls \
         behind A's then; {calls} calls once on both replicas",
        taken_over.as_secs_f64(),
        SESSION_TIMEOUT
    );
}

/// The crash window made deterministic on a cluster: A stored every call
/// on replica 1, replica 2 has fetched none of it (`SYSTEM STOP FETCHES`),
/// and the group's committed offsets are lost. B, on replica 2, reads the
/// topic from the start: it must not resume from what replica 2 holds (it
/// would store every call again) but wait until replica 2 has fetched A's
/// parts, then skip them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_on_a_lagging_replica_waits_for_it_and_stores_nothing_twice() {
    let _faults = CLUSTER_FAULTS.lock().await;
    let replicas = replicas();
    let group = unique("grp");
    let brokers = cluster_kafka();
    let (env, _ns) = cluster_env(
        &replicas,
        Topics::Cluster,
        "cllag",
        &processor_settings(&group, "batch_max_wait_ms = 200"),
        1,
    )
    .await;
    let db = env.ch_database.clone();
    let start = Utc::now() - chrono::Duration::hours(1);
    let first = traffic(3_000, start, rand::random());
    let second = traffic(1_000, start + chrono::Duration::minutes(5), rand::random());
    let (calls, tokens) = (
        first.calls + second.calls,
        first.input_tokens + second.input_tokens,
    );

    replicas
        .query(2, &format!("SYSTEM STOP FETCHES {db}.calls"))
        .await;
    produce(&brokers, &env.events_topic, &first).await;
    let mut a = spawn_processor(&env, &replicas, 1, "process-a");
    let got = wait_for_calls(&replicas, 1, &db, first.calls).await;
    assert_eq!(got, first.calls, "log:\n{}", log_of(&env, "process-a"));
    crate::support::signal(a.0.id(), "TERM");
    assert!(crate::processor::wait_exit(&mut a.0, PATIENCE)
        .await
        .success());
    assert_eq!(
        replicas
            .u64(2, &format!("SELECT count() FROM {db}.calls"))
            .await,
        0,
        "replica 2 fetched while its fetches were stopped"
    );
    rewind_commits_at(&brokers, &group, &env.events_topic, 4);

    produce(&brokers, &env.events_topic, &second).await;
    let mut b = spawn_processor(&env, &replicas, 2, "process-b");
    let deadline = Instant::now() + PATIENCE;
    while !log_of(&env, "process-b").contains("partitions assigned") {
        assert!(
            Instant::now() < deadline,
            "process-b got no partitions; log:\n{}",
            log_of(&env, "process-b")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // B is held at the fence while replica 2 cannot fetch: nothing stored.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        replicas
            .u64(2, &format!("SELECT count() FROM {db}.calls"))
            .await,
        0,
        "B stored calls before its replica caught up; log:\n{}",
        log_of(&env, "process-b")
    );
    replicas
        .query(2, &format!("SYSTEM START FETCHES {db}.calls"))
        .await;
    for n in 1..=2 {
        let got = wait_for_calls(&replicas, n, &db, calls).await;
        assert_eq!(
            got,
            calls,
            "replica {n}; log:\n{}",
            log_of(&env, "process-b")
        );
        assert_exactly_once(&replicas, n, &db, calls, tokens, &|| logs_of_a_and_b(&env)).await;
    }
    assert!(
        log_of(&env, "process-b")
            .contains("this replica caught up with the parts the other replicas wrote"),
        "log:\n{}",
        log_of(&env, "process-b")
    );
    let messages = (first.messages.len() + second.messages.len()) as i64;
    let deadline = Instant::now() + PATIENCE;
    while committed_at(&brokers, &group, &env.events_topic, 4)
        .values()
        .sum::<i64>()
        != messages
    {
        assert!(
            Instant::now() < deadline,
            "B's commits do not cover every message"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.kill();
}
