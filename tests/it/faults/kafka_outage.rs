//! Faults: a Kafka outage under HTTP ingest and under the proxy, and a
//! PostgreSQL outage under both (`docs/reliability.md`, "Kafka and
//! PostgreSQL outages"). Each test kills a private broker or server of its
//! own (`support::private_kafka`, `support::private_postgres`) with SIGKILL,
//! counts exactly what was stored, and prints its recovery times.

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tollgate_contract::{Event, Outcome};

use crate::proxy::Proxy;
use crate::support::events::{call_event, usage};
use crate::support::private_kafka::PrivateKafka;
use crate::support::private_postgres::PrivatePostgres;
use crate::support::{self, TestEnv};

/// Processes a test started with settings of its own; killed when dropped.
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tollgate <args>` of `env`, with `vars` set, its stderr in `<label>.log`.
pub(crate) fn spawn_with(
    env: &TestEnv,
    label: &str,
    args: &[&str],
    vars: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.log_path(label))
        .unwrap();
    env.tollgate(args)
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

pub(crate) fn run_with(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> String {
    let out = env
        .tollgate(args)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The secret `tollgate keys create` printed last.
pub(crate) fn last_line(stdout: &str) -> String {
    stdout.lines().last().unwrap().trim().to_string()
}

/// Messages on `topic` of `brokers`: the sum of its partitions' high
/// watermarks (events are produced idempotently, never in transactions, so
/// every offset is one record: a duplicate in Kafka shows here).
pub(crate) async fn records_in(brokers: &str, topic: &str) -> i64 {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    // librdkafka's metadata and watermark calls block their thread.
    tokio::task::spawn_blocking(move || records_in_blocking(&brokers, &topic))
        .await
        .unwrap()
}

fn records_in_blocking(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", support::unique("watermarks"))
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .unwrap()
                .1
        })
        .sum()
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What the retrying ingest client saw.
#[derive(Default)]
pub(crate) struct ClientLog {
    pub(crate) accepted: u64,
    /// 503s, and how many of them said `Retry-After: 1`.
    pub(crate) unavailable: u64,
    retry_after_1: u64,
    first_503: Option<Instant>,
    successes: Vec<Instant>,
}

/// POST `batch` until every event is accepted: after a 503 (waiting its
/// `Retry-After`), and resending only the events a 200 answered `failed`.
pub(crate) async fn post_until_accepted(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    batch: Vec<Event>,
    log: &Mutex<ClientLog>,
) {
    let mut pending = batch;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "ingest never took the batch");
        let response = match http.post(url).bearer_auth(key).json(&pending).send().await {
            Ok(response) => response,
            Err(err) => panic!("ingest unreachable: {err}"),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Value = response.json().await.unwrap();
        if status == 503 {
            {
                let mut log = log.lock().unwrap();
                log.unavailable += 1;
                log.first_503.get_or_insert(Instant::now());
                if retry_after.as_deref() == Some("1") {
                    log.retry_after_1 += 1;
                }
            }
            let wait: u64 = retry_after.and_then(|v| v.parse().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        let failed: HashSet<usize> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "failed")
            .map(|r| {
                assert_eq!(r["retryable"], true, "{r}");
                r["index"].as_u64().unwrap() as usize
            })
            .collect();
        assert_eq!(body["rejected"], 0, "{body}");
        {
            let mut log = log.lock().unwrap();
            log.accepted += body["accepted"].as_u64().unwrap();
            log.successes.push(Instant::now());
        }
        pending = pending
            .into_iter()
            .enumerate()
            .filter(|(i, _)| failed.contains(i))
            .map(|(_, e)| e)
            .collect();
        if !pending.is_empty() {
            // As `Retry-After: 1` asks (a client's pacing, not a wait for progress).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// `tollgate migrate` with `vars`, an ingest key, and `tollgate ingest` and
/// `tollgate process` started with `vars`; returns once ingest is healthy.
pub(crate) async fn ingest_and_processor(
    env: &TestEnv,
    vars: &[(&str, &str)],
) -> (String, Processes) {
    run_with(env, &["migrate"], vars);
    let key = last_line(&run_with(
        env,
        &["keys", "create", "--name", "faults", "--role", "ingest"],
        vars,
    ));
    let processes = Processes(vec![
        spawn_with(env, "ingest", &["ingest"], vars),
        spawn_with(env, "process", &["process"], vars),
    ]);
    support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        Duration::from_secs(60),
        &env.log_path("ingest"),
    )
    .await;
    (key, processes)
}

/// Wait (until the count stalls for `patience`) for `total` calls in
/// `env`'s ClickHouse, and assert each is stored exactly once.
pub(crate) async fn stored_once(env: &TestEnv, total: u64, patience: Duration) {
    let stored = env
        .wait_for_count("SELECT count() FROM {db}.calls", total, patience)
        .await;
    assert_eq!(
        stored,
        total,
        "calls; processor log:\n{}",
        std::fs::read_to_string(env.log_path("process")).unwrap_or_default()
    );
    assert_eq!(
        env.ch_u64("SELECT uniqExact(event_id) FROM {db}.calls")
            .await,
        total
    );
}

/// Four clients POSTing `events` in batches of 50 to `env`'s ingest with
/// `key`, each pausing 400 ms after a batch is in (about 500 events/s) and
/// retrying until it is ([`post_until_accepted`]); what they saw goes to
/// the log returned.
pub(crate) fn paced_clients(
    env: &TestEnv,
    key: &str,
    events: Vec<Event>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Mutex<ClientLog>>) {
    let (clients, log, _) = paced_clients_until(env, key, events, Arc::default());
    (clients, log)
}

/// Batches no client has taken yet.
pub(crate) type Unsent = Arc<Mutex<Vec<Vec<Event>>>>;

/// [`paced_clients`] that take no new batch once `stop` is set (each
/// finishes the batch it holds); the batches never sent stay in the queue
/// returned.
pub(crate) fn paced_clients_until(
    env: &TestEnv,
    key: &str,
    events: Vec<Event>,
    stop: Arc<AtomicBool>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Arc<Mutex<ClientLog>>,
    Unsent,
) {
    let url = format!("{}/v1/events", env.ingest_url());
    let log = Arc::new(Mutex::new(ClientLog::default()));
    let batches: Unsent = Arc::new(Mutex::new(
        events.chunks(50).map(<[Event]>::to_vec).collect(),
    ));
    let http = reqwest::Client::new();
    let clients = (0..4)
        .map(|_| {
            let (http, url, key, log, batches, stop) = (
                http.clone(),
                url.clone(),
                key.to_string(),
                log.clone(),
                batches.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let next = batches.lock().unwrap().pop();
                    let Some(batch) = next else {
                        return;
                    };
                    post_until_accepted(&http, &url, &key, batch, &log).await;
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            })
        })
        .collect();
    (clients, log, batches)
}

pub(crate) fn team_events(team: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|_| {
            call_event(
                team,
                "openai",
                "gpt-4o-mini",
                Utc::now(),
                usage(100, 0, 0, 20, 0),
                Outcome::Success,
            )
        })
        .collect()
}

pub(crate) async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_for_30_s_under_http_ingest_loses_and_duplicates_no_event() {
    let kafka = PrivateKafka::start_shared().await;
    let brokers = kafka.brokers();
    let env = TestEnv::new("faults_kafka_ingest").await;
    // Kafka's acknowledgement of an event sent before the crash may come
    // only when the broker is back: the producer waits for it (and retries
    // idempotently) rather than answer a timeout the client would resend.
    let vars = [
        ("TOLLGATE_KAFKA__BROKERS", brokers.as_str()),
        ("TOLLGATE_KAFKA__MESSAGE_TIMEOUT_MS", "300000"),
    ];
    let (key, _processes) = ingest_and_processor(&env, &vars).await;

    // 5,000 events in 100 batches, four clients each sending a batch every
    // 400 ms (about 500 events/s), each retrying until its batch is in.
    let (clients, log) = paced_clients(&env, &key, team_events("faults", 5_000));
    wait_until("1,500 events accepted", Duration::from_secs(120), || {
        let accepted = log.lock().unwrap().accepted;
        async move { accepted >= 1_500 }
    })
    .await;

    let killed = Instant::now();
    kafka.kill();
    // `tollgate simulate` joins during the outage: it must wait, not give up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let simulate = env
        .tollgate(&[
            "simulate",
            "--target",
            &env.ingest_url(),
            "--key",
            &key,
            "--events",
            "500",
            "--batch",
            "100",
            "--concurrency",
            "1",
            "--seed",
            "16",
            "--span-minutes",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The rest of the 30 s outage (a window, not a wait for progress).
    tokio::time::sleep(Duration::from_secs(25)).await;
    let restart = kafka.restart_shared().await;
    let back = Instant::now();
    for client in clients {
        client.await.unwrap();
    }
    let simulated = simulate.wait_with_output().unwrap();
    let simulate_err = String::from_utf8_lossy(&simulated.stderr).to_string();
    let simulate_out = String::from_utf8_lossy(&simulated.stdout).to_string();
    assert!(
        simulated.status.success(),
        "simulate gave up:\n{simulate_out}\n{simulate_err}"
    );
    assert!(
        simulate_err.contains("waiting as its Retry-After asks (1 s)"),
        "simulate never said it was waiting:\n{simulate_err}"
    );
    let simulate_accepted: u64 = simulate_out
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count in {simulate_out:?}"));
    assert_eq!(simulate_accepted, 500, "{simulate_out}");

    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    assert_eq!(log.accepted, 5_000);
    assert!(
        log.unavailable > 0,
        "no client ever got a 503 during the outage; ingest log:\n{}",
        std::fs::read_to_string(env.log_path("ingest")).unwrap_or_default()
    );
    assert_eq!(
        log.retry_after_1, log.unavailable,
        "every 503 says Retry-After: 1"
    );
    let first_503 = log.first_503.unwrap().duration_since(killed);
    let first_200_after = log
        .successes
        .iter()
        .find(|at| **at > back)
        .map(|at| at.duration_since(back));

    // Exactly once: in Kafka, and in ClickHouse through the processor.
    let total = 5_000 + simulate_accepted;
    let in_kafka = records_in(&brokers, &env.events_topic).await;
    assert_eq!(
        in_kafka as u64,
        total,
        "records on the events topic; broker log:\n{}",
        kafka.log()
    );
    stored_once(&env, total, Duration::from_secs(180)).await;
    let recorded = back.elapsed();
    assert_eq!(
        env.ch_u64("SELECT count() FROM {db}.calls WHERE team_id = 'faults'")
            .await,
        5_000
    );
    eprintln!(
        "FIGURES kafka-ingest: first 503 {} after the kill; {} 503s (all Retry-After: 1); broker restart took {}; \
         first 200 {} after the broker answered; all {total} events in ClickHouse {} after it answered",
        secs(first_503),
        log.unavailable,
        secs(restart),
        first_200_after.map(secs).unwrap_or_else(|| "-".into()),
        secs(recorded),
    );
}

/// Chat calls through `proxy` with `key`, `concurrency` at a time; the
/// statuses in order of completion.
async fn chat_calls(proxy: &Proxy, key: &str, n: usize, concurrency: usize) -> Vec<u16> {
    use futures::stream::{self, StreamExt};
    stream::iter(0..n)
        .map(|_| async { proxy.chat(key, "gpt-4o-mini", &[]).await.status().as_u16() })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_proxied_calls_during_a_kafka_outage_are_served_and_recorded_once() {
    let kafka = PrivateKafka::start_shared().await;
    let brokers = kafka.brokers();
    let mut proxy = Proxy::start("faults_kafka_proxy", "", Some(&brokers)).await;
    // The ClickHouse tables exist (TestEnv ran `migrate`); the private
    // broker gets the other topics the processor reads.
    run_with(
        &proxy.env,
        &["migrate"],
        &[("TOLLGATE_KAFKA__BROKERS", brokers.as_str())],
    );
    proxy.run_proxy().await;
    let processor = proxy.spawn("process", &["process"]);
    proxy.children.push(processor);
    let key = proxy.key("acme", "team-outage", "u", None);
    let before = chat_calls(&proxy, &key, 10, 4).await;
    assert_eq!(before, vec![200; 10]);
    wait_until(
        "the first 10 calls in ClickHouse",
        Duration::from_secs(120),
        || async { proxy.env.ch_u64("SELECT count() FROM {db}.calls").await == 10 },
    )
    .await;

    kafka.kill();
    let killed = Instant::now();
    let during = chat_calls(&proxy, &key, 1_000, 8).await;
    let served_in = killed.elapsed();
    assert_eq!(
        during.iter().filter(|s| **s == 200).count(),
        1_000,
        "statuses: {:?}; log:\n{}",
        during.iter().filter(|s| **s != 200).collect::<Vec<_>>(),
        proxy.log()
    );
    // Nothing reached the broker, so every event of the outage waits in
    // the proxy: its spool has them.
    wait_until("events spooled", Duration::from_secs(120), || async {
        proxy.metric("tollgate_proxy_events_spooled_total").await > 0
    })
    .await;

    let restart = kafka.restart_shared().await;
    let back = Instant::now();
    let stored = proxy
        .env
        .wait_for_count(
            "SELECT count() FROM {db}.calls",
            1_010,
            Duration::from_secs(300),
        )
        .await;
    let recorded = back.elapsed();
    assert_eq!(stored, 1_010, "calls; proxy log:\n{}", proxy.log());
    assert_eq!(
        proxy
            .env
            .ch_u64("SELECT uniqExact(event_id) FROM {db}.calls WHERE team_id = 'team-outage'")
            .await,
        1_010
    );
    let in_kafka = records_in(&brokers, &proxy.env.events_topic).await;
    assert_eq!(in_kafka, 1_010, "records on the events topic");
    wait_until("the spool replayed", Duration::from_secs(120), || async {
        proxy.metric("tollgate_proxy_spool_pending_bytes").await == 0
    })
    .await;
    let spooled = proxy.metric("tollgate_proxy_events_spooled_total").await;
    let replayed = proxy.metric("tollgate_proxy_events_replayed_total").await;
    assert_eq!(replayed, spooled, "every spooled event replayed");
    eprintln!(
        "FIGURES kafka-proxy: 1000 calls served in {} while kafka was down ({spooled} events spooled); \
         broker restart took {}; all 1010 calls in ClickHouse {} after it answered",
        secs(served_in),
        secs(restart),
        secs(recorded),
    );
}

/// `POST /v1/events` of one event with `key`: the status and the body.
async fn ingest_one(http: &reqwest::Client, env: &TestEnv, key: &str) -> (u16, Value) {
    let event = team_events("pg-outage", 1);
    let url = format!("{}/v1/events", env.ingest_url());
    let response = post_as(http, &url, key, &event).await;
    if response.status() == 503 {
        assert_eq!(response.headers()["retry-after"], "1");
    }
    status_and_body(response).await
}

/// POST `body` as JSON to `url` with the bearer `key`.
async fn post_as(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: &impl serde::Serialize,
) -> reqwest::Response {
    http.post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// An answer's status and its JSON body (`Null` when it has none).
async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// OTLP/HTTP (JSON) export of one GenAI chat span with `key`: the status
/// and the body. The receiver takes the span's tenant from the key.
async fn otlp_one(http: &reqwest::Client, env: &TestEnv, key: &str) -> (u16, Value) {
    let end = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let string = |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
    let int = |key: &str, value: i64| json!({"key": key, "value": {"intValue": value.to_string()}});
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": hex::encode(rand::random::<[u8; 16]>()),
        "spanId": hex::encode(rand::random::<[u8; 8]>()),
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": (end - 300_000_000).to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": [
            string("tollgate.org_id", "acme"),
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.provider.name", "openai"),
            string("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 100),
            int("gen_ai.usage.output_tokens", 20),
        ],
    }]}]}]});
    let url = format!("{}/v1/traces", env.ingest_url());
    status_and_body(post_as(http, &url, key, &body).await).await
}

/// A chat call through the proxy with `key`: the status and the body.
async fn proxy_one(proxy: &Proxy, key: &str) -> (u16, Value) {
    status_and_body(proxy.chat(key, "gpt-4o-mini", &[]).await).await
}

/// Poll `call` until it answers `want`; the time that took.
async fn until_status<F, Fut>(what: &str, want: u16, timeout: Duration, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let started = Instant::now();
    loop {
        let (status, body) = call().await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: still {status} after {timeout:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const STALE_SECS: u64 = 45;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_keeps_recent_keys_working_for_the_stale_window_and_unknown_ones_get_503() {
    let mut pg = PrivatePostgres::start().await;
    let stale = STALE_SECS.to_string();
    let mut proxy = Proxy::start(
        "faults_pg",
        &format!("key_cache_secs = 1\nkey_cache_stale_secs = {stale}"),
        None,
    )
    .await;
    // Every process of this environment uses the private server.
    let private_url = pg.create_database(&proxy.env.name).await;
    let config = std::fs::read_to_string(&proxy.env.config_path).unwrap();
    std::fs::write(
        &proxy.env.config_path,
        config.replace(&proxy.env.pg_url, &private_url),
    )
    .unwrap();
    proxy.env.run(&["migrate"]);
    let ingest_vars = [
        ("TOLLGATE_INGEST__KEY_CACHE_SECS", "1"),
        ("TOLLGATE_INGEST__KEY_CACHE_STALE_SECS", stale.as_str()),
    ];
    let _ingest = Processes(vec![spawn_with(
        &proxy.env,
        "ingest",
        &["ingest"],
        &ingest_vars,
    )]);
    support::wait_http(
        &format!("{}/healthz", proxy.env.ingest_url()),
        Duration::from_secs(60),
        &proxy.env.log_path("ingest"),
    )
    .await;
    proxy.run_proxy().await;
    let http = reqwest::Client::new();
    let ingest_key = |env: &TestEnv| env.create_key_with_role("ingest", None);
    let (seen, unseen, revoked) = (
        ingest_key(&proxy.env),
        ingest_key(&proxy.env),
        ingest_key(&proxy.env),
    );
    let proxy_seen = proxy.key("acme", "team-a", "u", None);
    let proxy_unseen = proxy.key("acme", "team-a", "u", None);
    let proxy_revoked = proxy.key("acme", "team-a", "u", None);
    for key in [&seen, &revoked] {
        assert_eq!(ingest_one(&http, &proxy.env, key).await.0, 200);
    }
    for key in [&proxy_seen, &proxy_revoked] {
        assert_eq!(proxy_one(&proxy, key).await.0, 200);
    }

    // While PostgreSQL is up, a revocation stops a key within the cache's
    // refresh (key_cache_secs = 1).
    let prefix = |secret: &str| secret.split('_').nth(1).unwrap().to_string();
    proxy.env.run(&["keys", "revoke", &prefix(&revoked)]);
    proxy.env.run(&["keys", "revoke", &prefix(&proxy_revoked)]);
    let revoked_at_ingest =
        until_status("revoked ingest key", 401, Duration::from_secs(60), || {
            ingest_one(&http, &proxy.env, &revoked)
        })
        .await;
    let revoked_at_proxy = until_status("revoked proxy key", 401, Duration::from_secs(60), || {
        proxy_one(&proxy, &proxy_revoked)
    })
    .await;

    // Checked just now: the stale window starts here at the latest.
    assert_eq!(ingest_one(&http, &proxy.env, &seen).await.0, 200);
    assert_eq!(proxy_one(&proxy, &proxy_seen).await.0, 200);
    let last_checked = Instant::now();
    pg.kill();
    let killed = Instant::now();

    // Keys seen recently keep working (their fresh entry expires within a
    // second, so these are served from the stale copy)...
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = ingest_one(&http, &proxy.env, &seen).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = proxy_one(&proxy, &proxy_seen).await;
    assert_eq!(status, 200, "{body}");
    // The OTLP receiver takes the span's team and user from the key, which
    // were read and cached with it: no PostgreSQL either.
    let (status, body) = otlp_one(&http, &proxy.env, &seen).await;
    assert_eq!(
        status,
        200,
        "{body}; log:\n{}",
        std::fs::read_to_string(proxy.env.log_path("ingest")).unwrap_or_default()
    );
    assert!(body.get("partialSuccess").is_none(), "{body}");
    // ...keys never seen get a clear 503, not a 401...
    let (status, body) = ingest_one(&http, &proxy.env, &unseen).await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot check the API key right now (")
            && error.contains("postgresql")
            && error.ends_with("); retry later"),
        "{error}"
    );
    assert_eq!(body["retryable"], true);
    let (status, body) = proxy_one(&proxy, &proxy_unseen).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string()
            .contains("cannot verify the API key right now"),
        "{body}"
    );
    // ...and revoked keys stay revoked.
    let (status, body) = ingest_one(&http, &proxy.env, &revoked).await;
    assert_eq!(
        status,
        401,
        "{body}; log:\n{}",
        std::fs::read_to_string(proxy.env.log_path("ingest")).unwrap_or_default()
    );
    let (status, body) = proxy_one(&proxy, &proxy_revoked).await;
    assert_eq!(status, 401, "{body}; log:\n{}", proxy.log());

    // The stale window ends: seen keys get 503 too, not before.
    until_status(
        "seen ingest key after the window",
        503,
        Duration::from_secs(180),
        || ingest_one(&http, &proxy.env, &seen),
    )
    .await;
    let ingest_window = last_checked.elapsed();
    until_status(
        "seen proxy key after the window",
        503,
        Duration::from_secs(180),
        || proxy_one(&proxy, &proxy_seen),
    )
    .await;
    let proxy_window = last_checked.elapsed();
    // The last check may have been up to key_cache_secs before `last_checked`.
    for window in [ingest_window, proxy_window] {
        assert!(
            window >= Duration::from_secs(STALE_SECS - 1),
            "a seen key stopped after {window:?}, before the {STALE_SECS} s window"
        );
    }

    // PostgreSQL returns: everything works again.
    let restart = pg.restart().await;
    let back = Instant::now();
    let ingest_back = until_status("seen ingest key", 200, Duration::from_secs(120), || {
        ingest_one(&http, &proxy.env, &seen)
    })
    .await;
    until_status("unseen ingest key", 200, Duration::from_secs(120), || {
        ingest_one(&http, &proxy.env, &unseen)
    })
    .await;
    let proxy_back = until_status("seen proxy key", 200, Duration::from_secs(120), || {
        proxy_one(&proxy, &proxy_seen)
    })
    .await;
    until_status("unseen proxy key", 200, Duration::from_secs(120), || {
        proxy_one(&proxy, &proxy_unseen)
    })
    .await;
    let all_back = back.elapsed();
    eprintln!(
        "FIGURES postgres: revocation took effect after {} (ingest) and {} (proxy); seen keys served {} \
         (ingest) and {} (proxy) after their last check (window {STALE_SECS} s); postgres restart took {}; \
         first 200 {} (ingest) and {} (proxy) after it accepted connections, every key {}; outage {}",
        secs(revoked_at_ingest),
        secs(revoked_at_proxy),
        secs(ingest_window),
        secs(proxy_window),
        secs(restart),
        secs(ingest_back),
        secs(proxy_back),
        secs(all_back),
        secs(back.duration_since(killed)),
    );
}
