//! Every route of `tollgate api`, walked from its own table (`tollgate
//! routes --json`, the assembly the server uses, so a new route cannot be
//! forgotten): without identity it is a 401 (API) or a redirect to the
//! sign-in page (pages); with a role its rule does not name, a 403; with
//! another org's ids or `org`, a 404 — for every method a route serves,
//! with API keys and with a signed-in person's session alike. And report
//! totals seen by a caller of one org are that org's share, exactly.

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

/// Who sends a request: nobody, a program's key, or a signed-in person
/// (session cookie and its form token).
#[derive(Debug, Clone)]
enum Who {
    Nobody,
    Key(String),
    Person { cookie: String, csrf: String },
}

struct Caller {
    http: reqwest::Client,
    base: String,
}

impl Caller {
    async fn send(&self, method: Method, path: &str, who: &Who) -> (StatusCode, String, String) {
        self.send_body(method, path, who, None).await
    }

    /// `method` on `path` as `who`; a change carries `json` (else an empty
    /// form, as a browser's form would send it).
    async fn send_body(
        &self,
        method: Method,
        path: &str,
        who: &Who,
        json: Option<&Value>,
    ) -> (StatusCode, String, String) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != Method::GET {
            request = match json {
                Some(body) => request.json(body),
                None => request
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(""),
            };
        }
        match who {
            Who::Nobody => {}
            Who::Key(key) => request = request.bearer_auth(key),
            Who::Person { cookie, csrf } => {
                request = request
                    .header("cookie", format!("tollgate_session={cookie}"))
                    .header("x-csrf-token", csrf);
            }
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

/// A model only globex calls (in [`every_route_requires_identity_role_and_org`]).
const GLOBEX_ONLY_MODEL: &str = "claude-haiku-4-5";

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
    // One more globex call, of a model acme never calls: an acme viewer's
    // latency page must not offer it in its filter menus.
    let mut events = seed();
    let mut other = call_event(
        "ads",
        "anthropic",
        GLOBEX_ONLY_MODEL,
        Utc::now() - chrono::Duration::minutes(5),
        usage(900, 0, 0, 150, 0),
        Outcome::Success,
    );
    other.org_id = "globex".into();
    events.push(other);
    env.process_events(&events).await;
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
    let rate_limit = api
        .post_json(
            "/api/v1/admin/rate_limits",
            &admin,
            &json!({"scope_kind": "team", "scope_id": "ads", "requests_per_minute": 100, "org_id": "globex"}),
        )
        .await["rate_limit"]["id"]
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
            6,
            PATIENCE
        )
        .await
            >= 6,
        "globex's six calls in the audit chain"
    );
    let audit = env
        .ch("SELECT concat(replaceAll(chain_id, '/', '%2F'), '/', toString(seq)) FROM {db}.audit_chain WHERE org_id = 'globex' ORDER BY seq LIMIT 1")
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
            "/api/v1/admin/rate_limits/{id}",
            format!("/api/v1/admin/rate_limits/{rate_limit}"),
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
    let methods_of =
        |path: &str| table.iter().find(|r| r["path"] == path).unwrap()["methods"].clone();
    assert_eq!(
        methods_of("/api/v1/alerts/rules/{id}"),
        json!(["GET", "PUT", "DELETE"])
    );
    assert_eq!(
        methods_of("/api/v1/alerts/silences/{id}"),
        json!(["GET", "DELETE"])
    );
    assert_eq!(
        methods_of("/sre/alerts/rules/{id}/edit"),
        json!(["GET", "POST"])
    );
    // The changes with a JSON body, as acme's would-be edit of globex's
    // object (a valid body: only the object's org can refuse it).
    let rule_spec = json!({
        "org_id": "acme", "name": "not yours",
        "signal": {"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300},
        "for_secs": 120, "severity": "critical",
    });
    let receiver_spec = json!({"org_id": "acme", "name": "not yours", "kind": "webhook",
        "url": "https://hooks.example.com/y", "signing_secret": "0123456789abcdef0123456789abcdef"});
    let bodies: BTreeMap<(&str, Method), Value> = [
        (
            ("/api/v1/alerts/rules/{id}", Method::PUT),
            json!({"version": 1, "rule": rule_spec}),
        ),
        (
            ("/api/v1/alerts/receivers/{id}", Method::PUT),
            json!({"version": 1, "receiver": receiver_spec}),
        ),
    ]
    .into_iter()
    .collect();
    let walk = Walk {
        api: &api,
        table: &table,
        globex_ids: &globex_ids,
        other_params: &other_params,
        bodies: &bodies,
    };

    // With API keys.
    let keys: BTreeMap<&str, Who> = acme
        .iter()
        .map(|(role, key)| (*role, Who::Key(key.clone())))
        .collect();
    let (public, checked) = walk.run(&keys, Some(&Who::Key(ingest.clone()))).await;
    // With the session of a person of each role in acme.
    let mut people = BTreeMap::new();
    for role in ROLES {
        let email = format!("{role}@acme.example");
        crate::sign_in::create_user(&env, &email, &[&format!("acme:{role}")]);
        let mut browser = crate::sign_in::Browser::new(api.base.clone());
        let answer = browser
            .sign_in(&email, crate::sign_in::PASSWORD, "/overview")
            .await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "{role}: {}",
            answer.body
        );
        let page = browser.get("/overview").await;
        assert_eq!(page.status, StatusCode::OK, "{role}: {}", page.body);
        people.insert(
            role,
            Who::Person {
                cookie: browser.cookie.clone().unwrap(),
                csrf: crate::sign_in::csrf_of(&page.body),
            },
        );
    }
    let (_, checked_signed_in) = walk.run(&people, None).await;
    assert_eq!(checked_signed_in, checked, "the same routes with sessions");
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
                .send(
                    Method::GET,
                    "/api/v1/reports/cost?group_by=",
                    &Who::Key(key),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let (acme_share, globex_share) = (share("acme").await, share("globex").await);
    assert_eq!(acme_share.1, 7);
    assert_eq!(globex_share.1, 6);
    assert_eq!(
        total(&cost_total(acme["finance"].clone()).await),
        acme_share
    );
    assert_eq!(total(&cost_total(acme["viewer"].clone()).await), acme_share);
    let all = total(&cost_total(admin.clone()).await);
    assert_eq!(all, (acme_share.0 + globex_share.0, 13));
    // The latency report of an acme key counts acme's calls only.
    let (_, _, body) = api
        .send(
            Method::GET,
            "/api/v1/reports/latency?group_by=org",
            &Who::Key(acme["sre"].clone()),
        )
        .await;
    assert!(body.contains("acme") && !body.contains("globex"), "{body}");

    // The latency page's filter menus offer the models of the viewer's
    // org only: an acme viewer's page names acme's model and not the
    // model only globex calls; globex's page, opened by an admin, does.
    let latency_page = |who: Who, path: &'static str| {
        let api = &api;
        async move {
            let (status, _, body) = api.send(Method::GET, path, &who).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    let acme_page = latency_page(Who::Key(acme["sre"].clone()), "/sre/latency?range=24h").await;
    assert!(acme_page.contains("gpt-4o-mini"), "{acme_page}");
    assert!(!acme_page.contains(GLOBEX_ONLY_MODEL), "{acme_page}");
    let globex_page = latency_page(
        Who::Key(admin.clone()),
        "/sre/latency?range=24h&org=globex&group_by=provider",
    )
    .await;
    assert!(globex_page.contains(GLOBEX_ONLY_MODEL), "{globex_page}");
}

/// The walk of every route of the table with one kind of credentials.
struct Walk<'a> {
    api: &'a Caller,
    table: &'a [Value],
    /// Concrete paths with globex's ids, by route.
    globex_ids: &'a BTreeMap<&'a str, String>,
    /// Concrete paths of routes whose parameter is no org's object.
    other_params: &'a BTreeMap<&'a str, &'a str>,
    /// JSON bodies of the changes that take one, by route and method.
    bodies: &'a BTreeMap<(&'a str, Method), Value>,
}

impl Walk<'_> {
    /// Walk every route and every method it serves with `acme` (a caller
    /// of each role, pinned to acme) and `no_reader` (a caller with no
    /// reader role, if any): the public routes seen and the number of
    /// routes checked.
    async fn run(
        &self,
        acme: &BTreeMap<&str, Who>,
        no_reader: Option<&Who>,
    ) -> (BTreeSet<String>, usize) {
        let api = self.api;
        let mut public = BTreeSet::new();
        let mut checked = 0;
        for route in self.table {
            let path = route["path"].as_str().unwrap();
            if route["public"] == true {
                public.insert(path.to_string());
                continue;
            }
            let concrete = if path.contains('{') {
                self.globex_ids
                    .get(path)
                    .cloned()
                    .or(self.other_params.get(path).map(|p| p.to_string()))
                    .unwrap_or_else(|| {
                        panic!("route {path} has a parameter: give it a sample in this test")
                    })
            } else {
                path.to_string()
            };
            let names = |key: &str| -> Vec<String> {
                route[key]
                    .as_array()
                    .unwrap_or_else(|| panic!("{path}: no {key} in {route}"))
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            let (read, write) = (names("read"), names("write"));
            let methods: Vec<Method> = names("methods")
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                .collect();
            assert!(!methods.is_empty(), "{path} serves no method");
            let is_api = path.starts_with("/api/");
            let reader = &acme[read.first().map(String::as_str).unwrap()];
            for method in &methods {
                let is_read = *method == Method::GET;
                let needs = if is_read { &read } else { &write };
                let body = self.bodies.get(&(path, method.clone()));
                let send = |method: Method, url: String, who: Who| async move {
                    api.send_body(method, &url, &who, body).await
                };

                // 1. Without identity: 401, or the sign-in page for a page.
                let (status, location, text) =
                    send(method.clone(), concrete.clone(), Who::Nobody).await;
                if is_read && !is_api {
                    assert_eq!(status, StatusCode::SEE_OTHER, "GET {concrete}: {text}");
                    assert!(
                        location.starts_with("/login?next="),
                        "GET {concrete} -> {location}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {concrete}: {text}"
                    );
                }

                // 2. A caller with no reader role, and a role the rule
                // does not name for this method: 403.
                if let Some(who) = no_reader {
                    let (status, _, text) =
                        send(method.clone(), concrete.clone(), who.clone()).await;
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{method} {concrete} with no reader role: {text}"
                    );
                }
                if let Some(role) = ROLES.iter().find(|r| !needs.iter().any(|x| x == *r)) {
                    let (status, _, text) =
                        send(method.clone(), concrete.clone(), acme[role].clone()).await;
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{method} {concrete} as {role}: {text}"
                    );
                }

                // A reader pinned to its org is served (a page or report
                // that cannot take the org it is pinned to would refuse
                // them).
                if is_read {
                    let (status, _, text) =
                        send(Method::GET, concrete.clone(), reader.clone()).await;
                    assert!(
                        !(status == StatusCode::BAD_REQUEST && text.contains("org")),
                        "GET {concrete} as an acme reader: {status} {text}"
                    );
                    assert_ne!(
                        status,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "GET {concrete}: {text}"
                    );
                }

                // 3. Another org, with the role this method needs: a 404,
                // never a row nor a change.
                let Some(role) = needs.first() else {
                    continue;
                };
                let who = acme[role.as_str()].clone();
                if !matches!(route["org"].as_str().unwrap(), "query" | "handler") {
                    continue;
                }
                let sep = if concrete.contains('?') { '&' } else { '?' };
                let (status, _, text) = send(
                    method.clone(),
                    format!("{concrete}{sep}org=globex"),
                    who.clone(),
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{method} {concrete}?org=globex as acme's {role}: {text}"
                );
                // An empty org names no org: the caller's own, as when
                // absent (a trial read every org's budgets, alert rules
                // and audit entries with `?org=`). Reads, and changes of
                // globex's objects.
                let globex_object = self.globex_ids.contains_key(path);
                if is_read || globex_object {
                    for empty in ["org=", "org"] {
                        let url = format!("{concrete}{sep}{empty}");
                        let (status, _, text) = send(method.clone(), url, who.clone()).await;
                        if globex_object {
                            // 404, or 400 from a route that takes no org.
                            assert!(
                                status == StatusCode::NOT_FOUND
                                    || (status == StatusCode::BAD_REQUEST
                                        && text.contains("unknown parameter")),
                                "{method} {concrete}{sep}{empty} (globex's) as acme's {role}: {status} {text}"
                            );
                        } else {
                            assert!(
                                !text.contains("globex"),
                                "{method} {concrete}{sep}{empty} as acme's {role}: {status} {text}"
                            );
                        }
                    }
                }
                // Two orgs: which one a handler would read is not the
                // gate's to guess.
                let (status, _, text) = send(
                    method.clone(),
                    format!("{concrete}{sep}org=&org=globex"),
                    who.clone(),
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{method} {concrete}{sep}org=&org=globex as acme's {role}: {text}"
                );
                if self.globex_ids.contains_key(path) {
                    let (status, _, text) = send(method.clone(), concrete.clone(), who).await;
                    assert_eq!(
                        status,
                        StatusCode::NOT_FOUND,
                        "{method} {concrete} (globex's) as acme's {role}: {text}"
                    );
                    assert!(!text.contains("globex") || text.contains("no "), "{text}");
                }
            }
            checked += 1;
        }
        (public, checked)
    }
}

/// The `href` of the element with `id` in `page` (entities decoded).
fn href_of(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\" href=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} link in the page"));
    let rest = &page[at + marker.len()..];
    decode_entities(&rest[..rest.find('"').unwrap()])
}

/// The `href` of the navigation link labelled `label` (`>label</a>`).
fn nav_href(page: &str, label: &str) -> String {
    let end = page
        .find(&format!(">{label}</a>"))
        .unwrap_or_else(|| panic!("no {label} link in the page"));
    let start = page[..end].rfind("href=\"").unwrap() + "href=\"".len();
    let href = &page[start..end];
    decode_entities(&href[..href.find('"').unwrap()])
}

fn decode_entities(text: &str) -> String {
    text.replace("&#38;", "&").replace("&amp;", "&")
}

/// CSV rows (without the header) as maps of column to value.
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let rows = crate::admin_pages::csv_rows(text);
    let (headers, rows) = rows.split_first().unwrap();
    rows.iter()
        .filter(|r| r.len() > 1 || !r[0].is_empty())
        .map(|r| headers.iter().cloned().zip(r.iter().cloned()).collect())
        .collect()
}

#[tokio::test]
async fn links_keep_the_org_and_the_filters_each_page_reads() {
    let mut env = TestEnv::new("access_links").await;
    env.process_events(&seed()).await;
    env.wait_for_cost_rollup().await;
    env.start_api().await;
    let admin = Who::Key(env.admin_key.clone().unwrap());
    let api = Caller {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: env.direct_api_url(),
    };
    for (org, team, limit) in [("acme", "search", "100"), ("globex", "ads", "250")] {
        let Who::Key(key) = &admin else {
            unreachable!()
        };
        api.post_json(
            "/api/v1/admin/budgets",
            key,
            &json!({"subject_kind": "team", "subject_id": team, "limit_usd": limit, "org_id": org}),
        )
        .await;
    }
    let open = |path: String| {
        let (api, admin) = (&api, &admin);
        async move {
            let (status, _, body) = api.send(Method::GET, &path, admin).await;
            assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
            body
        }
    };

    // The budgets page of globex: its CSV, JSON and cross-links keep the org.
    let budgets = open("/finance/budgets?org=globex".into()).await;
    assert_eq!(
        href_of(&budgets, "csv-link"),
        "/finance/budgets.csv?org=globex"
    );
    assert_eq!(
        href_of(&budgets, "json-link"),
        "/api/v1/finance/budgets?org=globex"
    );
    assert_eq!(href_of(&budgets, "cost-link"), "/finance/cost?org=globex");
    assert_eq!(
        href_of(&budgets, "statement-link"),
        "/finance/statement?org=globex"
    );
    let rows = csv_rows(&open(href_of(&budgets, "csv-link")).await);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["subject"], "budget/in/globex/team/ads", "{rows:?}");
    assert_eq!(rows[0]["limit_usd"], "250.000000000000", "{rows:?}");
    let json: Value = serde_json::from_str(&open(href_of(&budgets, "json-link")).await).unwrap();
    let listed = json.as_array().unwrap_or_else(|| panic!("{json}"));
    assert_eq!(listed.len(), 1, "{json}");
    assert_eq!(listed[0]["subject"], "budget/in/globex/team/ads", "{json}");

    // An SRE page with a preset window and filters: the Finance area reads
    // days, the Errors page the preset; Breakers, of no org, keeps the org
    // only to carry it on (the org switcher's choice holds past it).
    let now = Utc::now();
    let latency = open(
        "/sre/latency?range=24h&provider=openai&model=gpt-4o-mini&group_by=model&org=globex".into(),
    )
    .await;
    let (from, to) = (
        (now - chrono::Duration::hours(24)).date_naive(),
        now.date_naive().succ_opt().unwrap(),
    );
    let finance = nav_href(&latency, "Finance");
    assert_eq!(
        finance,
        format!("/finance/cost?from={from}&to={to}&org=globex&provider=openai&model=gpt-4o-mini")
    );
    assert_eq!(
        nav_href(&latency, "Errors"),
        "/sre/errors?range=24h&org=globex&provider=openai&model=gpt-4o-mini"
    );
    assert_eq!(
        nav_href(&latency, "Breakers"),
        "/sre/breakers?range=24h&org=globex&provider=openai&model=gpt-4o-mini"
    );
    assert_eq!(nav_href(&latency, "Overview"), "/overview?org=globex");
    for label in ["Errors", "Breakers", "Alerts", "Overview"] {
        open(nav_href(&latency, label)).await;
    }
    // Followed: the cost page of globex's openai calls, whose CSV has
    // globex's five calls only, and whose Budgets link keeps the org.
    let cost = open(finance).await;
    let rows = csv_rows(&open(href_of(&cost, "csv-link")).await);
    let teams: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["team"].as_str(), r["calls"].as_str()))
        .collect();
    assert_eq!(teams, [("ads", "5"), ("total", "5")], "{rows:?}");
    assert_eq!(rows[0]["cost_usd"], rows[1]["cost_usd"], "{rows:?}");
    assert_eq!(
        href_of(&cost, "budgets-link"),
        "/finance/budgets?org=globex"
    );
    // The SRE page back from finance: a custom window of those days.
    let back = nav_href(&cost, "SRE");
    assert_eq!(
        back,
        format!(
            "/sre/latency?range=custom&from={from}T00%3A00&to={to}T00%3A00&org=globex&provider=openai&model=gpt-4o-mini"
        )
    );
    open(back).await;
    // The admin sub-navigation keeps the org.
    let admin_budgets = open("/admin/budgets?org=globex".into()).await;
    assert_eq!(
        nav_href(&admin_budgets, "API keys"),
        "/admin/keys?org=globex"
    );
    assert_eq!(
        href_of(&admin_budgets, "csv-link"),
        "/admin/budgets.csv?org=globex"
    );
    let rows = csv_rows(&open(href_of(&admin_budgets, "csv-link")).await);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["org_id"].as_str(), rows[0]["subject_id"].as_str()),
        ("globex", "ads")
    );
}

/// Two orgs each budget their own team `shared` (team ids are per org): two
/// budgets, each judged on its own org's calls; a budget set without an
/// org (`tollgate budgets set` without `--org`) judges the id in every org.
#[tokio::test]
async fn two_orgs_budgeting_one_team_id_get_a_budget_each_judged_on_their_own_calls() {
    let mut env = TestEnv::new("access_budget_orgs").await;
    let at = Utc::now() - chrono::Duration::minutes(5);
    let mut events = Vec::new();
    for (org, n, input) in [("acme", 3u64, 1000u64), ("globex", 2, 5000)] {
        for i in 0..n {
            let mut e = call_event(
                "shared",
                "openai",
                "gpt-4o-mini",
                at,
                usage(input + i, 0, 0, 100, 0),
                Outcome::Success,
            );
            e.org_id = org.into();
            events.push(e);
        }
    }
    env.process_events(&events).await;
    env.wait_for_cost_rollup().await;
    env.start_api().await;
    let admin = env.admin_key.clone().unwrap();
    let api = Caller {
        http: reqwest::Client::new(),
        base: env.direct_api_url(),
    };
    // Each org's own spend of team `shared`, as the calls hold it.
    let mut spent = BTreeMap::new();
    for org in ["acme", "globex"] {
        let mantissa = env
            .ch(&format!(
                "SELECT toString(sum(cost)) FROM {{db}}.calls WHERE org_id = '{org}' AND team_id = 'shared'"
            ))
            .await;
        spent.insert(org, d(mantissa.trim()));
    }
    assert!(
        spent["acme"] > d("0") && spent["globex"] > spent["acme"],
        "{spent:?}"
    );

    let mut ids = BTreeMap::new();
    for (org, limit) in [("acme", "10"), ("globex", "20")] {
        let answer = api
            .post_json(
                "/api/v1/admin/budgets",
                &admin,
                &json!({"subject_kind": "team", "subject_id": "shared", "limit_usd": limit,
                        "enforcement": "hard", "org_id": org}),
            )
            .await;
        assert_eq!(answer["replaced"], Value::Null, "{org}: {answer}");
        assert_eq!(
            answer["budget"]["subject"],
            format!("budget/in/{org}/team/shared"),
            "{answer}"
        );
        assert_eq!(answer["budget"]["org_id"], org, "{answer}");
        ids.insert(org, answer["budget"]["budget_id"].as_i64().unwrap());
    }
    assert_ne!(ids["acme"], ids["globex"]);

    for (org, limit) in [("acme", "10"), ("globex", "20")] {
        let (status, _, body) = api
            .send(
                Method::GET,
                &format!("/api/v1/finance/budgets?org={org}"),
                &Who::Key(admin.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let listed: Value = serde_json::from_str(&body).unwrap();
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 1, "{org}: {listed:?}");
        assert_eq!(listed[0]["id"].as_i64(), Some(ids[org]));
        assert_eq!(d(listed[0]["limit_usd"].as_str().unwrap()), d(limit));
        assert_eq!(
            d(listed[0]["spend_usd"].as_str().unwrap()),
            spent[org],
            "{org}: {listed:?}"
        );
        // The burn-down reads the same calls.
        let (status, _, body) = api
            .send(
                Method::GET,
                &format!("/api/v1/finance/budgets/{}/burndown", ids[org]),
                &Who::Key(admin.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let burndown: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            d(burndown["spend_usd"].as_str().unwrap()),
            spent[org],
            "{org}: {burndown}"
        );
    }

    // A budget of team `shared` set without an org: every org's calls.
    let out = env.run(&[
        "budgets", "set", "--kind", "team", "--id", "shared", "--limit", "30", "--soft",
    ]);
    assert!(out.contains("(in every org)"), "{out}");
    let (status, _, body) = api
        .send(
            Method::GET,
            "/api/v1/finance/budgets",
            &Who::Key(admin.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let every = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"] == "budget/team/shared")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        d(every["spend_usd"].as_str().unwrap()),
        spent["acme"] + spent["globex"],
        "{every}"
    );
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    // A statement of team `shared` is one org's: without `org` it names the
    // orgs to choose from (API and page), with it each org's own spend.
    let month = at.format("%Y-%m").to_string();
    for path in [
        format!("/api/v1/finance/statement?team=shared&month={month}"),
        format!("/finance/statement?team=shared&month={month}"),
    ] {
        let (status, _, body) = api.send(Method::GET, &path, &Who::Key(admin.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("acme, globex"), "{path}: {body}");
    }
    let (status, _, body) = api
        .send(
            Method::GET,
            &format!("/api/v1/finance/statement?team=shared&month={month}"),
            &Who::Key(admin.clone()),
        )
        .await;
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &refusal["parameter"]),
        (StatusCode::BAD_REQUEST, &json!("org"))
    );
    for org in ["acme", "globex"] {
        let (status, _, body) = api
            .send(
                Method::GET,
                &format!("/api/v1/finance/statement?team=shared&month={month}&org={org}"),
                &Who::Key(admin.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let statement: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            d(statement["total"]["cost"].as_str().unwrap()),
            spent[org],
            "{org}: {statement}"
        );
    }
}

/// `tollgate api` cuts off slow clients as the ingest API and the proxy do
/// (`tollgate_control::http_server`): a connection whose request headers
/// never end, or that sends nothing, is closed after the headers' 10 s
/// (it was held for good behind `axum::serve`), and the server still
/// answers.
#[tokio::test]
async fn the_api_cuts_off_slow_clients() {
    use tokio::io::AsyncWriteExt;
    let mut env = TestEnv::new("api_slow").await;
    env.start_api().await;
    // The server itself, not the test's forwarder that signs requests in.
    let address = env
        .direct_api_url()
        .trim_start_matches("http://")
        .to_string();
    let started = std::time::Instant::now();
    let mut partial = tokio::net::TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(b"GET /api/v1/reports/latency HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    for (what, stream) in [
        ("unfinished headers", &mut partial),
        ("nothing sent", &mut silent),
    ] {
        assert!(
            crate::ingest_api::until_closed(stream, std::time::Duration::from_secs(30))
                .await
                .is_some(),
            "a connection with {what} is still open after 30 s"
        );
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "closed too soon"
    );
    // A body announced as 1000 bytes of which 2 come: after the body's
    // 30 s, a JSON 408 naming `body`, as the ingest API and the proxy
    // answer (the route's extractor made it a plain-text 400).
    let key = env.create_key_with_role("admin", None);
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/v1/audit/erasures HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\""
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let answer = crate::ingest_api::until_closed(&mut stalled, std::time::Duration::from_secs(60))
        .await
        .expect("a stalled body is still open after 60 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"field\":\"body\""), "{answer}");

    let response = reqwest::get(format!("{}/healthz", env.api_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
