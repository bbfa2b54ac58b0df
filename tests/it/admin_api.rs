//! Budget administration over the API and the admin-event outbox, against
//! real Kafka, ClickHouse and PostgreSQL: budgets created, replaced and
//! deleted through `POST`/`DELETE /api/v1/admin/budgets` (and the CLI) are
//! each exactly one `admin.*` event on the events topic with the right
//! fields; hostile input is refused with the field named and nothing
//! stored; a change made while Kafka is unreachable is committed, waits in
//! the outbox, and is published exactly once when a relay can reach Kafka.

use crate::support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use serde_json::{json, Value};
use support::kafka::read_records;
use support::TestEnv;
use tollgate_control::budgets::BudgetStore;

/// Create a key with `role`; returns (secret, prefix).
pub(crate) fn key(env: &TestEnv, role: &str) -> (String, String) {
    let out = env
        .tollgate(&["keys", "create", "--name", role, "--role", role])
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
    let prefix = secret.split('_').nth(1).unwrap().to_string();
    (secret, prefix)
}

/// `admin.*` events on `topic` by event id, read until `want` distinct
/// ones are there (or 30 s), then 3 s more so a duplicate would show.
pub(crate) async fn admin_events(topic: &str, want: usize) -> (Vec<Value>, HashMap<String, usize>) {
    let admin = |r: &[(String, Value)]| {
        r.iter()
            .filter(|(_, v)| v["kind"].as_str().unwrap_or("").starts_with("admin."))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    read_records(topic, crate::support::PATIENCE, |r| admin(r).len() >= want).await;
    // A window in which a second copy of an event would show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = admin(&read_records(topic, Duration::from_secs(8), |_| false).await);
    let mut copies = HashMap::new();
    for e in &all {
        *copies
            .entry(e["event_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    (all, copies)
}

/// The `admin.*` events on `topic` once `want` are there: exactly `want`,
/// each exactly once.
pub(crate) async fn admin_events_once(topic: &str, want: usize) -> Vec<Value> {
    let (events, copies) = admin_events(topic, want).await;
    assert_eq!(events.len(), want, "{events:#?}");
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    events
}

pub(crate) fn event<'a>(events: &'a [Value], event_id: &Value) -> &'a Value {
    events
        .iter()
        .find(|e| e["event_id"] == *event_id)
        .unwrap_or_else(|| panic!("no event {event_id} in {events:#?}"))
}

async fn pg(env: &TestEnv) -> sqlx::PgPool {
    sqlx::PgPool::connect(&env.pg_url).await.unwrap()
}

/// `n` admin events `{"n": 0..n}` in the outbox, in order; their outbox ids.
async fn enqueue_rows(pool: &sqlx::PgPool, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let event =
            tollgate_contract::admin::admin_event("admin.test.row", "test", json!({ "n": i }));
        let enqueued = tollgate_control::outbox::enqueue_alone(pool, &event)
            .await
            .unwrap();
        ids.push(enqueued.outbox_id);
    }
    ids
}

/// An outbox relay publishing to this environment's events topic.
fn relay(env: &TestEnv, pool: &sqlx::PgPool) -> tollgate_control::outbox::OutboxRelay {
    let kafka = tollgate_control::config::KafkaConfig {
        brokers: support::kafka_brokers(),
        events_topic: env.events_topic.clone(),
        ..Default::default()
    };
    let producer = tollgate_control::kafka::EventProducer::new(&kafka).unwrap();
    tollgate_control::outbox::OutboxRelay::new(pool.clone(), producer)
}

#[tokio::test]
async fn budgets_through_the_api_are_admin_events_exactly_once() {
    let mut env = TestEnv::new("admin_budgets").await;
    env.start_api().await;
    let (admin_key, admin_prefix) = key(&env, "admin");
    let (finance_key, finance_prefix) = key(&env, "finance");
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/admin/budgets", env.direct_api_url());
    let body = json!({"subject_kind": "team", "subject_id": "search", "period": "monthly",
        "limit_usd": "500", "enforcement": "hard", "thresholds": [50, 80, 100]});

    // Who may: an admin key only.
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Authorization: Bearer"));
    let r = http
        .post(&url)
        .bearer_auth("tg_nope1234_x")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth(&finance_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let error: Value = r.json().await.unwrap();
    assert_eq!(
        error["error"],
        format!(
            "key {finance_prefix} (finance) (finance in every org) may not change /api/v1/admin/budgets: that needs role admin"
        )
    );
    let r = http
        .delete(format!("{url}/1"))
        .bearer_auth(&finance_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Create.
    let r = http
        .post(&url)
        .bearer_auth(&admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let team_id = created["budget"]["budget_id"].as_i64().unwrap();
    assert_eq!(
        created["budget"],
        json!({"budget_id": team_id, "subject": "budget/team/search", "subject_kind": "team",
               "subject_id": "search", "org_id": null, "period": "monthly", "limit_usd": "500",
               "enforcement": "hard", "thresholds": [50, 80, 100]})
    );
    assert_eq!(created["replaced"], Value::Null);

    // Replace (same subject and period): 200, same id, the old values named.
    let replacement = json!({"subject_kind": "team", "subject_id": "search",
        "limit_usd": "612.50", "thresholds": [100, 80]});
    let r = http
        .post(&url)
        .bearer_auth(&admin_key)
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let replaced: Value = r.json().await.unwrap();
    assert_eq!(replaced["budget"]["budget_id"], team_id);
    assert_eq!(replaced["budget"]["limit_usd"], "612.5");
    assert_eq!(replaced["budget"]["thresholds"], json!([80, 100]));
    assert_eq!(replaced["budget"]["enforcement"], "hard");
    assert_eq!(replaced["replaced"], created["budget"]);

    // A second budget, daily and soft, for an org.
    let org = json!({"subject_kind": "org", "subject_id": "acme", "period": "daily",
        "limit_usd": "0.25", "enforcement": "soft", "thresholds": []});
    let r = http
        .post(&url)
        .bearer_auth(&admin_key)
        .json(&org)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let org_created: Value = r.json().await.unwrap();
    let org_id = org_created["budget"]["budget_id"].as_i64().unwrap();

    // The finance report lists both with the new values.
    let report: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/finance/budgets", env.direct_api_url()))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = report.as_array().unwrap();
    assert_eq!(report.len(), 2, "{report:#?}");
    let team = report
        .iter()
        .find(|s| s["subject"] == "budget/team/search")
        .unwrap();
    assert_eq!(team["limit_usd"], "612.5");
    assert_eq!(team["hard"], true);

    // Delete through the API; unknown and malformed ids.
    let r = http
        .delete(format!("{url}/{team_id}"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted: Value = r.json().await.unwrap();
    assert_eq!(deleted["deleted"], replaced["budget"]);
    let r = http
        .delete(format!("{url}/{team_id}"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"], format!("no budget with id {team_id}"));
    for bad in ["abc", "-1", "0", "99999999999999999999999"] {
        let r = http
            .delete(format!("{url}/{bad}"))
            .bearer_auth(&admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["parameter"], "id", "{bad}: {error}");
    }
    let r = http
        .delete(format!("{url}/{team_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Delete through the CLI.
    let out = env
        .tollgate(&["budgets", "delete", "--id", &org_id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("published"));
    let out = env
        .tollgate(&["budgets", "delete", "--id", &org_id.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such budget"));

    // Five changes, five events, each exactly once.
    let events = admin_events_once(&env.events_topic, 5).await;
    let e = event(&events, &created["event_id"]);
    assert_eq!(e["kind"], "admin.budget.set");
    assert_eq!(
        (e["org_id"].as_str(), e["team_id"].as_str()),
        (Some("_tollgate"), Some("_tollgate"))
    );
    let mut expected = created["budget"].clone();
    expected["actor"] = json!(format!("key:{admin_prefix}"));
    expected["previous"] = Value::Null;
    assert_eq!(e["admin"], expected);
    let e = event(&events, &replaced["event_id"]);
    assert_eq!(e["kind"], "admin.budget.set");
    assert_eq!(e["admin"]["limit_usd"], "612.5");
    assert_eq!(e["admin"]["previous"], created["budget"]);
    let e = event(&events, &org_created["event_id"]);
    assert_eq!(e["admin"]["subject"], "budget/org/acme");
    assert_eq!(e["admin"]["thresholds"], json!([]));
    let e = event(&events, &deleted["event_id"]);
    assert_eq!(e["kind"], "admin.budget.deleted");
    assert_eq!(e["admin"]["actor"], format!("key:{admin_prefix}"));
    assert_eq!(e["admin"]["budget_id"], team_id);
    assert_eq!(e["admin"]["enforcement"], "hard");
    let by_cli: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "admin.budget.deleted" && e["admin"]["actor"] == "cli")
        .collect();
    assert_eq!(by_cli.len(), 1);
    assert_eq!(by_cli[0]["admin"]["budget_id"], org_id);

    // The outbox is empty, and it tells the watcher which hard budgets
    // were deleted this month (the soft org budget is not one of them).
    let pool = pg(&env).await;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM admin_outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    assert_eq!(
        BudgetStore::new(pool)
            .deleted_hard_subjects(month_start)
            .await
            .unwrap(),
        vec!["budget/team/search".to_string()]
    );
}

#[tokio::test]
async fn hostile_budget_bodies_are_400s_naming_the_field() {
    let mut env = TestEnv::new("admin_hostile").await;
    env.start_api().await;
    let (admin_key, _) = key(&env, "admin");
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/admin/budgets", env.direct_api_url());
    let valid = json!({"subject_kind": "team", "subject_id": "search", "period": "monthly",
        "limit_usd": "500", "enforcement": "hard", "thresholds": [50, 80, 100]});
    let with = |field: &str, value: Value| support::json_with(&valid, field, value);
    let without = |field: &str| support::json_without(&valid, field);
    let long_id = "x".repeat(257);
    // (body, field named, words in the reason)
    let cases: Vec<(String, &str, &str)> = vec![
        ("".into(), "body", "malformed JSON"),
        (
            "{\"subject_kind\": \"team\",".into(),
            "body",
            "malformed JSON",
        ),
        ("not json".into(), "body", "malformed JSON"),
        (format!("{valid} {{}}"), "body", "malformed JSON"),
        ("[]".into(), "body", "expected a JSON object"),
        ("\"team\"".into(), "body", "expected a JSON object"),
        ("null".into(), "body", "expected a JSON object"),
        (with("limit", json!("5")), "limit", "unknown field"),
        (with("__proto__", json!({})), "__proto__", "unknown field"),
        (without("limit_usd"), "limit_usd", "missing required field"),
        (
            without("subject_kind"),
            "subject_kind",
            "missing required field",
        ),
        (
            without("subject_id"),
            "subject_id",
            "missing required field",
        ),
        (with("limit_usd", json!(500)), "limit_usd", "decimal string"),
        (
            with("limit_usd", json!(12.5)),
            "limit_usd",
            "decimal string",
        ),
        (
            with("limit_usd", json!(null)),
            "limit_usd",
            "decimal string",
        ),
        (with("limit_usd", json!("-5")), "limit_usd", "negative"),
        (with("limit_usd", json!("0")), "limit_usd", "greater than 0"),
        (
            with("limit_usd", json!("0.000")),
            "limit_usd",
            "greater than 0",
        ),
        (
            with("limit_usd", json!("abc")),
            "limit_usd",
            "not a decimal",
        ),
        (
            with("limit_usd", json!("1e6")),
            "limit_usd",
            "not a decimal",
        ),
        (
            with("limit_usd", json!("NaN")),
            "limit_usd",
            "not a decimal",
        ),
        (
            with("limit_usd", json!("Infinity")),
            "limit_usd",
            "not a decimal",
        ),
        (with("limit_usd", json!(" 5")), "limit_usd", "not a decimal"),
        (
            with("limit_usd", json!("5,00")),
            "limit_usd",
            "not a decimal",
        ),
        (with("limit_usd", json!("")), "limit_usd", "not a decimal"),
        (
            with("limit_usd", json!("1000000000000.5")),
            "limit_usd",
            "larger than the maximum",
        ),
        (
            with("limit_usd", json!("9".repeat(400))),
            "limit_usd",
            "larger than the maximum",
        ),
        (
            with("limit_usd", json!("0.0000000000001")),
            "limit_usd",
            "more than 12 decimal places",
        ),
        (
            with("subject_kind", json!("tribe")),
            "subject_kind",
            "not one of org, team, user, key",
        ),
        (
            with("subject_kind", json!("Team")),
            "subject_kind",
            "not one of",
        ),
        (
            with("subject_kind", json!(1)),
            "subject_kind",
            "invalid type",
        ),
        (
            with("period", json!("weekly")),
            "period",
            "not one of daily, monthly",
        ),
        (
            with("enforcement", json!("strict")),
            "enforcement",
            "not one of hard, soft",
        ),
        (
            with("subject_id", json!("")),
            "subject_id",
            "must not be empty",
        ),
        (
            with("subject_id", json!(long_id)),
            "subject_id",
            "at most 256",
        ),
        (
            with("subject_id", json!("a\u{0}b")),
            "subject_id",
            "control characters",
        ),
        (
            with("subject_id", json!(" search")),
            "subject_id",
            "whitespace",
        ),
        (
            with("thresholds", json!([0])),
            "thresholds",
            "outside 1..=1000",
        ),
        (
            with("thresholds", json!([1001])),
            "thresholds",
            "outside 1..=1000",
        ),
        (
            with("thresholds", json!([-50])),
            "thresholds",
            "outside 1..=1000",
        ),
        (
            with("thresholds", json!([4294967346_i64])),
            "thresholds",
            "outside 1..=1000",
        ),
        (
            with("thresholds", json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])),
            "thresholds",
            "at most 10",
        ),
        (
            with("thresholds", json!([80, 80])),
            "thresholds",
            "given twice",
        ),
        (
            with("thresholds", json!([50.5])),
            "thresholds[0]",
            "invalid type",
        ),
        (
            with("thresholds", json!("50,80")),
            "thresholds",
            "invalid type",
        ),
        (
            r#"{"subject_kind":"team","subject_kind":"org","subject_id":"s","limit_usd":"1"}"#
                .into(),
            "subject_kind",
            "more than once",
        ),
    ];
    for (body, field, words) in &cases {
        let r = http
            .post(&url)
            .bearer_auth(&admin_key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let error: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["field"], *field, "{body}: {error}");
        let reason = error["error"].as_str().unwrap();
        assert!(reason.contains(words), "{body}: {reason}");
        assert!(
            reason.starts_with(&format!("invalid field `{field}`")),
            "{reason}"
        );
    }
    // The edges that are allowed.
    for body in [
        with("subject_id", json!("é".repeat(256))),
        with("limit_usd", json!("1000000000000")),
        with("limit_usd", json!("0.000000000001")),
        with("thresholds", json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000])),
    ] {
        let r = http
            .post(&url)
            .bearer_auth(&admin_key)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{body}: {}",
            r.text().await.unwrap()
        );
    }
    // Nothing refused was stored, and only the accepted changes are events.
    let pool = pg(&env).await;
    let budgets: Vec<(String, String)> =
        sqlx::query_as("SELECT subject_id, limit_usd::text FROM budgets ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        budgets,
        vec![
            ("é".repeat(256), "500".to_string()),
            ("search".to_string(), "500".to_string()),
        ]
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT event->>'kind' FROM admin_outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kinds, vec!["admin.budget.set"; 4]);
}

/// A copy of the environment's config whose Kafka is a port nobody listens on.
fn dead_broker_config(env: &TestEnv) -> PathBuf {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let text = text.replace(
        &format!("brokers = \"{}\"", support::kafka_brokers()),
        &format!("brokers = \"{dead}\"\nmessage_timeout_ms = 2000"),
    );
    assert!(text.contains(&dead));
    let path = env.dir.path().join("dead-kafka.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tollgate_with(config: &PathBuf, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::tollgate_bin());
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("TOLLGATE_CONFIG");
    cmd
}

#[tokio::test]
async fn changes_while_kafka_is_down_wait_in_the_outbox_and_publish_once() {
    let mut env = TestEnv::new("admin_outbox").await;
    let dead = dead_broker_config(&env);
    let (admin_key, admin_prefix) = key(&env, "admin");

    // CLI: the budget is stored, the command succeeds and says the event
    // is not on Kafka yet.
    let out = tollgate_with(
        &dead,
        &[
            "budgets", "set", "--kind", "team", "--id", "search", "--limit", "500",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not on Kafka yet"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("budget 1: monthly team search (in every org) 500 USD (hard)"));

    // A price import, the same.
    let prices = env.dir.path().join("prices.json");
    std::fs::write(
        &prices,
        r#"{"tg-outbox": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
            "input_cost_per_token": 0.000001}}"#,
    )
    .unwrap();
    let out = tollgate_with(&dead, &["prices", "import", prices.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on Kafka yet"));

    // The API: 201 once the change is committed, though its relay cannot
    // reach Kafka.
    let api_log = std::fs::File::create(env.log_path("dead-api")).unwrap();
    let mut api: Child = tollgate_with(&dead, &["api"])
        .stdout(Stdio::null())
        .stderr(api_log)
        .spawn()
        .unwrap();
    support::wait_http(
        &format!("{}/healthz", env.direct_api_url()),
        crate::support::PATIENCE,
        &env.log_path("dead-api"),
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/admin/budgets", env.direct_api_url()))
        .bearer_auth(&admin_key)
        .json(&json!({"subject_kind": "team", "subject_id": "k-1", "limit_usd": "7", "period": "daily"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let api_change: Value = r.json().await.unwrap();
    // Let the API's relay fail on the new row at least once, then stop it.
    let pool = pg(&env).await;
    let tried = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT attempts FROM admin_outbox WHERE event->>'event_id' = $1",
        )
        .bind(api_change["event_id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while tried().await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.kill().unwrap();
    api.wait().unwrap();

    // All three changes are stored, their events wait in the outbox.
    let budgets: i64 = sqlx::query_scalar("SELECT count(*) FROM budgets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(budgets, 2);
    let status = tollgate_with(&dead, &["outbox", "status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let pending: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap();
    let kinds: Vec<&str> = pending
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["admin.budget.set", "admin.price.added", "admin.budget.set"]
    );
    for row in &pending {
        assert!(row["attempts"].as_i64().unwrap() >= 1, "{row}");
        assert!(
            row["last_error"].as_str().unwrap().contains("kafka"),
            "{row}"
        );
        assert_eq!(row["abandoned_at"], Value::Null);
    }
    assert_eq!(pending[2]["event_id"], api_change["event_id"]);
    let on_topic = read_records(&env.events_topic, Duration::from_secs(5), |_| false).await;
    assert!(on_topic.is_empty(), "{on_topic:?}");

    // A processor with a working Kafka config: its relay publishes them,
    // in order, once each.
    env.spawn("process", &["process"]);
    let (events, copies) = admin_events(&env.events_topic, 3).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let outbox_order: Vec<&str> = pending
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, outbox_order, "published in outbox order");
    assert_eq!(events[0]["admin"]["actor"], "cli");
    assert_eq!(events[0]["admin"]["subject"], "budget/team/search");
    assert_eq!(events[0]["admin"]["limit_usd"], "500");
    assert_eq!(events[1]["kind"], "admin.price.added");
    assert_eq!(events[1]["admin"]["price_version"]["model"], "tg-outbox");
    assert_eq!(
        events[1]["admin"]["price_version"]["input_per_token"],
        "0.000001"
    );
    assert_eq!(events[2]["admin"]["actor"], format!("key:{admin_prefix}"));
    assert_eq!(events[2]["admin"]["subject"], "budget/team/k-1");
    assert_eq!(events[2]["admin"]["period"], "daily");

    // Nothing left; draining again publishes nothing.
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM admin_outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0);
    let out = env.tollgate(&["outbox", "drain"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("outbox: 0 admin event(s) published"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (events, copies) = admin_events(&env.events_topic, 3).await;
    assert_eq!(events.len(), 3);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_relays_publish_each_row_once_in_order() {
    let env = TestEnv::new("admin_relays").await;
    let pool = pg(&env).await;
    const ROWS: usize = 250; // more than one batch of 100
    enqueue_rows(&pool, ROWS).await;
    // Three relays drain at once, each until nothing is pending. (Whoever
    // holds the oldest rows keeps going; the others find earlier rows
    // locked and back off, which is what keeps the order.)
    let relays: Vec<_> = (0..3)
        .map(|_| {
            let relay = relay(&env, &pool);
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut published = 0;
                loop {
                    published += relay.drain().await.unwrap().published;
                    let left: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM admin_outbox WHERE published_at IS NULL",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    if left == 0 {
                        return published;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let mut total = 0;
    for r in relays {
        total += r.await.unwrap();
    }
    assert_eq!(total, ROWS, "each row published by exactly one relay");
    let (events, copies) = admin_events(&env.events_topic, ROWS).await;
    assert_eq!(events.len(), ROWS);
    assert!(copies.values().all(|n| *n == 1));
    let order: Vec<u64> = events
        .iter()
        .map(|e| e["admin"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..ROWS as u64).collect::<Vec<_>>(),
        "in outbox order"
    );
}

/// Prices are exact: a JSON number would pass through a float on its way
/// to a decimal (0.000000123456789012345678 came back as
/// 0.00000012345678901234568), so the admin API takes decimal strings only,
/// stores them digit for digit, and names the field of anything else.
#[tokio::test]
async fn admin_prices_are_exact_decimal_strings_or_400s_naming_the_field() {
    let mut env = TestEnv::new("admin_prices").await;
    env.start_api().await;
    let (admin_key, _) = key(&env, "admin");
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/admin/prices", env.direct_api_url());
    let valid = json!({"provider": "testprov", "model": "tg-exact",
        "effective_from": "2026-03-01T00:00:00Z",
        "input_per_token": "0.000000123456789012345678", "output_per_token": "0.00001"});
    let with = |field: &str, value: Value| support::json_with(&valid, field, value);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            // The number as a client would send it, every digit in the text.
            valid.to_string().replace(
                "\"0.000000123456789012345678\"",
                "0.000000123456789012345678",
            ),
            "input_per_token",
            "decimal string",
        ),
        (
            with("per_request", json!(1)),
            "per_request",
            "decimal string",
        ),
        (
            with("cache_read_per_token", json!("1e-7")),
            "cache_read_per_token",
            "not an exact decimal",
        ),
        (
            with(
                "output_per_token",
                json!("0.0000000000000000000000000000001"),
            ),
            "output_per_token",
            "not an exact decimal",
        ),
        (
            with(
                "tiers",
                json!([{"above_tokens": 200000, "input_per_token": 0.0000025}]),
            ),
            "tiers[0].input_per_token",
            "decimal string",
        ),
        (
            format!("[{valid}, {}]", with("per_image", json!(0.04))),
            "[1].per_image",
            "decimal string",
        ),
        (
            with("input_per_token", json!("-0.1")),
            "input_per_token",
            "negative",
        ),
        (
            with("input_per_token", json!(" 0.1")),
            "input_per_token",
            "not an exact decimal",
        ),
        (with("colour", json!("red")), "colour", "unknown field"),
    ];
    for (body, field, words) in &cases {
        let r = http
            .post(&url)
            .bearer_auth(&admin_key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let error: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["field"], *field, "{body}: {error}");
        let reason = error["error"].as_str().unwrap();
        assert!(reason.contains(words), "{body}: {reason}");
    }
    // Two different prices for one version in one request would flip on
    // every retry: refused.
    let twice = format!("[{valid}, {}]", with("output_per_token", json!("0.00002")));
    let r = http
        .post(&url)
        .bearer_auth(&admin_key)
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("twice"));

    // The valid body is stored digit for digit, with its tiers.
    let mut tiered = valid.clone();
    tiered["tiers"] = json!([{"above_tokens": 200000, "input_per_token": "0.0000025",
        "output_per_token": "0.000015"}]);
    for expected_added in [1, 0] {
        let r = http
            .post(&url)
            .bearer_auth(&admin_key)
            .json(&tiered)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["added"].as_array().unwrap().len(),
            expected_added,
            "{body}"
        );
    }
    let out = env
        .tollgate(&["prices", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let versions: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let v = versions.iter().find(|v| v["model"] == "tg-exact").unwrap();
    assert_eq!(v["input_per_token"], "0.000000123456789012345678", "{v}");
    assert_eq!(v["tiers"][0]["above_tokens"], 200000, "{v}");
    assert_eq!(v["tiers"][0]["output_per_token"], "0.000015", "{v}");
    let stored: String = sqlx::query_scalar(
        "SELECT input_per_token::text FROM price_versions WHERE model = 'tg-exact'",
    )
    .fetch_one(&pg(&env).await)
    .await
    .unwrap();
    assert_eq!(stored, "0.000000123456789012345678");
}

/// A relay whose locked batch has a gap (a row in the middle held by
/// another relay: concurrent `SKIP LOCKED` scans interleave) publishes only
/// the rows below the gap, so the held row is never overtaken.
#[tokio::test]
async fn a_row_held_by_another_relay_is_never_overtaken() {
    let env = TestEnv::new("admin_relay_gap").await;
    let pool = pg(&env).await;
    let ids = enqueue_rows(&pool, 5).await;
    // Another relay holds the second row.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM admin_outbox WHERE id = $1 FOR UPDATE")
        .bind(ids[1])
        .execute(&mut *holder)
        .await
        .unwrap();
    let relay = relay(&env, &pool);
    let drained = relay.drain().await.unwrap();
    assert_eq!(
        (drained.published, drained.busy),
        (1, true),
        "only the row below the held one is published"
    );
    holder.rollback().await.unwrap();
    let drained = relay.drain().await.unwrap();
    assert_eq!(drained.published, 4);
    let (events, _) = admin_events(&env.events_topic, 5).await;
    let order: Vec<u64> = events
        .iter()
        .map(|e| e["admin"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4], "in outbox order");
}
