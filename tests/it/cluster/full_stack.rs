//! The whole cluster stack at once: topics on the three brokers
//! (replication 3, `min.insync.replicas` 2) and ClickHouse in cluster mode
//! on the two replicas. Steady HTTP ingest through the real `tollgate
//! ingest` into a `tollgate process` writing to replica 1, `tollgate api`
//! reading through replica 2; a broker is SIGKILLed and restarted, then
//! replica 1, while ingest goes on. Every accepted event is stored exactly
//! once, and the cost report says the same of the first batch before and
//! after the faults (docs/deployment.md, "Kafka" and "A replica down").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_contract::{Event, Outcome};

use super::clickhouse::{
    assert_exactly_once, cluster_env, cost_report, cost_report_counting, processor_settings,
    replicas, spawn_processor, wait_for_calls, Processor, Replicas, Topics,
};
use super::kafka::{back_in_sync, partitions_of};
use super::{cluster_kafka, Killed, CLUSTER_FAULTS};
use crate::faults::kafka_outage::{
    last_line, paced_clients, paced_clients_until, records_in, secs, spawn_with, wait_until,
    ClientLog, Processes,
};
use crate::processor::log_of;
use crate::support::events::{call_event, usage};
use crate::support::{d, signal, unique, wait_http, PATIENCE};

/// gpt-4o-mini in the default price catalog (`migrations/prices/`), USD
/// per input and per output token.
const INPUT_PRICE: &str = "0.00000015";
const OUTPUT_PRICE: &str = "0.0000006";

/// `n` gpt-4o-mini calls of teams `<prefix>-0` to `<prefix>-4`, their
/// token counts varying with the position.
fn calls(prefix: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            call_event(
                &format!("{prefix}-{}", i % 5),
                "openai",
                "gpt-4o-mini",
                Utc::now(),
                usage(100 + (i % 97) as u64, 0, 0, 20 + (i % 13) as u64, 0),
                Outcome::Success,
            )
        })
        .collect()
}

/// What the cost report says of one team.
#[derive(Debug, Default, PartialEq)]
struct Sums {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost: Decimal,
}

/// Per team, what `events` must add up to.
fn expected(events: &[Event]) -> BTreeMap<String, Sums> {
    let (input_price, output_price) = (d(INPUT_PRICE), d(OUTPUT_PRICE));
    let mut out = BTreeMap::<String, Sums>::new();
    for event in events {
        let usage = &event.call.as_ref().unwrap().usage;
        let sums = out.entry(event.team_id.clone()).or_default();
        sums.calls += 1;
        sums.input_tokens += usage.input_tokens;
        sums.output_tokens += usage.output_tokens;
        sums.cost += input_price * Decimal::from(usage.input_tokens)
            + output_price * Decimal::from(usage.output_tokens);
    }
    out
}

/// Per team, what a cost report grouped by team says; only the teams
/// whose name starts with `prefix`.
fn reported(report: &Value, prefix: &str) -> BTreeMap<String, Sums> {
    report["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {report}"))
        .iter()
        .filter(|g| g["key"]["team"].as_str().unwrap().starts_with(prefix))
        .map(|g| {
            (
                g["key"]["team"].as_str().unwrap().to_string(),
                Sums {
                    calls: g["calls"].as_u64().unwrap(),
                    input_tokens: g["input_tokens"].as_u64().unwrap(),
                    output_tokens: g["output_tokens"].as_u64().unwrap(),
                    cost: d(g["cost"].as_str().unwrap()),
                },
            )
        })
        .collect()
}

/// Every call once through the `Distributed` read table as replica `n`
/// serves it, and the output tokens and cost of `calls` on its own
/// replica (what [`assert_exactly_once`] does not look at).
async fn assert_totals(replicas: &Replicas, n: usize, db: &str, want: &BTreeMap<String, Sums>) {
    let calls: u64 = want.values().map(|s| s.calls).sum();
    let output: u64 = want.values().map(|s| s.output_tokens).sum();
    let cost: Decimal = want.values().map(|s| s.cost).sum();
    for table in [format!("{db}_dist.calls"), format!("{db}.calls")] {
        let row = replicas
            .query(
                n,
                &format!(
                    "SELECT count(), uniqExact(event_id), sum(output_tokens), toString(sum(cost)) \
                     FROM {table} FORMAT TSV"
                ),
            )
            .await;
        let fields: Vec<&str> = row.trim().split('\t').collect();
        assert_eq!(
            (
                fields[0].parse::<u64>().unwrap(),
                fields[1].parse::<u64>().unwrap(),
                fields[2].parse::<u64>().unwrap(),
                d(fields[3])
            ),
            (calls, calls, output, cost),
            "count, distinct ids, output tokens and cost of {table} on replica {n}"
        );
    }
}

/// Wait until the clients have had `n` more events accepted than `from`;
/// how long that took.
async fn accepted_beyond(
    log: &std::sync::Mutex<ClientLog>,
    from: u64,
    n: u64,
    what: &str,
) -> std::time::Duration {
    wait_until(what, PATIENCE, || {
        let accepted = log.lock().unwrap().accepted;
        async move { accepted >= from + n }
    })
    .await
}

/// SIGKILL replica 1 while no insert of `processor` runs on it: the
/// processor is frozen (SIGSTOP) at a moment when none does, the replica
/// killed, the processor thawed, and it finds the replica gone at its next
/// insert. A kill in the middle of an insert can land between the part of
/// `calls` and the parts of its materialized views, leaving the rollups
/// short of the facts for good: a known limitation of 18.16's inserts
/// (docs/processor.md, "Guarantees"), seen here once in three runs before
/// this (`cost_daily` 80 calls short of `calls` on both replicas).
async fn kill_between_inserts(replicas: &Replicas, processor: &Processor, db: &str) -> Killed {
    let running = format!(
        "SELECT count() FROM system.processes WHERE lower(query) LIKE 'insert into %' \
         AND position(http_user_agent, '{}') = 1",
        tollgate_control::clickhouse::user_agent_tag(db)
    );
    let start = Instant::now();
    loop {
        signal(processor.pid(), "STOP");
        if replicas.u64(1, &running).await == 0 {
            let down = replicas.kill(1).await;
            signal(processor.pid(), "CONT");
            return down;
        }
        signal(processor.pid(), "CONT");
        assert!(
            start.elapsed() < PATIENCE,
            "the processor was inserting into replica 1 at every look for {PATIENCE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// It failed in two full runs on 2026-12-02/03 ("the processor failing two
// attempts to insert into replica 1: not within 120s", the processor
// having stored nothing after the first 1,400 events) and was quarantined;
// the cause was not found, and it passed the 29 runs since, one of them in
// a full run. When it fails, the panic says whether the processor stopped
// at the broker's death, and the processor's log (kept with the TestEnv)
// says what its loop awaited (`the consumer loop is still ...`) or what
// each partition's fetcher did (`stalled: ...`): docs/processor.md,
// "Stalls".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steady_ingest_through_a_broker_then_a_replica_killed_and_restarted_stores_every_event_once(
) {
    const FIRST: usize = 1_000;
    let _faults = CLUSTER_FAULTS.lock().await;
    let brokers = cluster_kafka();
    let replicas = replicas();
    let group = unique("grp");
    // The API reads through replica 2; the processor writes to replica 1.
    let (mut env, _ns) = cluster_env(
        &replicas,
        Topics::Cluster,
        "clfull",
        &processor_settings(&group, "batch_max_wait_ms = 200"),
        2,
    )
    .await;
    let db = env.ch_database.clone();
    let key = last_line(&env.run(&["keys", "create", "--name", "faults", "--role", "ingest"]));
    let _ingest = Processes(vec![spawn_with(&env, "ingest", &["ingest"], &[])]);
    wait_http(
        &format!("{}/healthz", env.ingest_url()),
        PATIENCE,
        &env.log_path("ingest"),
    )
    .await;
    let mut processor = spawn_processor(&env, &replicas, 1, "process");
    env.start_api().await;

    // The first batch, stored on both replicas, and its report.
    let first = calls("first", FIRST);
    let (clients, first_log) = paced_clients(&env, &key, first.clone());
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(first_log.lock().unwrap().accepted, FIRST as u64);
    for n in 1..=2 {
        let got = wait_for_calls(&replicas, n, &db, FIRST as u64).await;
        assert_eq!(
            got,
            FIRST as u64,
            "replica {n}; log:\n{}",
            log_of(&env, "process")
        );
    }
    let before = cost_report_counting(&env, FIRST as u64).await;
    assert_eq!(reported(&before, "first-"), expected(&first), "{before}");

    // Steady ingest from here to the end: more events than it can send.
    let stop = Arc::new(AtomicBool::new(false));
    let pool = calls("steady", 60_000);
    let (clients, log, unsent) = paced_clients_until(&env, &key, pool.clone(), stop.clone());
    let accepted = || log.lock().unwrap().accepted;
    accepted_beyond(&log, 0, 300, "300 events accepted").await;

    // A broker dies: the leader of the events topic's first partition.
    let victim = partitions_of(&brokers, &env.events_topic).await[0].0;
    let broker_down = Killed::kill("kafka.sh", victim).await;
    let broker_killed = Instant::now();
    let at_broker_kill = accepted();
    let broker_500 = accepted_beyond(
        &log,
        at_broker_kill,
        500,
        "500 events accepted with a broker down",
    )
    .await;
    let accepted_broker_down = accepted() - at_broker_kill;
    broker_down.restart().await;
    let broker_restarted = broker_killed.elapsed();
    let broker_in_sync = back_in_sync(&brokers, &env.events_topic).await;
    accepted_beyond(
        &log,
        accepted(),
        300,
        "300 events accepted after the broker's return",
    )
    .await;
    // The processor went on through the broker's death: everything
    // accepted until its restart is stored (before replica 1 is touched).
    let through_broker = FIRST as u64 + at_broker_kill + accepted_broker_down;
    let got = wait_for_calls(&replicas, 1, &db, through_broker).await;
    assert!(
        got >= through_broker,
        "replica 1 holds {got} calls, not the {through_broker} accepted until the broker's \
         restart; the processor's last log lines:\n{}",
        tail(&log_of(&env, "process"), 40)
    );

    // Then the replica the processor writes to. The processor's failed
    // attempts: the insert, then (before each retry) the read of what the
    // replica already holds.
    let failures = || {
        let log = log_of(&env, "process");
        log.matches("insert failed, retrying").count()
            + log
                .matches("cannot read stored offsets before retrying the insert")
                .count()
    };
    let failures_before = failures();
    let replica_down = kill_between_inserts(&replicas, &processor, &db).await;
    let replica_killed = Instant::now();
    let at_replica_kill = accepted();
    // Down while ingest takes 1,500 events, and the processor retrying
    // (two failed attempts at least).
    let started = Instant::now();
    while failures() < failures_before + 2 {
        assert!(
            started.elapsed() < PATIENCE,
            "the processor did not fail two attempts to insert into replica 1 within \
             {PATIENCE:?}; its last log lines:\n{}",
            tail(&log_of(&env, "process"), 40)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    accepted_beyond(
        &log,
        at_replica_kill,
        1_500,
        "1,500 events accepted with replica 1 down",
    )
    .await;
    let accepted_replica_down = accepted() - at_replica_kill;
    // Reports are served by replica 2 meanwhile; the first batch's teams
    // are as they were.
    let during = cost_report(&env).await;
    assert_eq!(
        reported(&during, "first-"),
        reported(&before, "first-"),
        "the first batch's report with replica 1 down: {during}"
    );
    replicas.start(1, replica_down).await;
    let replica_restarted = replica_killed.elapsed();
    accepted_beyond(
        &log,
        accepted(),
        300,
        "300 events accepted after the replica's return",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    // What was sent: the first batch and every steady batch taken.
    let left: usize = unsent.lock().unwrap().iter().map(Vec::len).sum();
    let steady_sent = pool.len() - left;
    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    assert_eq!(
        log.accepted, steady_sent as u64,
        "accepted of the steady events sent"
    );
    let unsent_ids: std::collections::HashSet<_> = unsent
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|e| e.event_id)
        .collect();
    let mut sent = first.clone();
    sent.extend(
        pool.into_iter()
            .filter(|e| !unsent_ids.contains(&e.event_id)),
    );
    let total = sent.len() as u64;
    let want = expected(&sent);
    let input_tokens: u64 = want.values().map(|s| s.input_tokens).sum();

    // Once in Kafka (idempotent producer: a retried produce is one record).
    assert_eq!(
        records_in(&brokers, &env.events_topic).await as u64,
        total,
        "records on the events topic"
    );
    // Once on each replica, in its own table and through the read table
    // (which reads one replica of the shard, not always its own: both
    // must have fetched everything first).
    for n in 1..=2 {
        let got = wait_for_calls(&replicas, n, &db, total).await;
        assert_eq!(got, total, "replica {n}; log:\n{}", log_of(&env, "process"));
    }
    for n in 1..=2 {
        assert_exactly_once(&replicas, n, &db, total, input_tokens, &|| {
            log_of(&env, "process")
        })
        .await;
        assert_totals(&replicas, n, &db, &want).await;
    }
    // The report after: the first batch as before, and the whole traffic.
    let after = cost_report_counting(&env, total).await;
    assert_eq!(
        reported(&after, "first-"),
        reported(&before, "first-"),
        "the first batch's report after the faults"
    );
    let mut reported_after = reported(&after, "first-");
    reported_after.extend(reported(&after, "steady-"));
    assert_eq!(reported_after, want, "{after}");
    assert_eq!(
        d(after["total"]["cost"].as_str().unwrap()),
        want.values().map(|s| s.cost).sum::<Decimal>()
    );
    processor.kill();
    eprintln!(
        "FIGURES cluster-full: broker {victim} (leader of partition 0) down {} ({accepted_broker_down} events accepted \
         meanwhile, the first 500 within {}), back in sync {} after its restart; replica 1 down {} ({accepted_replica_down} accepted meanwhile); \
         {} 503s; {total} events ({FIRST} before the faults) stored once on both replicas",
        secs(broker_restarted),
        secs(broker_500),
        secs(broker_in_sync),
        secs(replica_restarted),
        log.unavailable,
    );
}
