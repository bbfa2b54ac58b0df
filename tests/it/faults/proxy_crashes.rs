//! Faults: proxies killed under load, a full spool disk, and the replay of
//! a crashed proxy's write-ahead log (`docs/proxy.md`, "Durability";
//! figures in `docs/reliability.md`, "Proxies killed under load").
//!
//! What a call "served" means here: the mock upstream received it. Each
//! call carries its own mock scenario (`x-mock-scenario`), so the mock
//! counts requests per call, and its own trace id, so ClickHouse's row is
//! found per call. Every call the mock received must have exactly one row;
//! a call the proxy wrote ahead but did not get to send before the kill may
//! have one row, `proxy_interrupted`; no call has two.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::proxy::Proxy;
use crate::support;

/// Every event on `topic`, read to the end.
fn topic_events(brokers: &str, topic: &str) -> Vec<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", support::unique("read"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut left = 0;
    for p in metadata.topics()[0].partitions() {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
            .unwrap();
        left += high;
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + support::PATIENCE;
    while (events.len() as i64) < left {
        assert!(Instant::now() < deadline, "topic not read to its end");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            events.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
        }
    }
    events
}

/// SIGKILL the running proxy (the last child) and reap it.
fn kill_proxy(proxy: &mut Proxy) {
    let mut child = proxy.children.pop().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGTERM the running proxy and wait for a clean exit.
async fn stop_proxy(proxy: &mut Proxy) {
    let mut child = proxy.children.pop().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + support::PATIENCE;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "proxy did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "proxy exit {exit:?}; log:\n{}", proxy.log());
}

fn wal_dir(proxy: &Proxy) -> PathBuf {
    proxy.env.dir.path().join("spool/wal")
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The log's segments in `dir` (not its spare segment, which holds only
/// zeros until it becomes one).
fn segments_in(dir: &Path) -> Vec<String> {
    let mut found = files_in(dir);
    found.retain(|name| name.ends_with(".wal"));
    found
}

/// What a clean stop may leave in the log's directory: its spare.
fn only_a_spare(dir: &Path) -> bool {
    files_in(dir).iter().all(|name| name == "spare-segment")
}

/// Wait until the running proxy has delivered what earlier runs left: no
/// segment but its own in the log, nothing in the spool.
async fn wait_recovered(proxy: &Proxy) {
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let segments = segments_in(&wal_dir(proxy)).len();
        let spooled = proxy.metric("tollgate_proxy_spool_pending_bytes").await;
        if segments <= 1 && spooled == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recovery not finished: {segments} segments, {spooled} bytes spooled; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 64 clients calling through the proxy until `stop`, each call with its
/// own scenario and trace id `wal-<n>`; half of them streamed.
fn start_clients(
    proxy: &Proxy,
    key: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Vec<tokio::task::JoinHandle<u64>>) {
    let next = Arc::new(AtomicU64::new(0));
    let url = format!("{}/v1/chat/completions", proxy.url());
    let clients = (0..64)
        .map(|_| {
            let (next, stop, url, key) = (next.clone(), stop.clone(), url.clone(), key.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = json!({"model": "gpt-4o-mini", "max_tokens": 4, "stream": n % 2 == 1,
                                      "messages": [{"role": "user", "content": format!("call {n}")}]});
                    let sent = http
                        .post(&url)
                        .bearer_auth(&key)
                        .header("x-mock-scenario", format!("wal-{n}"))
                        .header("x-tollgate-trace-id", format!("wal-{n}"))
                        .json(&body)
                        .send()
                        .await;
                    let ok = match sent {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        answered += 1;
                    } else {
                        // The proxy is down (being killed or restarting).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                answered
            })
        })
        .collect();
    (next, clients)
}

/// Calls per trace id in ClickHouse: (rows, error types). A connect error
/// (retried by the proxy) never reached the mock, so it is left out.
async fn rows_by_call(proxy: &Proxy) -> HashMap<String, (u64, Vec<String>)> {
    let text = proxy
        .env
        .ch("SELECT trace_id, count(), arrayStringConcat(groupArray(error_type), ',') FROM {db}.calls WHERE trace_id LIKE 'wal-%' AND error_type != 'connect_error' GROUP BY trace_id FORMAT TSV")
        .await;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let id = f.next()?.to_string();
            let rows = f.next()?.parse().ok()?;
            let errors = f
                .next()
                .unwrap_or("")
                .split(',')
                .map(String::from)
                .collect();
            Some((id, (rows, errors)))
        })
        .collect()
}

#[tokio::test]
async fn proxies_sigkilled_under_64_clients_record_every_served_call_exactly_once() {
    let kills: usize = std::env::var("TOLLGATE_FAULT_PROXY_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let mut proxy = Proxy::start("faults_proxy_kill", "", None).await;
    let processor = proxy.spawn("process", &["process", "--folds", "calls"]);
    proxy.children.push(processor);
    proxy.run_proxy().await;
    let key = proxy.key("acme", "walkill", "u", None);
    let stop = Arc::new(AtomicBool::new(false));
    let (next, clients) = start_clients(&proxy, &key, stop.clone());

    let mut restarts = Vec::new();
    for _ in 0..kills {
        // Kill at a random moment while the clients are busy.
        let after = Duration::from_millis(rand::random_range(300..1500));
        tokio::time::sleep(after).await;
        kill_proxy(&mut proxy);
        let restarted = Instant::now();
        proxy.run_proxy().await;
        restarts.push(restarted.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    let calls = next.load(Ordering::Relaxed);
    wait_recovered(&proxy).await;
    let recovered = proxy
        .metric("tollgate_proxy_wal_recovered_events_total")
        .await;
    stop_proxy(&mut proxy).await;
    assert!(
        only_a_spare(&wal_dir(&proxy)),
        "a clean stop leaves no segment: {:?}",
        files_in(&wal_dir(&proxy))
    );

    // Every call event on Kafka reaches ClickHouse (once per message; the
    // topic also holds the processor's own admin events, e.g. the error
    // pattern `proxy_interrupted` makes).
    let on_kafka = topic_events(&proxy.brokers, &proxy.env.events_topic)
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("ai.call."))
        .count() as u64;
    let stored = proxy
        .env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            on_kafka,
            support::PATIENCE,
        )
        .await;
    assert_eq!(stored, on_kafka, "rows vs call events on kafka");
    let duplicate_ids = proxy
        .env
        .ch_u64("SELECT count() - uniqExact(event_id) FROM {db}.calls")
        .await;
    assert_eq!(duplicate_ids, 0, "an event id stored twice");

    let rows = rows_by_call(&proxy).await;
    let mut served = 0u64;
    let mut interrupted = 0u64;
    let mut interrupted_unsent = 0u64;
    let mut problems = Vec::new();
    for n in 0..calls {
        let id = format!("wal-{n}");
        let seen = proxy.scenario(&id).await["requests"].as_u64().unwrap_or(0);
        let (count, errors) = rows.get(&id).cloned().unwrap_or((0, Vec::new()));
        let was_interrupted = errors.iter().any(|e| e == "proxy_interrupted");
        interrupted += u64::from(was_interrupted);
        match (seen, count) {
            (1, 1) => served += 1,
            (0, 0) => {}
            (0, 1) if was_interrupted => interrupted_unsent += 1,
            _ => problems.push(format!("{id}: mock saw {seen}, rows {count} {errors:?}")),
        }
    }
    let restart_ms: Vec<u128> = restarts.iter().map(Duration::as_millis).collect();
    println!(
        "proxy kills: {kills}; calls {calls}, answered 200 {answered}, served by the mock {served}, \
         rows {}, interrupted {interrupted} (of which never sent {interrupted_unsent}), \
         recovered by the last start {recovered}; restart to serving (ms) {restart_ms:?}",
        rows.values().map(|(c, _)| c).sum::<u64>()
    );
    assert!(
        problems.is_empty(),
        "{} calls wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(served >= answered, "{served} served < {answered} answered");
    assert!(served > 0);
}

/// A `tmpfs` of `size` mounted at `dir` for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| Self(dir.to_path_buf()))
            .or_else(|| {
                println!(
                    "SKIPPED: cannot mount a tmpfs ({}); the disk-full test needs root",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the file system of `dir` with `file` until it refuses.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_spool_disk_refuses_calls_with_503_and_recovers_when_space_returns() {
    let mut proxy = Proxy::start("faults_wal_full", "", None).await;
    let spool = proxy.env.dir.path().join("spool");
    let Some(_tmpfs) = Tmpfs::mount(&spool, "4m") else {
        return;
    };
    proxy.run_proxy().await;
    let key = proxy.key("acme", "walfull", "u", None);
    let call = |n: &str| {
        let (proxy, key, n) = (&proxy, key.clone(), n.to_string());
        async move {
            proxy
                .chat(
                    &key,
                    "gpt-4o-mini",
                    &[
                        ("x-mock-scenario", n.as_str()),
                        ("x-tollgate-trace-id", n.as_str()),
                    ],
                )
                .await
        }
    };
    assert_eq!(call("full-0").await.status(), 200);

    let filler = spool.join("filler");
    fill(&filler);
    // The log's last page may still take a record or two.
    let mut n = 1;
    let refused = loop {
        let r = call(&format!("full-{n}")).await;
        if r.status() != 200 {
            break r;
        }
        assert!(n < 20, "still served with the disk full");
        n += 1;
    };
    let refused_call = format!("full-{n}");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unrecordable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the call cannot be recorded, so it is not forwarded")
            && message.contains("No space left on device"),
        "{message}"
    );
    assert_eq!(
        proxy.scenario(&refused_call).await["requests"],
        0,
        "not forwarded"
    );
    // (`wal_writable` is 0 only until a write succeeds: a small record
    // may still fit the log's last page, so it is not asserted here.)
    assert!(proxy.metric("tollgate_proxy_wal_refused_calls_total").await >= 1);
    assert!(proxy.metric("tollgate_proxy_wal_write_errors_total").await >= 1);
    assert!(
        proxy.log().contains("cannot write the write-ahead log"),
        "{}",
        proxy.log()
    );
    // Still alive and answering.
    let health = proxy
        .http
        .get(format!("{}/healthz", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + support::PATIENCE;
    n += 1;
    loop {
        let r = call(&format!("full-{n}")).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after space returned: {}",
            r.status()
        );
        n += 1;
    }
    assert_eq!(proxy.metric("tollgate_proxy_wal_writable").await, 1);
    // No spare segment on a disk of 4 MiB (an 18 MiB spare would take the
    // room the records need): the log's segments grew as they were written.
    assert!(proxy.metric("tollgate_proxy_wal_segments_total").await >= 1);
    assert_eq!(
        proxy
            .metric("tollgate_proxy_wal_spare_segments_total")
            .await,
        0
    );
    assert!(
        proxy
            .log()
            .contains("cannot write a spare write-ahead log segment"),
        "{}",
        proxy.log()
    );
    // The calls served are on Kafka once each, the refused one too, as
    // blocked (its event went to Kafka from memory). Delivery is
    // asynchronous: read the topic until the last served call's event is
    // there, then stop the proxy and read it once more (nothing more may
    // come).
    let served_last = format!("full-{n}");
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let kinds = kinds_by_trace(&topic_events(&proxy.brokers, &proxy.env.events_topic));
        if kinds
            .get(&served_last)
            .is_some_and(|k| k.iter().any(|k| k == "ai.call.completed"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{served_last} served but its event is not on Kafka: {kinds:?}; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_proxy(&mut proxy).await;
    let events = topic_events(&proxy.brokers, &proxy.env.events_topic);
    let by_trace = kinds_by_trace(&events);
    assert_eq!(
        kinds(&by_trace, &refused_call),
        ["ai.call.blocked"],
        "{by_trace:?}"
    );
    // One event per upstream attempt: a loaded machine may time out a
    // first attempt (`ai.call.failed`) that a retry then serves. A call
    // refused while space was coming back was never forwarded: blocked.
    for (trace, kinds) in &by_trace {
        let attempts = proxy.scenario(trace).await["requests"].as_u64().unwrap();
        if attempts == 0 {
            assert_eq!(kinds, &["ai.call.blocked"], "{trace}: {by_trace:?}");
            continue;
        }
        assert_eq!(kinds.len() as u64, attempts, "{trace}: {by_trace:?}");
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("ai.call.completed"),
            "{trace}: {by_trace:?}"
        );
        let failed: Vec<&Value> = events
            .iter()
            .filter(|e| e["call"]["trace_id"] == trace.as_str() && e["kind"] == "ai.call.failed")
            .collect();
        assert!(
            failed
                .iter()
                .all(|e| e["call"]["error"]["error_type"] == "timeout"),
            "{trace}: only a timed-out attempt may precede the served one: {failed:?}"
        );
    }
    for served in ["full-0".to_string(), served_last] {
        assert!(by_trace.contains_key(&served), "{served}: {by_trace:?}");
    }
}

/// The kinds of the events on a topic by trace id, in topic order.
fn kinds_by_trace(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut by_trace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        by_trace
            .entry(e["call"]["trace_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["kind"].as_str().unwrap().to_string());
    }
    by_trace
}

fn kinds(by_trace: &BTreeMap<String, Vec<String>>, trace: &str) -> Vec<String> {
    by_trace.get(trace).cloned().unwrap_or_default()
}

/// A crashed run's log, written by hand: an event Kafka already has (sent,
/// acknowledgement lost), one it does not, an attempt that never ended,
/// and one marked done.
/// The `team_id` of every event, sorted.
fn sorted_teams(events: &[Value]) -> Vec<String> {
    let mut teams: Vec<String> = events
        .iter()
        .map(|e| e["team_id"].as_str().unwrap().to_string())
        .collect();
    teams.sort();
    teams
}

/// A successful call of org `acme`'s `team`, as the proxy records one.
fn acme_call(team: &str) -> tollgate_contract::Event {
    let mut e = support::events::call_event(
        team,
        "mockai",
        "gpt-4o-mini",
        chrono::Utc::now(),
        support::events::usage(10, 0, 0, 5, 0),
        tollgate_contract::Outcome::Success,
    );
    e.org_id = "acme".into();
    e
}

#[tokio::test]
async fn a_replayed_log_sends_only_what_kafka_lacks_and_interrupted_attempts_once() {
    let mut proxy = Proxy::start("faults_wal_replay", "", None).await;
    let on_kafka = acme_call("replay-a");
    let not_on_kafka = acme_call("replay-b");
    let done = acme_call("replay-c");
    let mut started = acme_call("replay-d");
    started.kind = tollgate_contract::EventKind::CallFailed;
    if let Some(call) = started.call.as_mut() {
        call.outcome = tollgate_contract::Outcome::Error;
        call.http_status = 0;
        call.error = Some(tollgate_contract::ProviderError {
            error_type: "proxy_interrupted".into(),
            message: "test".into(),
            signature: None,
        });
    }
    support::kafka::produce_all(
        &proxy.env.events_topic,
        &[(
            on_kafka.team_id.clone(),
            serde_json::to_vec(&on_kafka).unwrap(),
        )],
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let lines = [
        json!({"t": "event", "at_ms": now, "event": on_kafka}),
        json!({"t": "started", "at_ms": now, "event": started}),
        json!({"t": "event", "at_ms": now, "event": not_on_kafka}),
        json!({"t": "event", "at_ms": now, "event": done}),
        json!({"t": "done", "ids": [done.event_id]}),
    ];
    let dir = wal_dir(&proxy);
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("0000000000000007.wal"), text + "{\"t\":\"ev").unwrap();

    proxy.run_proxy().await;
    wait_recovered(&proxy).await;
    assert_eq!(
        proxy
            .metric("tollgate_proxy_wal_recovered_events_total")
            .await,
        2
    );
    assert_eq!(
        proxy
            .metric("tollgate_proxy_wal_interrupted_attempts_total")
            .await,
        1
    );
    stop_proxy(&mut proxy).await;
    let events = topic_events(&proxy.brokers, &proxy.env.events_topic);
    let teams = sorted_teams(&events);
    assert_eq!(teams, ["replay-a", "replay-b", "replay-d"], "{events:#?}");
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(started.event_id.to_string().as_str()));
    assert!(only_a_spare(&dir), "{:?}", files_in(&dir));
    assert!(
        proxy
            .log()
            .contains("events recovered from the write-ahead log"),
        "{}",
        proxy.log()
    );
}

/// A run killed while Kafka had a batch of its spool (stored, but the
/// acknowledgement not yet turned into a new spool position) leaves the
/// batch's marker; the next run sends only what the topic lacks.
#[tokio::test]
async fn a_spool_batch_kafka_stored_before_a_crash_is_not_sent_again() {
    let mut proxy = Proxy::start("faults_spool_in_flight", "", None).await;
    let stored = [acme_call("spool-a"), acme_call("spool-b")];
    let lacking = [acme_call("spool-c"), acme_call("spool-d")];
    let sent_at = chrono::Utc::now().timestamp_millis();
    // Kafka stored the first two events of the batch (out of order, as
    // two partitions may).
    let on_kafka: Vec<(String, Vec<u8>)> = stored
        .iter()
        .rev()
        .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
        .collect();
    support::kafka::produce_all(&proxy.env.events_topic, &on_kafka).await;
    let dir = proxy.env.dir.path().join("spool");
    std::fs::create_dir_all(&dir).unwrap();
    let lines: String = stored
        .iter()
        .chain(&lacking)
        .map(|e| format!("{}\n", serde_json::to_string(e).unwrap()))
        .collect();
    std::fs::write(dir.join("events.ndjson"), lines).unwrap();
    std::fs::write(dir.join("events.sending"), format!("0 {sent_at}")).unwrap();

    proxy.run_proxy().await;
    let deadline = Instant::now() + support::PATIENCE;
    while dir.join("events.ndjson").exists() {
        assert!(
            Instant::now() < deadline,
            "the spool was not replayed; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        proxy.metric("tollgate_proxy_events_replayed_total").await,
        2
    );
    assert_eq!(
        proxy
            .metric("tollgate_proxy_events_already_on_kafka_total")
            .await,
        2
    );
    stop_proxy(&mut proxy).await;
    let events = topic_events(&proxy.brokers, &proxy.env.events_topic);
    let teams = sorted_teams(&events);
    assert_eq!(teams, ["spool-a", "spool-b", "spool-c", "spool-d"]);
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{events:#?}");
    assert!(
        files_in(&dir).iter().all(|f| f == "wal"),
        "{:?}",
        files_in(&dir)
    );
    assert!(
        proxy
            .log()
            .contains("checked spooled events kafka may have stored"),
        "{}",
        proxy.log()
    );
}

/// Send `signal` (`STOP`, `CONT`) to the scratch broker in `dir`.
fn signal_broker(dir: &Path, signal: &str) {
    let pid = std::fs::read_to_string(dir.join("kafka.pid")).unwrap();
    let out = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.trim())
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -{signal}: {out:?}");
}

/// A broker that stalls (SIGSTOP) with produce requests in flight fails
/// them here after `kafka_timeout_ms`, then stores them when it resumes:
/// the spool's replay finds them on the topic and sends only the rest.
#[tokio::test]
async fn a_stalled_broker_that_stores_late_gets_no_event_twice() {
    let data = tempfile::tempdir().unwrap();
    let ports = (support::free_port(), support::free_port());
    crate::proxy::kafka_scratch("start", data.path(), Some(ports));
    let _guard = crate::proxy::ScratchKafka(data.path().to_path_buf());
    let brokers = format!("127.0.0.1:{}", ports.0);
    let mut proxy = Proxy::start("faults_stalled_broker", "", Some(&brokers)).await;
    proxy.run_proxy().await;
    let key = proxy.key("acme", "stall", "u", None);
    let mut served = 0;
    let mut call = || {
        served += 1;
        proxy.chat(&key, "gpt-4o-mini", &[])
    };
    for _ in 0..4 {
        assert_eq!(call().await.status(), 200);
    }
    assert_eq!(proxy.events(4).len(), 4);

    signal_broker(data.path(), "STOP");
    let spool = proxy.env.dir.path().join("spool/events.ndjson");
    for _ in 0..6 {
        assert_eq!(call().await.status(), 200);
    }
    let deadline = Instant::now() + support::PATIENCE;
    while !spool.exists() {
        assert!(
            Instant::now() < deadline,
            "nothing spooled; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal_broker(data.path(), "CONT");
    while spool.exists() {
        assert!(
            Instant::now() < deadline,
            "spool not replayed; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_proxy(&mut proxy).await;
    let events = topic_events(&brokers, &proxy.env.events_topic);
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (events.len(), ids.len()),
        (served, served),
        "log:\n{}",
        proxy.log()
    );
    assert!(
        proxy
            .log()
            .contains("checked spooled events kafka may have stored"),
        "{}",
        proxy.log()
    );
}
