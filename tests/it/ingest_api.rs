//! `tollgate ingest` against real Kafka and PostgreSQL: authentication, per-event
//! validation in the response, body limits, NDJSON, and that exactly the
//! accepted events (keyed by team) are on the events topic.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::TestEnv;
use uuid::Uuid;

const PARTITIONS: i32 = 4;

/// Create the environment's topics (tolerating ones that already exist).
pub(crate) async fn create_topics(env: &TestEnv) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .create()
        .unwrap();
    let names = [&env.events_topic, &env.dlq_topic];
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(crate::support::PATIENCE));
    for result in admin
        .create_topics(&topics, &options)
        .await
        .expect("kafka reachable")
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
}

/// Create `env`'s topics, start `tollgate ingest` on them and wait until it
/// answers.
pub(crate) async fn start_ingest(env: &mut TestEnv) {
    create_topics(env).await;
    env.spawn("ingest", &["ingest"]);
    support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        Duration::from_secs(60),
        &env.log_path("ingest"),
    )
    .await;
}

/// A started `tollgate ingest` with its own topics and database.
struct Ingest {
    env: TestEnv,
    http: reqwest::Client,
}

impl Ingest {
    async fn start(label: &str) -> Self {
        let mut env = TestEnv::new(label).await;
        start_ingest(&mut env).await;
        Self {
            env,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.ingest_url())
    }

    async fn post(
        &self,
        key: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url("/v1/events"))
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("response is not JSON ({err}): {text:?}"));
        (status, body)
    }

    async fn post_json(&self, key: &str, events: &Value) -> (StatusCode, Value) {
        self.post(
            Some(key),
            "application/json",
            serde_json::to_vec(events).unwrap(),
        )
        .await
    }

    /// Every message on the events topic: (key, event JSON).
    fn events_on_topic(&self) -> Vec<(String, Value)> {
        read_topic(&self.env.events_topic)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.log_path("ingest")).unwrap_or_default()
    }
}

/// Read every message currently on `topic`, exactly: the count comes from the
/// partitions' watermarks, so an extra message would be seen too.
fn read_topic(topic: &str) -> Vec<(String, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::kafka_brokers())
        .set("group.id", support::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut expected = 0i64;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, crate::support::PATIENCE)
            .unwrap();
        expected += high - low;
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut messages = Vec::new();
    let deadline = Instant::now() + crate::support::PATIENCE;
    while (messages.len() as i64) < expected && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
            let value: Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            messages.push((key, value));
        }
    }
    assert_eq!(
        messages.len() as i64,
        expected,
        "could not read all {expected} messages of {topic}"
    );
    messages
}

/// A `tollgate` child with extra environment variables, killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_with_env(env: &TestEnv, label: &str, args: &[&str], vars: &[(&str, &str)]) -> Running {
    let log = std::fs::File::create(env.log_path(label)).unwrap();
    let mut command = env.tollgate(args);
    command
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    Running(command.spawn().unwrap())
}

pub(crate) fn call_event(org: &str, team: &str) -> Value {
    json!({
        "schema_version": 1,
        "event_id": Uuid::now_v7(),
        "kind": "ai.call.completed",
        "occurred_at": Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "org_id": org,
        "team_id": team,
        "user_id": "u-1",
        "call": {
            "call_id": format!("call-{}", Uuid::now_v7()),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "operation": "chat",
            "duration_ms": 420,
            "usage": {"input_tokens": 100, "output_tokens": 20, "cached_input_tokens": 50},
            "outcome": "success",
            "http_status": 200
        }
    })
}

fn edited(org: &str, team: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = call_event(org, team);
    edit(&mut v);
    v
}

#[tokio::test]
async fn mixed_batch_reports_each_event_and_only_accepted_events_reach_kafka() {
    let ingest = Ingest::start("ingest_mixed").await;
    let key = ingest.env.create_key("acme");

    let valid = [
        call_event("acme", "search"),
        call_event("acme", "chat"),
        call_event("acme", "search"),
    ];
    let first_id = valid[0]["event_id"].clone();
    let bad: Vec<(&str, Value)> = vec![
        (
            "call.duration_ms",
            edited("acme", "t", |v| v["call"]["duration_ms"] = json!("420")),
        ),
        (
            "call.model",
            edited("acme", "t", |v| {
                drop(v["call"].as_object_mut().unwrap().remove("model"))
            }),
        ),
        (
            "org_id",
            edited("acme", "t", |v| {
                drop(v.as_object_mut().unwrap().remove("org_id"))
            }),
        ),
        (
            "call.usage.input_tokens",
            edited("acme", "t", |v| {
                v["call"]["usage"]["input_tokens"] = json!(-5)
            }),
        ),
        (
            "occurred_at",
            edited("acme", "t", |v| {
                v["occurred_at"] = json!((Utc::now() + chrono::Duration::days(3)).to_rfc3339())
            }),
        ),
        (
            "schema_version",
            edited("acme", "t", |v| v["schema_version"] = json!(2)),
        ),
        (
            "event_id",
            edited("acme", "t", |v| v["event_id"] = json!(Uuid::new_v4())),
        ),
        (
            "kind",
            edited("acme", "t", |v| v["kind"] = json!("ai.call.exploded")),
        ),
        (
            "call.usage.cached_input_tokens",
            edited("acme", "t", |v| {
                v["call"]["usage"]["cached_input_tokens"] = json!(101)
            }),
        ),
        (
            "call.model",
            edited("acme", "t", |v| v["call"]["model"] = json!("m".repeat(300))),
        ),
        (
            "user_id",
            edited("acme", "t", |v| v["user_id"] = json!("bell\u{7}")),
        ),
        ("event", json!("not an object")),
        // A call carrying an admin object, and the control plane's own
        // events and org, which only Tollgate writes.
        (
            "admin",
            edited("acme", "t", |v| {
                v["admin"] = json!({"note": "I am a change"})
            }),
        ),
        (
            "kind",
            edited("acme", "t", |v| {
                v["kind"] = json!("admin.personal_data.erased");
                drop(v.as_object_mut().unwrap().remove("call"));
                v["admin"] = json!({"chain_id": "acme/t", "seqs": [4], "entry_hashes": ["00"]});
            }),
        ),
        (
            "event_id",
            edited("acme", "t", |v| v["event_id"] = first_id.clone()),
        ),
    ];
    // Interleave: valid, bad..., valid, valid.
    let mut body = vec![valid[0].clone()];
    body.extend(bad.iter().map(|(_, v)| v.clone()));
    body.push(valid[1].clone());
    body.push(valid[2].clone());

    let (status, response) = ingest.post_json(&key, &Value::Array(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{response:#}\n{}", ingest.log());
    assert_eq!(response["accepted"], 3, "{response:#}");
    assert_eq!(response["rejected"], bad.len(), "{response:#}");
    assert_eq!(response["failed"], 0, "{response:#}");
    let results = response["results"].as_array().unwrap();
    assert_eq!(results.len(), body.len());
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i);
    }
    for (i, (field, _)) in bad.iter().enumerate() {
        let result = &results[i + 1];
        assert_eq!(result["status"], "rejected", "{result}");
        assert_eq!(result["field"], *field, "item {}: {result}", i + 1);
        assert!(!result["reason"].as_str().unwrap().is_empty(), "{result}");
    }
    let duplicate = &results[bad.len()];
    assert_eq!(duplicate["reason"], "duplicate in this request");
    let accepted_ids: BTreeSet<String> = results
        .iter()
        .filter(|r| r["status"] == "accepted")
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let valid_ids: BTreeSet<String> = valid
        .iter()
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accepted_ids, valid_ids);

    let on_topic = ingest.events_on_topic();
    assert_eq!(
        on_topic.len(),
        3,
        "exactly the accepted events are on the topic: {on_topic:?}"
    );
    let by_id: BTreeMap<String, (String, Value)> = on_topic
        .into_iter()
        .map(|(key, value)| {
            (
                value["event_id"].as_str().unwrap().to_string(),
                (key, value),
            )
        })
        .collect();
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), valid_ids);
    for sent in &valid {
        let (key, stored) = &by_id[sent["event_id"].as_str().unwrap()];
        assert_eq!(
            key,
            sent["team_id"].as_str().unwrap(),
            "message key is the team"
        );
        assert_eq!(stored["call"]["usage"]["input_tokens"], 100);
        assert_eq!(stored["org_id"], "acme");
    }
}

#[tokio::test]
async fn missing_wrong_and_revoked_keys_are_401() {
    let ingest = Ingest::start("ingest_auth").await;
    let events = json!([call_event("acme", "search")]);
    let body = serde_json::to_vec(&events).unwrap();

    let (status, response) = ingest.post(None, "application/json", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        response,
        json!({"error": "missing API key: send Authorization: Bearer <key>"})
    );

    let wrong = format!("tg_abcdefgh_{}", "x".repeat(40));
    for key in [wrong.as_str(), "nonsense"] {
        let (status, response) = ingest
            .post(Some(key), "application/json", body.clone())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            response["error"]
                .as_str()
                .unwrap()
                .contains("invalid API key"),
            "{response}"
        );
    }

    let key = ingest.env.create_key("acme");
    // Same prefix, different secret: still invalid.
    let forged = format!("{}{}", &key[..12], "Z".repeat(key.len() - 12));
    let (status, _) = ingest
        .post(Some(&forged), "application/json", body.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, response) = ingest
        .post(Some(&key), "application/json", body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");

    let prefix = &key[3..11];
    let out = ingest
        .env
        .tollgate(&["keys", "revoke", prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ingest
        .env
        .tollgate(&["keys", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["prefix"], prefix);
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");
    assert!(listed[0].get("secret_hash").is_none());

    // A revocation takes effect when the key's cached answer expires
    // (`ingest.key_cache_secs`, docs/ingest-api.md).
    let start = std::time::Instant::now();
    let response = loop {
        let (status, response) = ingest
            .post(Some(&key), "application/json", body.clone())
            .await;
        if status == StatusCode::UNAUTHORIZED {
            break response;
        }
        assert_eq!(status, StatusCode::OK, "{response}");
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "the revoked key was still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(
        response["error"].as_str().unwrap().contains("revoked"),
        "{response}"
    );
    // Revoking again says there is nothing to revoke.
    let out = ingest
        .env
        .tollgate(&["keys", "revoke", prefix])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn org_scoped_key_cannot_send_another_orgs_events() {
    let ingest = Ingest::start("ingest_org").await;
    let key = ingest.env.create_key("acme");
    let ours = call_event("acme", "search");
    let theirs = call_event("globex", "search");
    let (status, response) = ingest.post_json(&key, &json!([ours, theirs])).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["accepted"], 1);
    assert_eq!(response["results"][1]["status"], "rejected");
    assert_eq!(response["results"][1]["field"], "org_id");
    assert!(
        response["results"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("acme"),
        "{response}"
    );
    assert_eq!(response["results"][1]["event_id"], theirs["event_id"]);

    // Only other orgs' events: nothing usable, so 400 with the same shape.
    let (status, response) = ingest.post_json(&key, &call_event("globex", "x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    assert_eq!(response["accepted"], 0);
    assert_eq!(response["results"][0]["field"], "org_id");
    assert!(response["error"].is_string());

    let on_topic = ingest.events_on_topic();
    assert_eq!(on_topic.len(), 1);
    assert_eq!(on_topic[0].1["event_id"], ours["event_id"]);
}

#[tokio::test]
async fn oversized_body_is_413_and_the_server_keeps_serving() {
    let ingest = Ingest::start("ingest_limit").await;
    let key = ingest.env.create_key("acme");
    let limit = 5 * 1024 * 1024;
    let mut huge = Vec::with_capacity(limit + 1024 * 1024);
    huge.push(b'[');
    let one = serde_json::to_vec(&call_event("acme", "search")).unwrap();
    while huge.len() < limit + 512 * 1024 {
        huge.extend_from_slice(&one);
        huge.push(b',');
    }
    huge.extend_from_slice(&one);
    huge.push(b']');
    let (status, response) = ingest.post(Some(&key), "application/json", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{response}");
    assert!(
        response["error"]
            .as_str()
            .unwrap()
            .contains(&limit.to_string()),
        "{response}"
    );

    let event = call_event("acme", "search");
    let (status, response) = ingest.post_json(&key, &json!([event])).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["accepted"], 1);

    // Whole-body problems are 400 naming the body.
    for bad in [&b"[{\"schema_version\": 1,"[..], b"[]", b"", b"42"] {
        let (status, response) = ingest
            .post(Some(&key), "application/json", bad.to_vec())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        assert_eq!(response["field"], "body", "{response}");
        assert!(response["error"].is_string());
    }
    assert_eq!(ingest.events_on_topic().len(), 1);
}

#[tokio::test]
async fn ndjson_body_keeps_good_lines() {
    let ingest = Ingest::start("ingest_ndjson").await;
    let key = ingest.env.create_key("acme");
    let a = call_event("acme", "search");
    let b = call_event("acme", "chat");
    let body = format!("{a}\n{{\"schema_version\": 1, broken\n\n{b}\n");
    let (status, response) = ingest.post(Some(&key), "application/x-ndjson", body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["accepted"], 2, "{response}");
    assert_eq!(response["rejected"], 1, "{response}");
    assert_eq!(response["results"][1]["field"], "event");
    assert!(
        response["results"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{response}"
    );
    assert_eq!(response["results"][2]["event_id"], b["event_id"]);
    let ids: BTreeSet<String> = ingest
        .events_on_topic()
        .into_iter()
        .map(|(_, v)| v["event_id"].as_str().unwrap().to_string())
        .collect();
    let sent = [&a, &b].map(|e| e["event_id"].as_str().unwrap().to_string());
    assert_eq!(ids, BTreeSet::from(sent));
}

#[tokio::test]
async fn schema_health_and_unknown_routes() {
    let ingest = Ingest::start("ingest_schema").await;
    let response = ingest
        .http
        .get(ingest.url("/v1/schema"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let schema: Value = response.json().await.unwrap();
    assert_eq!(schema, tollgate_contract::event_schema());
    assert_eq!(schema["title"], "Tollgate event");

    let response = ingest
        .http
        .get(ingest.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    let response = ingest
        .http
        .get(ingest.url("/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    let response = ingest
        .http
        .get(ingest.url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn keys_cli_validates_role() {
    let env = TestEnv::new("ingest_keys_cli").await;
    let out = env
        .tollgate(&["keys", "create", "--name", "x", "--role", "wizard"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    let out = env
        .tollgate(&["keys", "create", "--name", "reader", "--role", "finance"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert!(
        secret.starts_with("tg_") && secret.len() == 3 + 8 + 1 + 40,
        "{secret}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&secret[3..11]));
}

#[tokio::test]
async fn kafka_failure_is_reported_per_event_and_503() {
    let env = TestEnv::new("ingest_kafka_fail").await;
    // A topic name Kafka refuses: every produce fails, as when the log is unavailable.
    let _ingest = spawn_with_env(
        &env,
        "ingest",
        &["ingest"],
        &[
            ("TOLLGATE_KAFKA__EVENTS_TOPIC", "no such topic!"),
            ("TOLLGATE_KAFKA__MESSAGE_TIMEOUT_MS", "3000"),
        ],
    );
    support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        Duration::from_secs(60),
        &env.log_path("ingest"),
    )
    .await;
    let key = env.create_key("acme");
    let event = call_event("acme", "search");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", env.ingest_url()))
        .bearer_auth(&key)
        .json(&json!([event, {"schema_version": 2}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["accepted"].clone(),
            body["rejected"].clone(),
            body["failed"].clone()
        ),
        (json!(0), json!(1), json!(1)),
        "{body}"
    );
    assert_eq!(body["retryable"], true);
    let failed = &body["results"][0];
    assert_eq!(failed["status"], "failed", "{body}");
    assert_eq!(failed["event_id"], event["event_id"]);
    assert_eq!(failed["retryable"], true);
    assert!(
        failed["reason"].as_str().unwrap().contains("topic"),
        "{body}"
    );
    assert_eq!(body["results"][1]["field"], "schema_version");
}

#[tokio::test]
async fn ingest_refuses_to_start_when_kafka_is_unreachable() {
    let env = TestEnv::new("ingest_no_kafka").await;
    let port = support::free_port();
    let brokers = format!("127.0.0.1:{port}");
    let out = env
        .tollgate(&["ingest"])
        .env("TOLLGATE_KAFKA__BROKERS", &brokers)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("kafka at {brokers} is unreachable")),
        "{stderr}"
    );
}

#[tokio::test]
async fn key_without_ingest_role_is_403() {
    let ingest = Ingest::start("ingest_role").await;
    let out = ingest
        .env
        .tollgate(&["keys", "create", "--name", "reader", "--role", "finance"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let (status, response) = ingest
        .post_json(&key, &json!([call_event("acme", "search")]))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{response}");
    assert!(
        response["error"].as_str().unwrap().contains("finance"),
        "{response}"
    );
    let out = ingest
        .env
        .tollgate(&["keys", "create", "--name", "ops", "--role", "admin"])
        .output()
        .unwrap();
    let admin = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let (status, response) = ingest
        .post_json(&admin, &json!([call_event("globex", "search")]))
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
}

/// What a raw connection got before the server closed it, or `None` when
/// it was still open at `deadline` (a slowloris client holds it).
pub(crate) async fn until_closed(
    stream: &mut tokio::net::TcpStream,
    deadline: Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new("ingest_slow").await;
    create_topics(&env).await;
    // A body timeout of 1 s (`ingest.body_read_timeout_secs`); the headers'
    // is the fixed 10 s.
    let mut child = env
        .tollgate(&["ingest"])
        .env("TOLLGATE_INGEST__BODY_READ_TIMEOUT_SECS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::wait_http(
        &format!("{}/healthz", env.ingest_url()),
        Duration::from_secs(60),
        &env.log_path("ingest"),
    )
    .await;
    let key = env.create_key("acme");
    let address = env.ingest_url().trim_start_matches("http://").to_string();

    // Headers that never end, and a connection that sends nothing: both
    // closed after the headers' timeout (10 s), well within 20 s.
    let started = Instant::now();
    let mut partial = tokio::net::TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert!(
        until_closed(&mut partial, Duration::from_secs(20))
            .await
            .is_some(),
        "a connection with unfinished headers is still open after 20 s"
    );
    assert!(
        until_closed(&mut silent, Duration::from_secs(20))
            .await
            .is_some(),
        "a connection that sent nothing is still open after 20 s"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed too soon"
    );

    // A body announced as 1000 bytes of which 2 come: 408 naming the
    // setting after 1 s, and the connection closed.
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{"
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stalled, Duration::from_secs(15))
        .await
        .expect("a stalled body is still open after 15 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("ingest.body_read_timeout_secs"), "{answer}");

    // The server still serves.
    let response = reqwest::get(format!("{}/healthz", env.ingest_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn gzip_bodies_are_decoded_and_other_encodings_are_415() {
    use std::io::Write;
    let ingest = Ingest::start("ingest_gzip").await;
    let key = ingest.env.create_key("acme");
    let event = call_event("acme", "search");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(&json!([event])).unwrap())
        .unwrap();
    let send = |encoding: &'static str, body: Vec<u8>| {
        ingest
            .http
            .post(ingest.url("/v1/events"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    let response = send("gzip", gz.finish().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");

    let response = send("br", b"[]".to_vec()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "content-encoding", "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"br\""), "{body}");

    // A gzip bomb past ingest.max_body_bytes (5 MiB) once inflated: 413.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 6 * 1024 * 1024]).unwrap();
    let response = send("gzip", bomb.finish().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ingest.events_on_topic().len(), 1);
}

/// The hostile trial's items in one body: each is refused naming its
/// field, and the good one beside them is taken.
#[tokio::test]
async fn hostile_items_are_refused_by_field_and_the_others_taken() {
    let ingest = Ingest::start("ingest_hostile").await;
    let key = ingest.env.create_key("acme");
    let good = call_event("acme", "search");
    let text = |edit: &dyn Fn(&mut Value)| {
        let mut event = call_event("acme", "search");
        edit(&mut event);
        serde_json::to_string(&event).unwrap()
    };
    let repeated = text(&|e| e["call"]["usage"] = json!({"input_tokens": 10})).replacen(
        r#""input_tokens":10"#,
        r#""input_tokens":10,"input_tokens":999999"#,
        1,
    );
    let items = [
        (repeated, "call.usage.input_tokens"),
        (text(&|e| e["org_id"] = json!("\u{200b}")), "org_id"),
        (text(&|e| e["user_id"] = json!("ali\u{202e}ce")), "user_id"),
        (text(&|e| e["team_id"] = json!("_TOLLGATE")), "team_id"),
        (
            text(&|e| e["call"]["http_status"] = json!(999)),
            "call.http_status",
        ),
        (
            text(&|e| {
                e["occurred_at"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:60.000Z").to_string())
            }),
            "occurred_at",
        ),
    ];
    let body = format!(
        "\u{feff}[{}, {good}]",
        items
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (status, response) = ingest.post(Some(&key), "application/json", body).await;
    assert_eq!(status, StatusCode::OK, "{response:#}");
    assert_eq!(response["accepted"], 1, "{response:#}");
    for (index, (_, field)) in items.iter().enumerate() {
        assert_eq!(response["results"][index]["field"], *field, "{response:#}");
    }
    // RFC 7464 records.
    let (a, b) = (call_event("acme", "search"), call_event("acme", "search"));
    let (status, response) = ingest
        .post(
            Some(&key),
            "application/json-seq",
            format!("\x1e{a}\n\x1e{b}\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response:#}");
    assert_eq!(response["accepted"], 2, "{response:#}");
    assert_eq!(ingest.events_on_topic().len(), 3);
}
