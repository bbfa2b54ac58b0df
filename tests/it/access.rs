//! Every route of `tollgate api`, walked from its own table (`tollgate
//! routes --json`, the assembly the server uses, so a new route cannot be
//! forgotten): without identity it is a 401 (API) or a redirect to the
//! sign-in page (pages); with a role its rule does not name, a 403; with
//! another org's ids or `org`, a 404. And report totals seen by a caller
//! of one org are that org's share, exactly.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_contract::Outcome;

use crate::support::events::{call_event, usage};
use crate::support::{d, TestEnv, PATIENCE};

const ROLES: [&str; 5] = ["admin", "finance", "sre", "compliance", "viewer"];

/// Routes anyone may open; making another one public must be a
/// conscious change here.
const PUBLIC: [&str; 10] = [
    "/healthz",
    "/readyz",
    // Prometheus scrapes without credentials; request counts by route, no
    // org's data (docs/metrics.md).
    "/metrics",
    "/login",
    "/invitations/{token}",
    "/static/{file}",
    "/sre/alerts/login",
    "/compliance/login",
    // Single sign-on (tests/it/sso.rs): 404 unless `[auth.oidc]` is set.
    "/auth/oidc/start",
    "/auth/oidc/callback",
];

/// Routes without a GET: the method a request about an id uses.
fn method_of(path: &str) -> Method {
    match path {
        "/api/v1/admin/budgets/{id}" | "/api/v1/admin/keys/{prefix}" => Method::DELETE,
        "/api/v1/admin/prices"
        | "/api/v1/admin/budgets"
        | "/api/v1/alerts/backtest"
        | "/api/v1/audit/erasures"
        | "/sre/alerts/silences"
        | "/sre/alerts/silences/{id}/expire"
        | "/sre/alerts/rules/{id}/delete"
        | "/admin/users/{id}/grants"
        | "/admin/users/{id}/disable" => Method::POST,
        _ => Method::GET,
    }
}

struct Caller {
    http: reqwest::Client,
    base: String,
}

impl Caller {
    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != Method::GET {
            // As a browser's form would send it.
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body("");
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    async fn post_json(&self, path: &str, key: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

/// Calls of two orgs: acme (7 calls of team search) and globex (5 of ads).
fn seed() -> Vec<tollgate_contract::Event> {
    let at = Utc::now() - chrono::Duration::minutes(5);
    let mut events = Vec::new();
    for (org, team, n) in [("acme", "search", 7u64), ("globex", "ads", 5)] {
        for i in 0..n {
            let mut e = call_event(
                team,
                "openai",
                "gpt-4o-mini",
                at,
                usage(1000 + 17 * i, 0, 0, 200 + 3 * i, 0),
                Outcome::Success,
            );
            e.org_id = org.into();
            events.push(e);
        }
    }
    events
}

#[tokio::test]
async fn every_route_requires_identity_role_and_org() {
    let mut env = TestEnv::new("access").await;
    env.process_events(&seed()).await;
    env.wait_for_cost_rollup().await;
    env.start_api().await;
    let admin = env.admin_key.clone().unwrap();
    let api = Caller {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: env.direct_api_url(),
    };

    // Keys of each role in acme, and an ingest key (no reader role).
    let acme: BTreeMap<&str, String> = ROLES
        .iter()
        .map(|role| (*role, env.create_key_with_role(role, Some("acme"))))
        .collect();
    let ingest = env.create_key_with_role("ingest", None);

    // globex's objects, for the routes with ids.
    let budget = api
        .post_json(
            "/api/v1/admin/budgets",
            &admin,
            &json!({"subject_kind": "team", "subject_id": "ads", "limit_usd": "100", "org_id": "globex"}),
        )
        .await["budget"]["budget_id"]
        .as_i64()
        .unwrap();
    let rule = api
        .post_json(
            "/api/v1/alerts/rules",
            &admin,
            &json!({
                "org_id": "globex", "name": "openai errors",
                "signal": {"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300},
                "for_secs": 120, "severity": "critical",
            }),
        )
        .await["rule"]["id"]
        .as_i64()
        .unwrap();
    let now = Utc::now();
    let silence = api
        .post_json(
            "/api/v1/alerts/silences",
            &admin,
            &json!({
                "org_id": "globex",
                "matchers": [{"name": "team", "op": "=", "value": "ads"}],
                "starts_at": now.to_rfc3339(),
                "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                "comment": "access test",
            }),
        )
        .await["silence"]["id"]
        .as_i64()
        .unwrap();
    let receiver = api
        .post_json(
            "/api/v1/alerts/receivers",
            &admin,
            &json!({"org_id": "globex", "name": "hook", "kind": "webhook",
                    "url": "https://hooks.example.com/x", "signing_secret": "0123456789abcdef0123456789abcdef"}),
        )
        .await["receiver"]["id"]
        .as_i64()
        .unwrap();
    let globex_key = env.create_key_with_role("ingest", Some("globex"));
    let globex_prefix = globex_key[3..11].to_string();
    let keys: Value = serde_json::from_str(&env.run(&["keys", "list", "--json"])).unwrap();
    let globex_key_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == globex_prefix.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The audit fold is a consumer group of its own: its rows can come
    // after the calls and cost rows waited for above.
    assert!(
        env.wait_for_count(
            "SELECT count() FROM {db}.audit_chain WHERE org_id = 'globex' AND kind LIKE 'ai.call.%'",
            5,
            PATIENCE
        )
        .await
            >= 5,
        "globex's five calls in the audit chain"
    );
    let audit = env
        .ch("SELECT concat(chain_id, '/', toString(seq)) FROM {db}.audit_chain WHERE org_id = 'globex' ORDER BY seq LIMIT 1")
        .await;
    let audit = audit.trim().to_string();
    assert!(!audit.is_empty(), "globex has audit entries");
    crate::sign_in::create_user(&env, "viewer@globex.example", &["globex:viewer"]);
    let people: Value = serde_json::from_str(&env.run(&["users", "list", "--json"])).unwrap();
    let person = people
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == "viewer@globex.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let globex_ids: BTreeMap<&str, String> = [
        (
            "/admin/users/{id}/grants",
            format!("/admin/users/{person}/grants"),
        ),
        (
            "/admin/users/{id}/disable",
            format!("/admin/users/{person}/disable"),
        ),
        (
            "/api/v1/finance/budgets/{id}/burndown",
            format!("/api/v1/finance/budgets/{budget}/burndown"),
        ),
        (
            "/api/v1/admin/budgets/{id}",
            format!("/api/v1/admin/budgets/{budget}"),
        ),
        (
            "/finance/budgets/{id}",
            format!("/finance/budgets/{budget}"),
        ),
        (
            "/admin/budgets/{id}/edit",
            format!("/admin/budgets/{budget}/edit"),
        ),
        (
            "/admin/budgets/{id}/delete",
            format!("/admin/budgets/{budget}/delete"),
        ),
        (
            "/api/v1/admin/keys/{prefix}",
            format!("/api/v1/admin/keys/{globex_prefix}"),
        ),
        (
            "/admin/keys/{id}/revoke",
            format!("/admin/keys/{globex_key_id}/revoke"),
        ),
        (
            "/api/v1/alerts/rules/{id}",
            format!("/api/v1/alerts/rules/{rule}"),
        ),
        (
            "/sre/alerts/rules/{id}",
            format!("/sre/alerts/rules/{rule}"),
        ),
        (
            "/sre/alerts/rules/{id}/edit",
            format!("/sre/alerts/rules/{rule}/edit"),
        ),
        (
            "/sre/alerts/rules/{id}/delete",
            format!("/sre/alerts/rules/{rule}/delete"),
        ),
        (
            "/sre/alerts/rules/{id}/backtest.csv",
            format!("/sre/alerts/rules/{rule}/backtest.csv"),
        ),
        (
            "/api/v1/alerts/silences/{id}",
            format!("/api/v1/alerts/silences/{silence}"),
        ),
        (
            "/sre/alerts/silences/{id}/expire",
            format!("/sre/alerts/silences/{silence}/expire"),
        ),
        (
            "/api/v1/alerts/receivers/{id}",
            format!("/api/v1/alerts/receivers/{receiver}"),
        ),
        (
            "/api/v1/audit/entries/{chain}/{seq}",
            format!("/api/v1/audit/entries/{audit}"),
        ),
        (
            "/compliance/entries/{chain}/{seq}",
            format!("/compliance/entries/{audit}"),
        ),
    ]
    .into_iter()
    .collect();
    // Paths with a parameter that is not another org's object.
    let other_params: BTreeMap<&str, &str> = [
        (
            "/api/v1/reports/errors/{signature}",
            "/api/v1/reports/errors/00000000000000ff",
        ),
        ("/sre/errors/{signature}", "/sre/errors/00000000000000ff"),
        ("/api/{*rest}", "/api/v1/nope"),
        // Fleet-wide: only an admin of every org (the handler refuses others).
        (
            "/api/v1/admin/providers/{provider}",
            "/api/v1/admin/providers/openai",
        ),
    ]
    .into_iter()
    .collect();

    let table: Vec<Value> =
        serde_json::from_str(&env.run(&["routes", "--json"])).expect("tollgate routes --json");
    assert!(table.len() > 60, "{} routes", table.len());
    let mut public = BTreeSet::new();
    let mut checked = 0;
    for route in &table {
        let path = route["path"].as_str().unwrap();
        if route["public"] == true {
            public.insert(path.to_string());
            continue;
        }
        let concrete = if path.contains('{') {
            globex_ids
                .get(path)
                .or(other_params.get(path).map(|p| p.to_string()).as_ref())
                .cloned()
                .unwrap_or_else(|| {
                    panic!("route {path} has a parameter: give it a sample in this test")
                })
        } else {
            path.to_string()
        };
        let names = |key: &str| -> Vec<String> {
            route[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let (read, write) = (names("read"), names("write"));
        let is_api = path.starts_with("/api/");

        // 1. Without identity: 401, or the sign-in page for a page.
        let (status, location, body) = api.send(Method::GET, &concrete, None).await;
        if is_api {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "GET {concrete}: {body}");
        } else {
            assert_eq!(status, StatusCode::SEE_OTHER, "GET {concrete}: {body}");
            assert!(
                location.starts_with("/login?next="),
                "GET {concrete} -> {location}"
            );
        }
        let (status, _, body) = api.send(Method::POST, &concrete, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "POST {concrete}: {body}");

        // 2. A program key with no reader role, and a role the rule does
        // not name: 403.
        let (status, _, body) = api.send(Method::GET, &concrete, Some(&ingest)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "GET {concrete} as ingest: {body}"
        );
        if let Some(role) = ROLES.iter().find(|r| !read.iter().any(|x| x == *r)) {
            let (status, _, body) = api.send(Method::GET, &concrete, Some(&acme[role])).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "GET {concrete} as {role}: {body}"
            );
        }
        if let Some(role) = ROLES
            .iter()
            .find(|r| read.iter().any(|x| x == *r) && !write.iter().any(|x| x == *r))
        {
            let (status, _, body) = api.send(Method::POST, &concrete, Some(&acme[role])).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "POST {concrete} as {role}: {body}"
            );
        }

        // A reader pinned to its org is served (a page or report that
        // cannot take the org it is pinned to would refuse them).
        if method_of(path) == Method::GET {
            let reader = read.first().map(|r| acme[r.as_str()].clone()).unwrap();
            let (status, _, body) = api.send(Method::GET, &concrete, Some(&reader)).await;
            assert!(
                !(status == StatusCode::BAD_REQUEST && body.contains("org")),
                "GET {concrete} as an acme reader: {status} {body}"
            );
            assert_ne!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "GET {concrete}: {body}"
            );
        }

        // 3. Another org: a 404, never a row.
        let reader = read.first().map(|r| acme[r.as_str()].clone()).unwrap();
        match route["org"].as_str().unwrap() {
            "query" | "handler" => {
                let sep = if concrete.contains('?') { '&' } else { '?' };
                let (status, _, body) = api
                    .send(
                        Method::GET,
                        &format!("{concrete}{sep}org=globex"),
                        Some(&reader),
                    )
                    .await;
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "GET {concrete}?org=globex: {body}"
                );
                if globex_ids.contains_key(path) {
                    let method = method_of(path);
                    let key = if method == Method::GET {
                        reader.clone()
                    } else {
                        acme[write.first().map(String::as_str).unwrap_or("admin")].clone()
                    };
                    let (status, _, body) = api.send(method.clone(), &concrete, Some(&key)).await;
                    assert_eq!(
                        status,
                        StatusCode::NOT_FOUND,
                        "{method} {concrete} (globex's) as acme: {body}"
                    );
                    assert!(!body.contains("globex") || body.contains("no "), "{body}");
                }
            }
            _ => {}
        }
        checked += 1;
    }
    let expected_public: BTreeSet<String> = PUBLIC.iter().map(|p| p.to_string()).collect();
    assert_eq!(public, expected_public, "public routes");
    assert!(checked > 55, "{checked} routes checked");
    // Every sample was a route (a renamed route must rename its sample).
    for path in globex_ids.keys().chain(other_params.keys()) {
        assert!(table.iter().any(|r| r["path"] == *path), "no route {path}");
    }

    // 4. Report totals: an acme finance key sees acme's share exactly.
    let share = |org: &'static str| {
        let env = &env;
        async move {
            let row = env
                .ch(&format!(
                    "SELECT toString(sum(cost)), sum(calls) FROM {{db}}.cost_daily WHERE org_id = '{org}' FORMAT TSV"
                ))
                .await;
            let (cost, calls) = row.trim().split_once('\t').unwrap();
            (d(cost), calls.parse::<i64>().unwrap())
        }
    };
    let total = |report: &Value| {
        let t = &report["total"];
        (d(t["cost"].as_str().unwrap()), t["calls"].as_i64().unwrap())
    };
    let cost_total = |key: String| {
        let api = &api;
        async move {
            let (status, _, body) = api
                .send(Method::GET, "/api/v1/reports/cost?group_by=", Some(&key))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let (acme_share, globex_share) = (share("acme").await, share("globex").await);
    assert_eq!(acme_share.1, 7);
    assert_eq!(globex_share.1, 5);
    assert_eq!(
        total(&cost_total(acme["finance"].clone()).await),
        acme_share
    );
    assert_eq!(total(&cost_total(acme["viewer"].clone()).await), acme_share);
    let all = total(&cost_total(admin.clone()).await);
    assert_eq!(all, (acme_share.0 + globex_share.0, 12));
    // The latency report of an acme key counts acme's calls only.
    let (_, _, body) = api
        .send(
            Method::GET,
            "/api/v1/reports/latency?group_by=org",
            Some(&acme["sre"]),
        )
        .await;
    assert!(body.contains("acme") && !body.contains("globex"), "{body}");
}
