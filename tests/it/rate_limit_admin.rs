//! Rate-limit administration over the API and the CLI, against real
//! Kafka, ClickHouse and PostgreSQL: limits created, replaced, listed and
//! deleted through `/api/v1/admin/rate_limits` (and `tollgate ratelimits`)
//! with the caller's org rule; each change exactly one
//! `admin.rate_limit.*` event with the old and new values, chained by the
//! audit fold and found by the compliance search, whose chain verifies;
//! hostile bodies refused naming the field, nothing stored; and the proxy
//! enforcing a limit set, and lifting one deleted, through the API.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::admin_api::{admin_events_once, event};
use crate::audit_chain::{audit_config, verify_audit_with, verify_export_text};
use crate::support::{self, TestEnv, PATIENCE};

/// The prefix a key's actor is named by (`tg_<prefix>_<secret>`).
fn prefix_of(secret: &str) -> String {
    secret.split('_').nth(1).unwrap().to_string()
}

/// A client of the admin API with one key.
struct Admin<'a> {
    http: &'a reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Admin<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {status} not JSON ({e}): {text}"));
        (status, value)
    }

    async fn post(&self, body: &Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            "/api/v1/admin/rate_limits",
            Some(&body.to_string()),
        )
        .await
    }

    async fn list(&self, query: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            &format!("/api/v1/admin/rate_limits{query}"),
            None,
        )
        .await
    }

    async fn delete(&self, id: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/rate_limits/{id}"),
            None,
        )
        .await
    }
}

/// `(scope_kind, scope_id, requests_per_minute, tokens_per_minute, org_id)`
/// of each listed limit.
fn scopes(list: &Value) -> Vec<(String, String, Value, Value, Value)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|l| {
            (
                l["scope_kind"].as_str().unwrap().to_string(),
                l["scope_id"].as_str().unwrap().to_string(),
                l["requests_per_minute"].clone(),
                l["tokens_per_minute"].clone(),
                l["org_id"].clone(),
            )
        })
        .collect()
}

fn scope(
    kind: &str,
    id: &str,
    rpm: Value,
    tpm: Value,
    org: &str,
) -> (String, String, Value, Value, Value) {
    (kind.into(), id.into(), rpm, tpm, json!(org))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_through_the_api_and_the_cli_are_audited_once_each() {
    let mut env = TestEnv::with_extra_config("rl_admin", &audit_config(1000, "")).await;
    env.start_api().await;
    let http = reqwest::Client::new();
    let as_key = |key: Option<&str>| Admin {
        http: &http,
        base: env.direct_api_url(),
        key: key.map(str::to_string),
    };
    let root_key = env.create_key_with_role("admin", None);
    let acme_key = env.create_key_with_role("admin", Some("acme"));
    let globex_key = env.create_key_with_role("admin", Some("globex"));
    let finance_key = env.create_key_with_role("finance", Some("acme"));
    let (root, acme, globex) = (
        as_key(Some(&root_key)),
        as_key(Some(&acme_key)),
        as_key(Some(&globex_key)),
    );
    let acme_actor = format!("key:{}", prefix_of(&acme_key));
    let globex_actor = format!("key:{}", prefix_of(&globex_key));
    let ml = json!({"scope_kind": "team", "scope_id": "ml", "requests_per_minute": 600});

    // Who may: an admin key only.
    for who in [as_key(None), as_key(Some("tg_nope1234_x"))] {
        assert_eq!(who.post(&ml).await.0, 401);
        assert_eq!(who.list("").await.0, 401);
        assert_eq!(who.delete("1").await.0, 401);
    }
    let finance = as_key(Some(&finance_key));
    for (status, error) in [
        finance.post(&ml).await,
        finance.list("").await,
        finance.delete("1").await,
    ] {
        assert_eq!(status, 403, "{error}");
        let error = error["error"].as_str().unwrap();
        assert!(
            error.contains("/api/v1/admin/rate_limits") && error.ends_with("that needs role admin"),
            "{error}"
        );
    }

    // Create: acme's admin, the org taken from the key.
    let (status, created) = acme.post(&ml).await;
    assert_eq!(status, 201, "{created}");
    let ml_id = created["rate_limit"]["id"].as_i64().unwrap();
    let mut expected = json!({"id": ml_id, "scope_kind": "team", "scope_id": "ml",
        "requests_per_minute": 600, "tokens_per_minute": null, "org_id": "acme",
        "updated_by": acme_actor});
    expected["updated_at"] = created["rate_limit"]["updated_at"].clone();
    assert_eq!(created["rate_limit"], expected);
    assert_eq!(created["replaced"], Value::Null);

    // Replace: the same id, the old values named.
    let (status, replaced) = acme
        .post(&json!({"scope_kind": "team", "scope_id": "ml",
            "requests_per_minute": 300, "tokens_per_minute": 90000, "org_id": "acme"}))
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["rate_limit"]["id"], ml_id);
    assert_eq!(replaced["rate_limit"]["requests_per_minute"], 300);
    assert_eq!(replaced["rate_limit"]["tokens_per_minute"], 90000);
    assert_eq!(replaced["replaced"], created["rate_limit"]);

    // globex's own org limit.
    let (status, globex_created) = globex
        .post(&json!({"scope_kind": "org", "scope_id": "globex", "tokens_per_minute": 1000000}))
        .await;
    assert_eq!(status, 201, "{globex_created}");
    let globex_id = globex_created["rate_limit"]["id"].as_i64().unwrap();

    // Each admin lists their org's; an admin of every org lists all, or one.
    let acme_ml = scope("team", "ml", json!(300), json!(90000), "acme");
    let globex_org = scope("org", "globex", Value::Null, json!(1000000), "globex");
    assert_eq!(scopes(&acme.list("").await.1), vec![acme_ml.clone()]);
    assert_eq!(scopes(&globex.list("").await.1), vec![globex_org.clone()]);
    assert_eq!(
        scopes(&root.list("").await.1),
        vec![globex_org.clone(), acme_ml.clone()]
    );
    assert_eq!(
        scopes(&root.list("?org=acme").await.1),
        vec![acme_ml.clone()]
    );
    let (status, error) = root.list("?colour=red").await;
    assert_eq!((status, error["parameter"].clone()), (400, json!("colour")));

    // Another org's limit: not seen, not deleted, not replaced.
    assert_eq!(
        acme.list("?org=globex").await,
        (404, json!({"error": "no org globex"}))
    );
    assert_eq!(
        acme.delete(&globex_id.to_string()).await,
        (
            404,
            json!({"error": format!("no rate limit with id {globex_id}")})
        )
    );
    assert_eq!(
        acme.post(&json!({"scope_kind": "org", "scope_id": "globex", "requests_per_minute": 1}))
            .await,
        (404, json!({"error": "no org globex"}))
    );
    assert_eq!(
        acme.post(
            &json!({"scope_kind": "team", "scope_id": "ads", "requests_per_minute": 1,
            "org_id": "globex"})
        )
        .await,
        (404, json!({"error": "no org globex"}))
    );
    // globex's own team of the same id is another scope: its limit is
    // its own, acme's stays.
    let (status, globex_ml) = globex
        .post(&json!({"scope_kind": "team", "scope_id": "ml", "requests_per_minute": 1}))
        .await;
    assert_eq!(status, 201, "{globex_ml}");
    assert_eq!(globex_ml["replaced"], Value::Null, "{globex_ml}");
    assert_eq!(globex_ml["rate_limit"]["org_id"], "globex", "{globex_ml}");
    let globex_ml_id = globex_ml["rate_limit"]["id"].as_i64().unwrap();
    assert_ne!(globex_ml_id, ml_id);
    assert_eq!(scopes(&acme.list("").await.1), vec![acme_ml.clone()]);
    let (status, deleted) = globex.delete(&globex_ml_id.to_string()).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        scopes(&root.list("").await.1),
        vec![globex_org.clone(), acme_ml.clone()],
        "nothing else changed"
    );

    // Delete; unknown and malformed ids.
    let (status, deleted) = acme.delete(&ml_id.to_string()).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], replaced["rate_limit"]);
    assert_eq!(
        acme.delete(&ml_id.to_string()).await,
        (
            404,
            json!({"error": format!("no rate limit with id {ml_id}")})
        )
    );
    for bad in ["abc", "-1", "0", "99999999999999999999999"] {
        let (status, error) = root.delete(bad).await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert_eq!(error["parameter"], "id", "{bad}: {error}");
        assert_eq!(
            error["error"],
            "invalid parameter `id`: not a rate limit id (a positive integer)"
        );
    }

    // The CLI: set and delete, each published at once.
    let out = env
        .tollgate(&[
            "ratelimits",
            "set",
            "--scope",
            "user",
            "--id",
            "k-1",
            "--rpm",
            "5",
            "--org",
            "acme",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("published"), "{stderr}");
    let cli_listed = scopes(&acme.list("").await.1);
    assert_eq!(
        cli_listed,
        vec![scope("user", "k-1", json!(5), Value::Null, "acme")]
    );
    let out = env
        .tollgate(&["ratelimits", "delete", "--id", &globex_id.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("published"), "{stderr}");

    // Eight changes, eight events, each exactly once, with old and new values.
    let events = admin_events_once(&env.events_topic, 8).await;
    let e = event(&events, &created["event_id"]);
    assert_eq!(e["kind"], "admin.rate_limit.set");
    assert_eq!(
        (e["org_id"].as_str(), e["team_id"].as_str()),
        (Some("_tollgate"), Some("_tollgate"))
    );
    let mut payload = created["rate_limit"].clone();
    payload["actor"] = json!(acme_actor);
    payload["previous"] = Value::Null;
    assert_eq!(e["admin"], payload);
    let e = event(&events, &replaced["event_id"]);
    assert_eq!(e["kind"], "admin.rate_limit.set");
    let mut payload = replaced["rate_limit"].clone();
    payload["actor"] = json!(acme_actor);
    payload["previous"] = created["rate_limit"].clone();
    assert_eq!(e["admin"], payload);
    let e = event(&events, &globex_created["event_id"]);
    assert_eq!(e["admin"]["actor"], globex_actor);
    assert_eq!(e["admin"]["scope_kind"], "org");
    let e = event(&events, &deleted["event_id"]);
    assert_eq!(e["kind"], "admin.rate_limit.deleted");
    let mut payload = replaced["rate_limit"].clone();
    payload["actor"] = json!(acme_actor);
    assert_eq!(e["admin"], payload);
    let by_cli: Vec<(&str, &Value)> = events
        .iter()
        .filter(|e| e["admin"]["actor"] == "cli")
        .map(|e| (e["kind"].as_str().unwrap(), &e["admin"]))
        .collect();
    assert_eq!(by_cli.len(), 2, "{by_cli:#?}");
    assert_eq!(by_cli[0].0, "admin.rate_limit.set");
    assert_eq!(
        (
            &by_cli[0].1["scope_id"],
            &by_cli[0].1["requests_per_minute"],
            &by_cli[0].1["previous"]
        ),
        (&json!("k-1"), &json!(5), &Value::Null)
    );
    assert_eq!(by_cli[1].0, "admin.rate_limit.deleted");
    assert_eq!(by_cli[1].1["id"], globex_id);
    assert_eq!(by_cli[1].1["tokens_per_minute"], 1000000);

    // The audit fold chains them; the compliance search finds each with
    // its values, and the chain verifies (API, CLI, and an export offline).
    env.spawn("process", &["process", "--folds", "audit"]);
    let chained = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain WHERE kind LIKE 'admin.rate_limit.%'",
            8,
            PATIENCE,
        )
        .await;
    assert_eq!(chained, 8);
    let search = |kind: &'static str| {
        let root = &root;
        async move {
            let (status, page) = root
                .send(
                    reqwest::Method::GET,
                    &format!("/api/v1/audit/entries?org=_tollgate&kind={kind}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{page}");
            page["entries"].as_array().unwrap().clone()
        }
    };
    let sets = search("admin.rate_limit.set").await;
    assert_eq!(sets.len(), 5, "{sets:#?}");
    let deletes = search("admin.rate_limit.deleted").await;
    assert_eq!(deletes.len(), 3, "{deletes:#?}");
    let chained_event = |entries: &[Value], id: &Value| -> Value {
        let entry = entries
            .iter()
            .find(|e| e["event_id"] == *id)
            .unwrap_or_else(|| panic!("no entry for {id} in {entries:#?}"));
        assert_eq!(entry["chain_id"], "_tollgate/_tollgate");
        serde_json::from_str(entry["event_json"].as_str().unwrap()).unwrap()
    };
    let replace_entry = chained_event(&sets, &replaced["event_id"]);
    assert_eq!(
        replace_entry["admin"]["previous"]["requests_per_minute"],
        600
    );
    assert_eq!(replace_entry["admin"]["requests_per_minute"], 300);
    assert_eq!(replace_entry["admin"]["actor"], acme_actor);
    let delete_entry = chained_event(&deletes, &deleted["event_id"]);
    assert_eq!(
        delete_entry["admin"],
        event(&events, &deleted["event_id"])["admin"]
    );

    let (status, report) = root
        .send(
            reqwest::Method::GET,
            "/api/v1/audit/verify?org=_tollgate",
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["ok"].clone(), report["entries"].clone()),
        (json!(true), json!(8))
    );
    let (ok, report) = verify_audit_with(&env, "_tollgate", &[]);
    assert!(ok, "{report:#}");
    let export = http
        .get(format!(
            "{}/api/v1/audit/export?org=_tollgate",
            env.direct_api_url()
        ))
        .bearer_auth(&root_key)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let export = export.text().await.unwrap();
    let (ok, offline) = verify_export_text(&env, "rate-limits.ndjson", &export, &[]);
    assert!(ok, "{offline:#}");
    assert_eq!(offline["chains"][0]["entries"], 8, "{offline:#}");
    // Control-plane entries are for callers of every org, as for budgets.
    let (status, _) = acme
        .send(
            reqwest::Method::GET,
            "/api/v1/audit/entries?org=_tollgate",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hostile_rate_limit_bodies_are_400s_naming_the_field() {
    let mut env = TestEnv::new("rl_hostile").await;
    env.start_api().await;
    let http = reqwest::Client::new();
    let root_key = env.create_key_with_role("admin", None);
    let root = Admin {
        http: &http,
        base: env.direct_api_url(),
        key: Some(root_key),
    };
    let valid = json!({"scope_kind": "team", "scope_id": "ml", "requests_per_minute": 600,
        "tokens_per_minute": 90000, "org_id": "acme"});
    let with = |field: &str, value: Value| support::json_with(&valid, field, value);
    let without = |field: &str| support::json_without(&valid, field);
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let rpm_range = "give a whole number from 1 to 1000000000";
    let not_number = "must be a whole number (a JSON number such as 600)";
    // (body, field, the reason exactly, or its start when it ends in `…`)
    let cases: Vec<(String, &str, String)> = vec![
        ("".into(), "body", "expected a JSON object".into()),
        ("not json".into(), "body", "expected a JSON object".into()),
        ("[]".into(), "body", "expected a JSON object".into()),
        ("null".into(), "body", "expected a JSON object".into()),
        ("{\"scope_kind\": \"team\",".into(), "body", "malformed JSON…".into()),
        (format!("{valid} {{}}"), "body", "malformed JSON…".into()),
        (
            big.clone(),
            "body",
            format!("{} bytes; at most 65536 accepted", big.len()),
        ),
        (
            with("rpm", json!(5)),
            "rpm",
            "unknown field `rpm`, expected one of `scope_kind`, `scope_id`, `requests_per_minute`, `tokens_per_minute`, `org_id`".into(),
        ),
        (with("__proto__", json!({})), "__proto__", "unknown field `__proto__`…".into()),
        (without("scope_kind"), "scope_kind", "missing required field".into()),
        (without("scope_id"), "scope_id", "missing required field".into()),
        (
            r#"{"scope_kind": "team", "scope_kind": "org", "scope_id": "x", "requests_per_minute": 1}"#.into(),
            "scope_kind",
            "given more than once".into(),
        ),
        (
            with("requests_per_minute", json!(-5)),
            "requests_per_minute",
            format!("\"-5\" is negative; {rpm_range}"),
        ),
        (
            with("requests_per_minute", json!(0)),
            "requests_per_minute",
            "must be at least 1 (delete the limit to lift it: `tollgate ratelimits delete`)".into(),
        ),
        (
            with("requests_per_minute", json!(1.5)),
            "requests_per_minute",
            "\"1.5\" is not a whole number; give one from 1 to 1000000000".into(),
        ),
        (
            valid.to_string().replace("600", "6e2"),
            "requests_per_minute",
            "\"6e2\" is not a whole number; give one from 1 to 1000000000".into(),
        ),
        (
            with("requests_per_minute", json!(1_000_000_001)),
            "requests_per_minute",
            "1000000001 is above the most accepted, 1000000000".into(),
        ),
        (
            valid.to_string().replace("90000", "99999999999999999999999"),
            "tokens_per_minute",
            "99999999999999999999999 is above the most accepted, 1000000000000".into(),
        ),
        (
            with("tokens_per_minute", json!(0)),
            "tokens_per_minute",
            "must be at least 1 (delete the limit to lift it: `tollgate ratelimits delete`)".into(),
        ),
        (
            with("requests_per_minute", json!("600")),
            "requests_per_minute",
            format!("{not_number}, found a string"),
        ),
        (
            with("tokens_per_minute", json!(true)),
            "tokens_per_minute",
            format!("{not_number}, found a boolean"),
        ),
        (
            with("requests_per_minute", json!([600])),
            "requests_per_minute",
            format!("{not_number}, found an array"),
        ),
        (
            with("requests_per_minute", Value::Null)
                .replace("90000", "null"),
            "requests_per_minute",
            "give requests_per_minute, tokens_per_minute or both".into(),
        ),
        (
            with("scope_kind", json!("tenant")),
            "scope_kind",
            "unknown scope \"tenant\"; expected key, user, team or org".into(),
        ),
        (
            with("scope_kind", json!(5)),
            "scope_kind",
            "invalid type: integer `5`, expected a string".into(),
        ),
        (with("scope_id", json!("")), "scope_id", "must not be empty".into()),
        (
            with("scope_id", json!("x".repeat(257))),
            "scope_id",
            "is 257 characters long; at most 256 allowed".into(),
        ),
        (
            with("scope_id", json!("ml\u{0}")),
            "scope_id",
            "must not contain control characters".into(),
        ),
        (
            with("scope_id", json!(" ml")),
            "scope_id",
            "must not start or end with whitespace".into(),
        ),
        (
            with("org_id", json!("acme\nglobex")),
            "org_id",
            "must not contain control characters".into(),
        ),
        (
            r#"{"scope_kind": "org", "scope_id": "acme", "requests_per_minute": 1, "org_id": "globex"}"#.into(),
            "org_id",
            "an org limit of acme cannot belong to org globex".into(),
        ),
    ];
    for (body, field, reason) in &cases {
        let (status, error) = root
            .send(
                reqwest::Method::POST,
                "/api/v1/admin/rate_limits",
                Some(body),
            )
            .await;
        let shown: String = body.chars().take(200).collect();
        assert_eq!(status, 400, "{shown}: {error}");
        assert_eq!(error["field"], *field, "{shown}: {error}");
        let message = error["error"].as_str().unwrap();
        let prefix = format!("invalid field `{field}`: ");
        let got = message
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{message}"));
        match reason.strip_suffix('…') {
            Some(start) => assert!(got.starts_with(start), "{shown}: {got}"),
            None => assert_eq!(got, reason, "{shown}"),
        }
    }
    // Nothing stored, no event.
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = &pool;
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM rate_limits").await, 0);
    assert_eq!(count("SELECT count(*) FROM admin_outbox").await, 0);

    // A hostile but valid id is stored as sent, nothing more.
    let id = "ml'); DROP TABLE rate_limits; -- ☃";
    let (status, created) = root
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/rate_limits",
            Some(&with("scope_id", json!(id))),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["rate_limit"]["scope_id"], id);
    let (_, listed) = root.list("").await;
    assert_eq!(
        scopes(&listed),
        vec![scope("team", id, json!(600), json!(90000), "acme")]
    );
    assert_eq!(count("SELECT count(*) FROM admin_outbox").await, 1);
}

/// A limit set through the API is what the proxy enforces; deleting it
/// through the API lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_proxy_enforces_a_limit_set_through_the_api_until_it_is_deleted() {
    // A generous claim wait: on a loaded machine the first claim of a
    // window may take longer than the default 50 ms (then the call would be
    // refused for want of a claim, not for the limit).
    let mut proxy = crate::proxy::Proxy::start(
        "rl_admin_proxy",
        "tiers = { refresh_ms = 300, claim_wait_ms = 5000 }",
        None,
    )
    .await;
    proxy.env.start_api().await;
    let http = reqwest::Client::new();
    let acme_key = proxy.env.create_key_with_role("admin", Some("acme"));
    let acme = Admin {
        http: &http,
        base: proxy.env.direct_api_url(),
        key: Some(acme_key),
    };
    let (status, created) = acme
        .post(&json!({"scope_kind": "team", "scope_id": "limited", "requests_per_minute": 2}))
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, small) = acme
        .post(&json!({"scope_kind": "team", "scope_id": "small", "tokens_per_minute": 500}))
        .await;
    assert_eq!(status, 201, "{small}");
    proxy.run_proxy().await;

    // Under 500 tokens a minute: a short call without max_tokens takes its
    // input only (not the 4096 of output a budget assumes for it), so it
    // fits; one asking for 1000 never can, and is told not to retry.
    let small_key = proxy.key("acme", "small", "sam", None);
    let url = format!("{}/v1/chat/completions", proxy.url());
    let no_max =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]});
    for _ in 0..2 {
        let answer = http
            .post(&url)
            .bearer_auth(&small_key)
            .json(&no_max)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    let too_large = json!({"model": "gpt-4o-mini", "max_tokens": 1000,
                           "messages": [{"role": "user", "content": "hi there"}]});
    let answer = http
        .post(&url)
        .bearer_auth(&small_key)
        .json(&too_large)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 429);
    assert_eq!(answer.headers()["x-should-retry"], "false");
    assert!(answer.headers().get("retry-after").is_none());
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than the whole limit: lower max_tokens"),
        "{body}"
    );

    let key = proxy.key("acme", "limited", "ada", None);
    let other = proxy.key("acme", "free", "bob", None);
    // Another org's team of the same id: acme's limit is not its.
    let namesake = proxy.key("globex", "limited", "nat", None);

    let (admitted, answer) = proxy.admitted_until_refused(&key, "gpt-4o-mini").await;
    assert_eq!(answer["error"]["code"], "rate_limit_exceeded", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "rate limit of 2 requests per minute for team limited of org acme reached"
        ),
        "{message}"
    );
    // Two per UTC minute: a third call in the same minute is refused (a
    // minute that turned while calling admits two more).
    assert!((2..=4).contains(&admitted), "{admitted} calls admitted");
    assert_eq!(proxy.chat(&other, "gpt-4o-mini", &[]).await.status(), 200);
    for _ in 0..4 {
        assert_eq!(
            proxy.chat(&namesake, "gpt-4o-mini", &[]).await.status(),
            200
        );
    }

    let (status, deleted) = acme.delete(&created["rate_limit"]["id"].to_string()).await;
    assert_eq!(status, 200, "{deleted}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = proxy.chat(&key, "gpt-4o-mini", &[]).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(
            Instant::now() < deadline,
            "the deleted limit is still enforced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A key's id as `keys list --json` gives it, from its secret.
fn id_of_key(env: &TestEnv, secret: &str) -> String {
    let keys: Value = serde_json::from_str(&env.run(&["keys", "list", "--json"])).unwrap();
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix_of(secret).as_str())
        .map(|k| k["id"].as_str().unwrap().to_string())
        .unwrap()
}

/// A key budget or key rate limit given the key's prefix (what lists
/// show) is stored by the key's id (what events carry and the proxy counts
/// against): a trial set both by prefix, was told they were set, and
/// neither ever applied. An id or prefix no key of the org has (another
/// org's key reads as none), or a revoked key, is refused naming the
/// field, through the CLI and the API (the admin page runs the same
/// check); nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_budget_or_limit_named_by_prefix_is_stored_by_the_keys_id() {
    let mut env = TestEnv::new("key_subjects").await;
    env.start_api().await;
    let http = reqwest::Client::new();
    let root_key = env.create_key_with_role("admin", None);
    let proxy_key = env.create_key_with_role("proxy", Some("acme"));
    let (prefix, id) = (prefix_of(&proxy_key), id_of_key(&env, &proxy_key));

    // The CLI, by prefix: both stored under the id.
    let said = env.run(&[
        "budgets", "set", "--kind", "key", "--id", &prefix, "--org", "acme", "--period", "daily",
        "--limit", "0.5",
    ]);
    assert!(said.contains(&format!("key {id} of org acme")), "{said}");
    // A budget of the key stored before 2026-12-07 without an org (it
    // judged the key's id in every org's events)...
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    sqlx::query(
        "INSERT INTO budgets (subject_kind, subject_id, period, limit_usd, enforcement, org_id) \
         VALUES ('key', $1, 'daily', 3, 'hard', NULL)",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    // ...and set again naming no org: the budget is the key's org's (it
    // replaces the one above and the org-less one, whose deletion is an
    // admin.budget.deleted event so its deny is lifted), not one judging
    // the key's id in every org's events, which any org's reporter could
    // spend by naming the id.
    let said = env.run(&[
        "budgets", "set", "--kind", "key", "--id", &prefix, "--period", "daily", "--limit", "0.75",
    ]);
    assert!(said.contains(&format!("key {id} of org acme")), "{said}");
    let deleted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_outbox WHERE event->>'kind' = 'admin.budget.deleted' \
         AND event->'admin'->>'subject' = $1",
    )
    .bind(format!("budget/key/{id}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(deleted, 1);
    let said = env.run(&[
        "ratelimits",
        "set",
        "--scope",
        "key",
        "--id",
        &prefix,
        "--org",
        "acme",
        "--rpm",
        "10",
    ]);
    assert!(
        said.contains(&format!("key {id} of org acme: 10 requests/min")),
        "{said}"
    );
    // The lists say whose: the text one names the org, `budgets list
    // --json` gives the admin API's shape.
    let listed = env.run(&["ratelimits", "list"]);
    assert!(listed.contains("acme") && listed.contains(&id), "{listed}");
    let budgets: Vec<Value> = env
        .run(&["budgets", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(budgets.len(), 1, "{budgets:?}");
    assert_eq!(
        (
            &budgets[0]["subject_id"],
            &budgets[0]["org_id"],
            &budgets[0]["limit_usd"]
        ),
        (&json!(id), &json!("acme"), &json!("0.75"))
    );
    // The API, by prefix and by id.
    let admin = Admin {
        http: &http,
        base: env.direct_api_url(),
        key: Some(root_key.clone()),
    };
    let (status, body) = admin
        .post(&json!({"scope_kind": "key", "scope_id": prefix, "org_id": "acme", "tokens_per_minute": 5000}))
        .await;
    assert_eq!(status, 200, "replaces the CLI's limit: {body}");
    assert_eq!(body["rate_limit"]["scope_id"], id.as_str(), "{body}");
    let budget = |subject: &str, org: &str| {
        http.post(format!("{}/api/v1/admin/budgets", env.direct_api_url()))
            .bearer_auth(&root_key)
            .json(
                &json!({"subject_kind": "key", "subject_id": subject, "org_id": org,
                          "limit_usd": "2", "period": "monthly"}),
            )
            .send()
    };
    let answer = budget(&prefix, "acme").await.unwrap();
    assert_eq!(answer.status(), 201);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["budget"]["subject_id"], id.as_str(), "{body}");

    // By id too (what events carry), through the API.
    let (status, body) = admin
        .post(&json!({"scope_kind": "key", "scope_id": id, "org_id": "acme", "tokens_per_minute": 6000}))
        .await;
    assert_eq!(status, 200, "replaces it again: {body}");
    assert_eq!(body["rate_limit"]["scope_id"], id.as_str(), "{body}");

    // Refused: no such key, another org's key (read as no key: nothing
    // tells globex's admins about acme's keys), a revoked key; by the CLI
    // and the API.
    let revoked_key = env.create_key_with_role("proxy", Some("acme"));
    let revoked = prefix_of(&revoked_key);
    env.run(&["keys", "revoke", &revoked]);
    for (given, org, reason) in [
        (
            "nosuchk1",
            "acme",
            "org acme has no API key with the id or prefix \"nosuchk1\"".to_string(),
        ),
        (
            prefix.as_str(),
            "globex",
            format!("org globex has no API key with the id or prefix \"{prefix}\""),
        ),
        (
            revoked.as_str(),
            "acme",
            format!("key {revoked} is revoked"),
        ),
    ] {
        let reason = reason.as_str();
        let out = env
            .tollgate(&[
                "budgets", "set", "--kind", "key", "--id", given, "--org", org, "--period",
                "daily", "--limit", "1",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("--id: {reason}")), "{err}");
        let out = env
            .tollgate(&[
                "ratelimits",
                "set",
                "--scope",
                "key",
                "--id",
                given,
                "--org",
                org,
                "--rpm",
                "1",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("--id: {reason}")), "{err}");
        let (status, body) = admin
            .post(&json!({"scope_kind": "key", "scope_id": given, "org_id": org, "requests_per_minute": 1}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], "scope_id", "{body}");
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
        let answer = budget(given, org).await.unwrap();
        assert_eq!(answer.status(), 400);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["field"], "subject_id", "{body}");
    }

    // A spend alert rule on the key, by prefix: it names the id too (a rule
    // on the prefix never fired); an unknown key is refused by field.
    let rule = |subject: &str| {
        http.post(format!("{}/api/v1/alerts/rules", env.direct_api_url()))
            .bearer_auth(&root_key)
            .json(
                &json!({"org_id": "acme", "name": format!("spend of {subject}"),
                          "severity": "warning",
                          "signal": {"kind": "spend", "subject_kind": "key", "subject_id": subject,
                                     "window_secs": 3600, "above_usd": "1"}}),
            )
            .send()
    };
    let answer = rule(&prefix).await.unwrap();
    assert_eq!(answer.status(), 201);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["rule"]["signal"]["subject_id"], id.as_str(), "{body}");
    let answer = rule("nosuchk1").await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["field"], "signal.subject_id", "{body}");

    // What is stored: one budget per period and one limit, all by the id.
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let budgets: Vec<(String, String)> =
        sqlx::query_as("SELECT subject_id, period FROM budgets ORDER BY period")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        budgets,
        [(id.clone(), "daily".into()), (id.clone(), "monthly".into())]
    );
    let limits: Vec<(String, Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT scope_id, requests_per_minute, tokens_per_minute FROM rate_limits")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(limits, [(id.clone(), None, Some(6000))]);
}
