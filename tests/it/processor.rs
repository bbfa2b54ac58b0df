//! The calls processor against real Kafka and ClickHouse: effectively-once
//! across SIGKILLs, dead letters, graceful shutdown, and re-runnable
//! migrations.

use crate::cost::forget_migration;
use crate::support;

use support::kafka::{produce_all, producer};

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, Offset};
use support::{kafka_brokers, signal, unique, TestEnv};
use tollgate_contract::{
    Call, Event, EventKind, Operation, Outcome, ProviderError, Usage, SCHEMA_VERSION,
};
use uuid::Uuid;

/// Generated traffic: payloads to produce and what ClickHouse must end up with.
pub(crate) struct Traffic {
    /// (key, JSON payload)
    pub(crate) messages: Vec<(String, Vec<u8>)>,
    pub(crate) calls: u64,
    pub(crate) input_tokens: u64,
    /// Calls whose input is marked estimated (failed streams).
    pub(crate) estimated_inputs: u64,
}

/// `n` messages: AI-call events (about 1 in 500 is an `admin.*` event, which
/// has no row), time-ordered from `start`, 37 teams.
pub(crate) fn traffic(n: usize, start: DateTime<Utc>, seed: u64) -> Traffic {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Traffic {
        messages: Vec::with_capacity(n),
        calls: 0,
        input_tokens: 0,
        estimated_inputs: 0,
    };
    for i in 0..n {
        let team = format!("team-{}", i % 37);
        let occurred_at = start + chrono::Duration::milliseconds(i as i64 * 50);
        let event = if rng.random_ratio(1, 500) {
            Event {
                schema_version: SCHEMA_VERSION,
                event_id: Uuid::now_v7(),
                kind: tollgate_contract::EventKind::admin("admin.price.updated"),
                occurred_at,
                org_id: "org-1".into(),
                team_id: team.clone(),
                user_id: "admin".into(),
                api_key_id: String::new(),
                call: None,
                admin: Some(serde_json::json!({"model": "gpt-4o", "input_per_mtok": "2.5"})),
                tags: BTreeMap::new(),
                reported_cost: None,
            }
        } else {
            let failed = rng.random_ratio(1, 10);
            let input_tokens = rng.random_range(1..5000u64);
            out.calls += 1;
            out.input_tokens += input_tokens;
            let estimated = failed && i % 3 == 0;
            out.estimated_inputs += u64::from(estimated);
            Event {
                schema_version: SCHEMA_VERSION,
                event_id: Uuid::now_v7(),
                kind: if failed {
                    EventKind::CallFailed
                } else {
                    EventKind::CallCompleted
                },
                occurred_at,
                org_id: "org-1".into(),
                team_id: team.clone(),
                user_id: format!("user-{}", rng.random_range(0..200)),
                api_key_id: format!("key-{}", i % 11),
                call: Some(Call {
                    call_id: format!("call-{i}"),
                    trace_id: format!("trace-{i}"),
                    span_id: String::new(),
                    provider: ["openai", "anthropic"][i % 2].into(),
                    model: ["gpt-4o", "claude-sonnet-4"][i % 2].into(),
                    requested_model: String::new(),
                    attempt: 1,
                    fallback_of: String::new(),
                    operation: Operation::Chat,
                    stream: i % 3 == 0,
                    duration_ms: rng.random_range(100..20_000),
                    ttft_ms: (i % 3 == 0).then_some(50),
                    usage: Usage {
                        input_tokens,
                        input_tokens_estimated: estimated,
                        output_tokens: rng.random_range(0..2000),
                        ..Usage::default()
                    },
                    outcome: if failed {
                        Outcome::Error
                    } else {
                        Outcome::Success
                    },
                    http_status: if failed { 500 } else { 200 },
                    error: failed.then(|| ProviderError {
                        error_type: "server_error".into(),
                        message: "upstream failed".into(),
                        signature: None,
                    }),
                    cache_hit: false,
                    prompt_sha256: None,
                    response_sha256: None,
                    recovery: None,
                }),
                admin: None,
                tags: BTreeMap::from([("feature".to_string(), "search".to_string())]),
                reported_cost: None,
            }
        };
        out.messages
            .push((team, serde_json::to_vec(&event).unwrap()));
    }
    out
}

/// Produce one message to partition 0 and return its offset.
async fn produce_one(producer: &FutureProducer, topic: &str, payload: &[u8]) -> i64 {
    let delivery = producer
        .send(
            FutureRecord::to(topic)
                .key("team-x")
                .payload(payload)
                .partition(0),
            crate::support::PATIENCE,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    delivery.offset
}

pub(crate) fn processor_config(group: &str, extra: &str) -> String {
    format!("[processor]\ngroup_id = \"{group}\"\n{extra}\n")
}

/// A child's log, without ANSI colour codes.
pub(crate) fn log_of(env: &TestEnv, label: &str) -> String {
    let raw = std::fs::read_to_string(env.log_path(label)).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until the `label` process's log holds `line` (at most
/// [`support::PATIENCE`]); returns the log.
pub(crate) async fn wait_for_log(env: &TestEnv, label: &str, line: &str) -> String {
    let start = Instant::now();
    loop {
        let log = log_of(env, label);
        if log.contains(line) {
            return log;
        }
        assert!(
            start.elapsed() < support::PATIENCE,
            "no {line:?} in the {label} log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Make every insert into `calls` that holds a row of `team` fail after
/// its `calls` part is written, before any view of `calls` sees it: a view
/// sorted before every other one (ClickHouse runs them in name order)
/// that throws for the team.
pub(crate) async fn break_views_for_team(env: &TestEnv, team: &str) {
    env.ch("CREATE TABLE {db}.a_boom_sink (x UInt8) ENGINE = Null")
        .await;
    env.ch(&format!(
        "CREATE MATERIALIZED VIEW {{db}}.a_boom_mv TO {{db}}.a_boom_sink \
         AS SELECT throwIf(team_id = '{team}') AS x FROM {{db}}.calls"
    ))
    .await;
}

pub(crate) fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Wait for a child to exit, at most `timeout`.
pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < timeout,
            "process did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Committed offsets of `group` on `topic`, per partition.
pub(crate) fn committed(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    committed_at(&kafka_brokers(), group, topic, partitions)
}

/// [`committed`] on the Kafka at `brokers`.
pub(crate) fn committed_at(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> HashMap<i32, i64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let tpl = consumer
        .committed_offsets(tpl, crate::support::PATIENCE)
        .unwrap();
    tpl.elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            (e.partition(), offset)
        })
        .collect()
}

/// Produce a large stream, SIGKILL the processor twice at random moments
/// while it inserts, restart it each time: every call is stored exactly once
/// and the rollup fed by the materialized view is exact too.
/// Wait until the calls fold of the `label` process has consumed `messages`
/// messages (its progress line, every 10 s, counts them), however long a
/// loaded machine takes.
async fn wait_until_consumed(env: &TestEnv, label: &str, messages: usize) {
    let consumed_all = format!("messages={messages}");
    let start = Instant::now();
    while !log_of(env, label)
        .lines()
        .any(|l| l.contains("progress") && l.contains("calls") && l.contains(&consumed_all))
    {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "the calls fold did not consume all {messages} messages; log:\n{}",
            log_of(env, label)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effectively_once_across_sigkill() {
    let n: usize = std::env::var("TOLLGATE_TEST_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let group = unique("grp");
    let mut env = TestEnv::with_extra_config(
        "proc_kill",
        &processor_config(&group, "batch_max_rows = 5000\nbatch_max_wait_ms = 200"),
    )
    .await;
    // The stream crosses a month boundary, so batches are also cut on the
    // ClickHouse partition change.
    let start = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
        - chrono::Duration::milliseconds(n as i64 * 25);
    let traffic = traffic(n, start, rand::random());
    let produce_started = Instant::now();
    produce_all(&env.events_topic, &traffic.messages).await;
    eprintln!("produced {n} messages in {:?}", produce_started.elapsed());

    let count_sql = "SELECT count() FROM {db}.calls";
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut kills = 0;
    let started = Instant::now();
    for round in 0..2 {
        let label = format!("process-{round}");
        let mut child = env.spawn_child(&label, &["process"]);
        // Kill somewhere between 10% and 90% of what is still missing.
        let before = env.ch_u64(count_sql).await;
        let target = before + ((traffic.calls - before) as f64 * rng.random_range(0.1..0.9)) as u64;
        let seen = env
            .wait_for_count(count_sql, target, Duration::from_secs(300))
            .await;
        kill(&mut child);
        let after = env.ch_u64(count_sql).await;
        let committed: i64 = committed(&group, &env.events_topic, 4).values().sum();
        eprintln!(
            "round {round}: killed at {seen} rows (target {target}), {after} stored, {committed} messages committed"
        );
        assert!(
            seen >= target,
            "processor made no progress; log:\n{}",
            log_of(&env, &label)
        );
        if after < traffic.calls {
            kills += 1;
        }
    }
    let pid = env.spawn("process-final", &["process"]);
    let got = env
        .wait_for_count(count_sql, traffic.calls, Duration::from_secs(600))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        got,
        traffic.calls,
        "log:\n{}",
        log_of(&env, "process-final")
    );
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "{} calls stored in {elapsed:?} with {kills} mid-stream kills",
        traffic.calls
    );
    assert!(kills >= 1, "no kill landed mid-stream");

    assert_eq!(env.ch_u64(count_sql).await, traffic.calls);
    assert_eq!(
        env.ch_u64("SELECT uniqExact(event_id) FROM {db}.calls")
            .await,
        traffic.calls
    );
    assert_eq!(
        env.ch_u64("SELECT uniqExact(kafka_partition, kafka_offset) FROM {db}.calls")
            .await,
        traffic.calls
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.calls").await,
        traffic.input_tokens
    );
    assert_eq!(
        env.ch_u64("SELECT countMerge(calls) FROM {db}.latency_minute_calls")
            .await,
        traffic.calls
    );
    assert_eq!(
        env.ch_u64("SELECT uniqExact(toYYYYMM(occurred_at)) FROM {db}.calls")
            .await,
        2
    );

    signal(pid, "TERM");
    // Wait for the calls fold's closing line, however slow the machine is.
    let start = Instant::now();
    let summary = loop {
        let log = log_of(&env, "process-final");
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("processor stopped") && is_calls_fold(l))
        {
            break line.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no 'processor stopped' line; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("final run: {summary}");
}

/// Garbage and invalid events go to the DLQ with the reason and the source
/// offset; the valid events around them are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_reason_and_source_offset() {
    let group = unique("grp");
    let mut env = TestEnv::with_extra_config(
        "proc_dlq",
        &processor_config(&group, "batch_max_wait_ms = 100"),
    )
    .await;
    let now = Utc::now();
    let valid = traffic(20, now - chrono::Duration::minutes(5), 7);
    let producer = producer();
    // Well-formed (typed decoding reads it) but refused by validation.
    let mut attempt_zero: serde_json::Value = serde_json::from_slice(&valid.messages[0].1).unwrap();
    attempt_zero["call"]["attempt"] = serde_json::json!(0);
    let attempt_zero = serde_json::to_vec(&attempt_zero).unwrap();
    let mut valid_count = 0;
    for (i, (_, payload)) in valid.messages.iter().enumerate() {
        produce_one(&producer, &env.events_topic, payload).await;
        if i == 5 {
            let garbage =
                produce_one(&producer, &env.events_topic, b"\x00\xffnot json at all").await;
            let invalid = produce_one(
                &producer,
                &env.events_topic,
                br#"{"schema_version":1,"event_id":"not-a-uuid","kind":"ai.call.completed"}"#,
            )
            .await;
            assert_eq!(invalid, garbage + 1);
            let refused = produce_one(&producer, &env.events_topic, &attempt_zero).await;
            assert_eq!(refused, invalid + 1);
        }
        valid_count += 1;
    }
    assert_eq!(valid_count, 20);
    env.spawn("process", &["process"]);
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            valid.calls,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(got, valid.calls, "log:\n{}", log_of(&env, "process"));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("dlqreader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&env.dlq_topic]).unwrap();
    let mut letters = Vec::new();
    while letters.len() < 3 {
        let message = tokio::time::timeout(crate::support::PATIENCE, consumer.recv())
            .await
            .expect("dead letters within 30 s")
            .unwrap();
        let envelope: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap()).unwrap();
        let headers: HashMap<String, String> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        letters.push((key, envelope, headers));
    }
    let (key, garbage, headers) = &letters[0];
    assert_eq!(garbage["error"], "undecodable");
    assert_eq!(garbage["source"]["topic"], env.events_topic.as_str());
    assert_eq!(garbage["source"]["partition"], 0);
    assert_eq!(garbage["source"]["offset"], 6);
    assert_eq!(garbage["payload_hex"], hex_of(b"\x00\xffnot json at all"));
    assert!(
        garbage["reason"].as_str().unwrap().contains("not JSON"),
        "{garbage}"
    );
    assert_eq!(key, &format!("{}/0/6", env.events_topic));
    assert_eq!(headers["tollgate.source.offset"], "6");
    assert_eq!(headers["tollgate.source.partition"], "0");
    assert_eq!(headers["tollgate.dlq.error"], "undecodable");

    let (_, invalid, headers) = &letters[1];
    assert_eq!(invalid["error"], "invalid_event");
    assert_eq!(invalid["source"]["offset"], 7);
    assert_eq!(invalid["field"], "event_id");
    assert!(invalid["payload"].as_str().unwrap().contains("not-a-uuid"));
    assert!(
        headers["tollgate.dlq.reason"].starts_with("event_id:"),
        "{headers:?}"
    );
    // The field and reason are the contract's, word for word, as ingest
    // words them from the decoded JSON value.
    let contract_reason = |payload: &[u8]| {
        let value = serde_json::from_slice(payload).unwrap();
        tollgate_contract::parse_event(value, Utc::now(), &tollgate_contract::Limits::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        invalid["reason"],
        contract_reason(
            br#"{"schema_version":1,"event_id":"not-a-uuid","kind":"ai.call.completed"}"#
        )
    );
    let (_, refused, headers) = &letters[2];
    assert_eq!(refused["error"], "invalid_event");
    assert_eq!(refused["source"]["offset"], 8);
    assert_eq!(refused["field"], "call.attempt");
    assert_eq!(refused["reason"], "call.attempt: must be at least 1");
    assert_eq!(refused["reason"], contract_reason(&attempt_zero));
    assert_eq!(
        headers["tollgate.dlq.reason"],
        "call.attempt: must be at least 1"
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SIGTERM flushes the open batch, commits it, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_commits_and_exits_zero() {
    let group = unique("grp");
    // Batches that never fill or age out: only the shutdown flush stores rows.
    let env = TestEnv::with_extra_config(
        "proc_term",
        &processor_config(
            &group,
            "batch_max_rows = 1000000\nbatch_max_bytes = 1000000000\nbatch_max_wait_ms = 600000",
        ),
    )
    .await;
    let traffic = traffic(5_000, Utc::now() - chrono::Duration::hours(1), 11);
    produce_all(&env.events_topic, &traffic.messages).await;
    let mut child = env.spawn_child("process", &["process"]);
    // The open batch holds them all, unflushed.
    wait_until_consumed(&env, "process", traffic.messages.len()).await;
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.calls").await,
        0,
        "nothing is flushed before shutdown"
    );
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60)).await;
    let log = log_of(&env, "process");
    assert!(status.success(), "exit {status:?}; log:\n{log}");

    let stored = env.ch_u64("SELECT count() FROM {db}.calls").await;
    assert!(stored > 0, "log:\n{log}");
    // Every partition's committed offset is exactly one past what ClickHouse holds.
    let committed = committed(&group, &env.events_topic, 4);
    let body = env
        .ch("SELECT kafka_partition, max(kafka_offset) FROM {db}.calls GROUP BY kafka_partition FORMAT TSV")
        .await;
    let mut checked = 0;
    for line in body.lines() {
        let (p, max) = line.split_once('\t').unwrap();
        let (p, max): (i32, i64) = (p.parse().unwrap(), max.parse().unwrap());
        let next = committed[&p];
        // Admin events (no row) may follow the last stored call.
        assert!(
            next > max,
            "partition {p}: committed {next}, stored up to {max}"
        );
        checked += 1;
    }
    assert!(checked > 0);
    let consumed: i64 = committed.values().sum();
    assert_eq!(
        consumed as usize,
        traffic.messages.len(),
        "everything produced was consumed and committed"
    );
    assert_eq!(stored, traffic.calls);
}

/// `tollgate migrate` is re-runnable, records one row per file, and refuses
/// to go on when an applied file changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_twice_and_detect_changed_file() {
    let env = TestEnv::new("proc_migrate").await;
    let out = env.tollgate(&["migrate"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0001_calls.sql already applied"),
        "{stdout}"
    );
    let files = std::fs::read_dir(crate::support::repo_root().join("migrations/clickhouse"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count() as u64;
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.schema_migrations")
            .await,
        files
    );
    assert_eq!(
        env.ch_u64("SELECT uniqExact(version) FROM {db}.schema_migrations")
            .await,
        files
    );

    env.ch("INSERT INTO {db}.schema_migrations VALUES (1, '0001_calls.sql', 'deadbeef', now())")
        .await;
    let out = env.tollgate(&["migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("0001_calls.sql") && stderr.contains("changed after it was applied"),
        "{stderr}"
    );
}

/// A migration that backfills from stored rows is not applied while a
/// processor runs (a row inserted meanwhile would be counted twice or
/// missed): `migrate` names the file and the consumer group and applies
/// nothing; once the processor stopped, it applies the file, and the
/// rollup it backfills holds every call's cost once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_backfill_while_a_processor_runs() {
    let group = unique("grp");
    let env = TestEnv::with_extra_config("proc_migrate_live", &processor_config(&group, "")).await;
    let traffic = traffic(300, Utc::now() - chrono::Duration::hours(1), 23);
    produce_all(&env.events_topic, &traffic.messages).await;
    let mut child = env.spawn_child("process", &["process", "--folds", "calls"]);
    // (The message count includes the error patterns the learner
    // announces on the topic: wait for the calls instead.)
    let start = Instant::now();
    while env.ch_u64("SELECT count() FROM {db}.calls").await < traffic.calls {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "not every call stored; log:\n{}",
            log_of(&env, "process")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.calls").await,
        traffic.calls
    );
    // The views write a moment after the calls' part is visible.
    env.wait_for_cost_rollup().await;
    let cost = env.ch("SELECT toString(sum(cost)) FROM {db}.calls").await;
    let by_team = "SELECT toString(sum(cost)) FROM {db}.cost_daily_by_team";
    assert_ne!(cost.trim(), "0.000000000000", "the traffic is priced");
    assert_eq!(env.ch(by_team).await, cost, "the view folded every call");

    forget_migration(&env, 37).await;
    let out = env.tollgate(&["migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not applying 0037_cost_daily_by_team.sql")
            && stderr.contains(&format!("{group} has 1 member(s)"))
            && stderr.contains("Stop every `tollgate process`"),
        "{stderr}"
    );
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.schema_migrations WHERE version = 37")
            .await,
        0,
        "nothing applied"
    );

    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        log_of(&env, "process")
    );
    let out = env.tollgate(&["migrate"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "0037_cost_daily_by_team.sql backfill(s) from stored rows; no processor is running"
        ) && stdout.contains("applied 0037_cost_daily_by_team.sql"),
        "{stdout}"
    );
    // The backfill is a difference: it added nothing to what the view had.
    assert_eq!(env.ch(by_team).await, cost);
}

/// Set `group`'s committed offsets on `topic` back to the start, as if the
/// processor had crashed after every insert and before every commit.
pub(crate) fn rewind_commits(group: &str, topic: &str, partitions: i32) {
    rewind_commits_at(&kafka_brokers(), group, topic, partitions);
}

/// [`rewind_commits`] on the Kafka at `brokers`.
pub(crate) fn rewind_commits_at(brokers: &str, group: &str, topic: &str, partitions: i32) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
}

/// The pattern learner announces new error patterns on the events topic
/// itself; tests that compare committed offsets with the messages they
/// produced turn that off.
pub(crate) const NO_ANNOUNCEMENTS: &str = "\n[processor.patterns]\nannounce = false\n";

/// The crash window made deterministic: rows are in ClickHouse but Kafka's
/// committed offsets are lost. A restarted processor reads everything again
/// and skips it all, because it resumes from what ClickHouse holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_clickhouse_when_commits_are_lost() {
    let group = unique("grp");
    let env = TestEnv::with_extra_config(
        "proc_resume",
        &format!(
            "{}{NO_ANNOUNCEMENTS}",
            processor_config(&group, "batch_max_wait_ms = 100")
        ),
    )
    .await;
    let first = traffic(3_000, Utc::now() - chrono::Duration::hours(1), 21);
    produce_all(&env.events_topic, &first.messages).await;

    let mut child = env.spawn_child("process-1", &["process"]);
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            first.calls,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(got, first.calls, "log:\n{}", log_of(&env, "process-1"));
    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, crate::support::PATIENCE)
        .await
        .success());
    assert_eq!(
        committed(&group, &env.events_topic, 4)
            .values()
            .sum::<i64>(),
        first.messages.len() as i64
    );

    rewind_commits(&group, &env.events_topic, 4);
    assert_eq!(
        committed(&group, &env.events_topic, 4)
            .values()
            .sum::<i64>(),
        0
    );
    let second = traffic(1_000, Utc::now() - chrono::Duration::minutes(10), 22);
    produce_all(&env.events_topic, &second.messages).await;

    let mut child = env.spawn_child("process-2", &["process"]);
    let want = first.calls + second.calls;
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            want,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(got, want, "log:\n{}", log_of(&env, "process-2"));
    // The admin events after the last call, too: the commits below count them.
    wait_until_consumed(
        &env,
        "process-2",
        first.messages.len() + second.messages.len(),
    )
    .await;
    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, crate::support::PATIENCE)
        .await
        .success());
    let log = log_of(&env, "process-2");
    assert_eq!(env.ch_u64("SELECT count() FROM {db}.calls").await, want);
    assert_eq!(
        env.ch_u64("SELECT uniqExact(event_id) FROM {db}.calls")
            .await,
        want
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.calls").await,
        first.input_tokens + second.input_tokens
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens_estimated) FROM {db}.calls")
            .await,
        first.estimated_inputs + second.estimated_inputs,
        "the estimated-input mark is stored (migration 0024)"
    );
    // Everything before the last stored call of each partition was skipped.
    let skipped: u64 = log
        .lines()
        // `tollgate process` runs the audit fold too: read the calls fold's line.
        .filter(|l| l.contains("processor stopped") && is_calls_fold(l))
        .filter_map(|l| {
            l.split("skipped=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next()
        .unwrap_or_else(|| panic!("no summary line; log:\n{log}"));
    assert!(
        skipped >= first.calls && skipped <= first.messages.len() as u64,
        "skipped {skipped}; log:\n{log}"
    );
    assert_eq!(
        committed(&group, &env.events_topic, 4)
            .values()
            .sum::<i64>(),
        (first.messages.len() + second.messages.len()) as i64
    );
}

/// Two processors in one group: a second one joining (partitions move away
/// from the first) and the first one leaving (they move back) neither lose
/// nor duplicate a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_between_two_processors_are_exact() {
    let group = unique("grp");
    let env = TestEnv::with_extra_config(
        "proc_rebalance",
        &format!(
            "{}{NO_ANNOUNCEMENTS}",
            processor_config(&group, "batch_max_rows = 2000\nbatch_max_wait_ms = 200")
        ),
    )
    .await;
    let first_half = traffic(
        30_000,
        Utc::now() - chrono::Duration::hours(2),
        rand::random(),
    );
    let second_half = traffic(
        30_000,
        Utc::now() - chrono::Duration::hours(1),
        rand::random(),
    );
    let calls = first_half.calls + second_half.calls;
    produce_all(&env.events_topic, &first_half.messages).await;
    let count_sql = "SELECT count() FROM {db}.calls";

    let mut first = env.spawn_child("process-a", &["process"]);
    env.wait_for_count(count_sql, first_half.calls / 5, Duration::from_secs(120))
        .await;
    // The second processor joins: partitions move away from the first.
    let mut second = env.spawn_child("process-b", &["process"]);
    let start = Instant::now();
    while !log_of(&env, "process-b").contains("partitions assigned") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "second processor got no partitions; log:\n{}",
            log_of(&env, "process-b")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce_all(&env.events_topic, &second_half.messages).await;
    env.wait_for_count(count_sql, calls * 6 / 10, Duration::from_secs(300))
        .await;
    // The first one leaves: its partitions move to the second.
    signal(first.id(), "TERM");
    assert!(wait_exit(&mut first, Duration::from_secs(60))
        .await
        .success());
    let got = env
        .wait_for_count(count_sql, calls, Duration::from_secs(300))
        .await;
    // A window in which a duplicate would show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(second.id(), "TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(60))
        .await
        .success());

    let (a, b) = (log_of(&env, "process-a"), log_of(&env, "process-b"));
    assert_eq!(got, calls, "log a:\n{a}\nlog b:\n{b}");
    assert!(a.contains("partitions revoked"), "log a:\n{a}");
    assert!(
        b.matches("partitions assigned").count() >= 2,
        "the second processor never took the first one's partitions; log b:\n{b}"
    );
    assert_eq!(env.ch_u64(count_sql).await, calls);
    assert_eq!(
        env.ch_u64("SELECT uniqExact(event_id) FROM {db}.calls")
            .await,
        calls
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.calls").await,
        first_half.input_tokens + second_half.input_tokens
    );
    assert_eq!(
        committed(&group, &env.events_topic, 4)
            .values()
            .sum::<i64>(),
        (first_half.messages.len() + second_half.messages.len()) as i64
    );
}

/// ClickHouse becomes unreachable mid-stream, twice, with inserts cut in
/// flight: the processor retries, never drops a batch, and does not store a
/// row twice even when a cut insert was stored after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outages_are_retried_without_loss_or_duplicates() {
    let group = unique("grp");
    let env = TestEnv::with_extra_config(
        "proc_outage",
        &processor_config(&group, "batch_max_rows = 3000\nbatch_max_wait_ms = 200"),
    )
    .await;
    let traffic = traffic(
        60_000,
        Utc::now() - chrono::Duration::hours(3),
        rand::random(),
    );
    produce_all(&env.events_topic, &traffic.messages).await;
    let upstream = support::clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = support::tcp_proxy::TcpProxy::start(upstream).await;
    let log = std::fs::File::create(env.log_path("process")).unwrap();
    let mut child = env
        .tollgate(&["process"])
        .env("TOLLGATE_CLICKHOUSE__URL", proxy.url())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let count_sql = "SELECT count() FROM {db}.calls";
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for fraction in [0.2, 0.6] {
        let want = (traffic.calls as f64 * fraction) as u64;
        env.wait_for_count(count_sql, want, Duration::from_secs(120))
            .await;
        // Land the cut at a random point of the next insert.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        proxy.cut();
        // An insert whose body had fully arrived may still be committing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = env.ch_u64(count_sql).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            env.ch_u64(count_sql).await,
            during,
            "nothing is stored while clickhouse is unreachable"
        );
        proxy.restore();
    }
    let got = env
        .wait_for_count(count_sql, traffic.calls, Duration::from_secs(300))
        .await;
    // A window in which a duplicate would show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60)).await;
    let log = log_of(&env, "process");
    assert!(status.success(), "{status:?}; log:\n{log}");
    assert_eq!(got, traffic.calls, "log:\n{log}");
    assert!(
        log.contains("insert failed, retrying"),
        "no insert was cut; log:\n{log}"
    );
    assert_eq!(env.ch_u64(count_sql).await, traffic.calls);
    assert_eq!(
        env.ch_u64("SELECT uniqExact(event_id) FROM {db}.calls")
            .await,
        traffic.calls
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.calls").await,
        traffic.input_tokens
    );
    let retries = log
        .lines()
        .filter(|l| l.contains("insert failed, retrying"))
        .count();
    let partial = log.lines().filter(|l| l.contains("already_stored")).count();
    eprintln!("{retries} failed inserts retried, {partial} of them found stored after all");
    for line in log
        .lines()
        .filter(|l| l.contains("insert failed") || l.contains("already_stored"))
    {
        eprintln!("  {line}");
    }
}

/// Whether a log line is the calls fold's (`tollgate process` runs the audit
/// fold too); tracing prints the field as `fold="calls"`.
pub(crate) fn is_calls_fold(line: &str) -> bool {
    line.contains("fold=\"calls\"") || line.contains("fold=calls")
}

/// An insert sent by a processor that died can still be running in
/// ClickHouse when the next owner of its partition starts (ClickHouse
/// finishes an insert whose body arrived). The test holds such an insert
/// open, with the rows of the first 25 of 40 messages of partition 0 as
/// the dead owner made them, and starts a processor: its calls fold waits
/// at the fence (`processors/src/insert_fence.rs`) and stores nothing; once
/// the insert ends it resumes after the held rows. Without the fence it
/// would read an empty position and store those 25 calls a second time.
/// A foreign client's insert into the same database, held open beside it,
/// is not waited for (the fence knows ours by their `User-Agent`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_still_running_from_a_dead_owner_is_waited_for_and_not_repeated() {
    let group = unique("grp");
    let mut env = TestEnv::with_extra_config("fence", &processor_config(&group, "")).await;
    let (n, held) = (40usize, 25usize);
    let at = Utc::now() - chrono::Duration::minutes(5);
    let producer = producer();
    let mut sent = Vec::new();
    for i in 0..n {
        let event = support::events::call_event(
            "team-x",
            "openai",
            "gpt-4o-mini",
            at,
            support::events::usage(100 + i as u64, 0, 0, 10, 0),
            Outcome::Success,
        );
        let payload = serde_json::to_vec(&event).unwrap();
        let offset = produce_one(&producer, &env.events_topic, &payload).await;
        sent.push((event.event_id.to_string(), offset));
    }
    let rows: String = sent[..held]
        .iter()
        .map(|(id, offset)| {
            serde_json::json!({
                "event_id": id, "kafka_partition": 0, "kafka_offset": offset,
                "call_id": "held-insert", "occurred_at": at.format("%Y-%m-%d %H:%M:%S").to_string(),
            })
            .to_string()
                + "\n"
        })
        .collect();
    let insert_sql =
        "INSERT INTO calls (event_id, kafka_partition, kafka_offset, call_id, occurred_at) FORMAT JSONEachRow";
    let query_id = format!("{}-held", env.name);
    let ours = tollgate_control::clickhouse::user_agent_tag(&env.ch_database) + "clickhouse-rs";
    let insert = HeldInsert::open(&env.ch_database, &query_id, insert_sql, &rows, &ours).await;
    // Someone else's insert into the same database, held the same way (no
    // rows): the fence is not theirs to wait for.
    let foreign_id = format!("{}-foreign", env.name);
    let foreign = HeldInsert::open(&env.ch_database, &foreign_id, insert_sql, "", "curl/8.0").await;
    let running = format!(
        "SELECT count() FROM system.processes WHERE query_id IN ('{query_id}', '{foreign_id}')"
    );
    assert_eq!(
        env.wait_for_count(&running, 2, crate::support::PATIENCE)
            .await,
        2,
        "both held inserts are running"
    );

    env.spawn("process", &["process"]);
    let start = Instant::now();
    let waited = |log: String| {
        log.lines()
            .find(|l| {
                l.contains("waiting for inserts running in clickhouse") && l.contains("fold=calls")
            })
            .map(str::to_string)
    };
    while waited(log_of(&env, "process")).is_none() {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "the calls fold never waited for the running insert; log:\n{}",
            log_of(&env, "process")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.calls").await,
        0,
        "nothing is stored while the fence holds"
    );

    let line = waited(log_of(&env, "process")).unwrap();
    assert!(
        line.contains("inserts=1"),
        "the fence waits for our insert only, not the foreign one: {line}"
    );

    insert.finish().await;
    let stored = env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            n as u64,
            crate::support::PATIENCE,
        )
        .await;
    assert_eq!(stored, n as u64, "log:\n{}", log_of(&env, "process"));
    // Consumed and committed to the end: nothing more is coming.
    let start = Instant::now();
    while committed(&group, &env.events_topic, 1)[&0] < sent[n - 1].1 + 1 {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "never committed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        env.ch("SELECT count(), uniqExact(event_id), countIf(call_id = 'held-insert') FROM {db}.calls FORMAT TSV")
            .await
            .trim(),
        format!("{n}\t{n}\t{held}"),
        "every call once, the held rows kept; log:\n{}",
        log_of(&env, "process")
    );
    foreign.finish().await;
}

/// An HTTP insert into ClickHouse whose body is sent but not ended (chunked
/// transfer, the last chunk held back): ClickHouse runs it until it ends,
/// as it does an insert whose client was killed after sending it.
struct HeldInsert {
    stream: tokio::net::TcpStream,
}

impl HeldInsert {
    async fn open(
        database: &str,
        query_id: &str,
        query: &str,
        body: &str,
        user_agent: &str,
    ) -> Self {
        use tokio::io::AsyncWriteExt;
        let base = reqwest::Url::parse(&support::clickhouse_url()).unwrap();
        let url = reqwest::Url::parse_with_params(
            base.as_str(),
            &[
                ("database", database),
                ("query_id", query_id),
                ("query", query),
            ],
        )
        .unwrap();
        let address = format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap()
        );
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {}?{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {user_agent}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            url.path(),
            url.query().unwrap(),
            url.host_str().unwrap()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // ClickHouse reads the first MiB or so of the body (or all of it)
        // before it starts the query; whitespace after the rows gets it
        // started, as a dead client's whole body would have.
        let body = format!("{body}{}\n", " ".repeat(3 << 20));
        let chunk = format!("{:x}\r\n{body}\r\n", body.len());
        stream.write_all(chunk.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        Self { stream }
    }

    /// Send the last chunk; ClickHouse stores the rows and answers 200.
    async fn finish(mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(b"0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        self.stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
