//! The Alerts and Rules pages and their API (`GET /api/v1/alerts`,
//! `/transitions`, `/dead-letters`) against real PostgreSQL and ClickHouse:
//! rules are created through the API, the evaluator's writes are made the
//! way it makes them (a `Phase` as JSON in `alert_state`, rows in
//! `alert_transitions`, one of them published twice as after a crash, dead
//! letters through `record_dead_letter`), and calls with a known error
//! episode sit in the rollup. The JSON must show the firing and pending
//! alerts with their values, each transition once, only the caller's org
//! (another org's rule is absent, or 404 when named), and the CSV the same
//! rows; headless Chromium must show the firing alert, the timeline and
//! the rule's backtest chart with its threshold. Form posts need a signed
//! in `sre`/`admin` key and the session's token.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tollgate_contract::alert_lifecycle::Phase;
use tollgate_control::alert_deliveries::{record_dead_letter, DeadLetter};
use uuid::Uuid;

use crate::alert_rules::csv_records;
use crate::latency_fixture::{insert_calls, Call};
use crate::support::chromium::signed_in_dom;
use crate::support::TestEnv;

fn rule(org: &str, name: &str, signal: Value, for_secs: u32) -> Value {
    json!({
        "org_id": org,
        "name": name,
        "signal": signal,
        "for_secs": for_secs,
        "labels": {"team": "search"},
        "severity": "critical",
    })
}

struct Client {
    http: reqwest::Client,
    base: String,
    /// The session of the person signed in beside each key (same role and
    /// org): the pages' forms are posted by people.
    sessions: std::collections::HashMap<String, String>,
}

impl Client {
    async fn get(&self, path: &str, key: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.get(path, key).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn post_json(&self, path: &str, key: &str, body: &Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 201, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Sign in a person with `grant` and pair their session with `key`.
    async fn person(&mut self, env: &TestEnv, key: &str, email: &str, grant: &str) {
        crate::sign_in::create_user(env, email, &[grant]);
        let mut browser = crate::sign_in::Browser::new(self.base.clone());
        browser
            .sign_in(email, "correct horse battery staple", "/")
            .await;
        self.sessions
            .insert(key.to_string(), browser.cookie.expect("signed in"));
    }

    fn session(&self, key: &str) -> String {
        format!("tollgate_session={}", self.sessions[key])
    }

    /// A page form post with the session paired with `key` (or none).
    async fn form(
        &self,
        path: &str,
        key: Option<&str>,
        fields: &[(&str, String)],
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(key) = key {
            request = request.header("cookie", self.session(key));
        }
        request.send().await.unwrap()
    }

    async fn rule_count(&self, key: &str) -> usize {
        let rules = self.json("/api/v1/alerts/rules", key).await;
        rules.as_array().unwrap().len()
    }

    /// The CSRF token the page at `path` gives `key`'s session.
    async fn csrf(&self, path: &str, key: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.session(key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        crate::sign_in::csrf_of(&r.text().await.unwrap())
    }
}

/// `page` in headless Chromium signed in with `key`; a screenshot for
/// people goes to `tests/artifacts/<shot>`.
async fn dom(env: &TestEnv, key: &str, page: &str, shot: &str) -> String {
    signed_in_dom(&env.direct_api_url(), key, page, shot).await
}

/// A row as the evaluator's outbox publishes it; `rule` is (org, id,
/// name).
fn transition_row(
    (org, rule_id, name): (&str, i64, &str),
    (from, to): (&str, &str),
    at: DateTime<Utc>,
    since: DateTime<Utc>,
    value: &str,
    event_id: &str,
) -> String {
    json!({
        "at": at.timestamp(),
        "at_ms": at.timestamp_millis(),
        "org_id": org,
        "rule_id": rule_id,
        "rule_name": name,
        "from_state": from,
        "to_state": to,
        "value": value,
        "since": since.timestamp(),
        "notification_id": if to == "firing" { "7c1e4a52-0b7e-8d3f-9a41-5f2c7d1e0a9b" } else { "" },
        "silenced": 0,
        "event_id": event_id,
    })
    .to_string()
}

/// Ten calls a minute of org-a on openai over the last hour; in the 20
/// minutes from 40 to 20 minutes ago half of them failed.
fn calls(now: i64) -> Vec<Call> {
    let start = now - now % 60 - 3_600;
    (0..60)
        .flat_map(|m| {
            (0..10).map(move |i| Call {
                provider: "openai",
                model: "gpt-4o",
                team: "search",
                org: "org-a",
                at: start + m * 60 + i * 5,
                duration_ms: 200,
                ttft_ms: None,
                error: (20..40).contains(&m) && i < 5,
                kind: "ai.call.completed",
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_pages_show_state_timeline_backtest_and_guard_forms() {
    let mut env = TestEnv::new("alert_pages").await;
    env.start_api().await;
    let sre_a = env.create_key_with_role("sre", Some("org-a"));
    let finance_a = env.create_key_with_role("finance", Some("org-a"));
    let sre_b = env.create_key_with_role("sre", Some("org-b"));
    let admin = env.create_key_with_role("admin", None);
    let mut api = Client {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: env.direct_api_url(),
        sessions: Default::default(),
    };
    api.person(&env, &sre_a, "sre@a.example", "org-a:sre").await;
    api.person(&env, &finance_a, "finance@a.example", "org-a:finance")
        .await;
    api.person(&env, &sre_b, "sre@b.example", "org-b:sre").await;
    api.person(&env, &admin, "admin@example.com", "*:admin")
        .await;

    // Rules through the API.
    let error_rate = json!({"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300});
    let a1 = api
        .post_json(
            "/api/v1/alerts/rules",
            &sre_a,
            &rule("org-a", "openai failing", error_rate.clone(), 120),
        )
        .await["rule"]["id"]
        .as_i64()
        .unwrap();
    let a2 = api
        .post_json(
            "/api/v1/alerts/rules",
            &sre_a,
            &rule(
                "org-a",
                "slow p95",
                json!({"kind": "latency", "metric": "duration", "percentile": 95, "above_ms": 2000, "window_secs": 600}),
                300,
            ),
        )
        .await["rule"]["id"]
        .as_i64()
        .unwrap();
    let b1 = api
        .post_json(
            "/api/v1/alerts/rules",
            &sre_b,
            &rule("org-b", "b failing", error_rate, 0),
        )
        .await["rule"]["id"]
        .as_i64()
        .unwrap();

    // The Rules list filtered to one org, as the Alerts page: the tabs
    // carry the org both ways and the list's CSV is filtered alike.
    let (status, rules_b) = api.get("/sre/alerts/rules?org=org-b", &admin).await;
    assert_eq!(status, 200, "{rules_b}");
    assert!(rules_b.contains("b failing"), "{rules_b}");
    assert!(!rules_b.contains("openai failing"), "{rules_b}");
    assert!(
        rules_b.contains("href=\"/sre/alerts?org=org-b\""),
        "{rules_b}"
    );
    assert!(
        rules_b.contains("href=\"/sre/alerts/rules.csv?org=org-b\""),
        "{rules_b}"
    );
    let (status, csv_b) = api.get("/sre/alerts/rules.csv?org=org-b", &admin).await;
    assert_eq!(status, 200, "{csv_b}");
    assert_eq!(csv_b.lines().count(), 2, "{csv_b}");
    assert!(csv_b.contains("b failing"), "{csv_b}");
    let (_, all) = api.get("/sre/alerts/rules", &admin).await;
    assert!(all.contains("b failing") && all.contains("openai failing"));
    assert!(
        all.contains("href=\"/sre/alerts\""),
        "no org: the tab carries none"
    );
    let (_, alerts_b) = api.get("/sre/alerts?org=org-b", &admin).await;
    assert!(
        alerts_b.contains("href=\"/sre/alerts/rules?org=org-b\""),
        "{alerts_b}"
    );
    // A caller pinned to org-a: org-b is as if it did not exist (the gate's
    // 404, as on every page).
    let (status, body) = api.get("/sre/alerts/rules?org=org-b", &sre_a).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no org org-b") && !body.contains("b failing"),
        "{body}"
    );
    let (status, body) = api.get("/sre/alerts/rules.csv?org=org-b", &sre_a).await;
    assert_eq!(status, 404, "{body}");
    let (_, mine) = api.get("/sre/alerts/rules", &sre_a).await;
    assert!(mine.contains("href=\"/sre/alerts?org=org-a\""), "{mine}");

    // The evaluator's writes: state in PostgreSQL ...
    let now = Utc::now();
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    for (rule_id, phase, value) in [
        (
            a1,
            Phase::Firing {
                since: minutes(10),
                fired_at: minutes(8),
            },
            "12.5000",
        ),
        (a2, Phase::Pending { since: minutes(2) }, "2500.125"),
        (
            b1,
            Phase::Firing {
                since: minutes(5),
                fired_at: minutes(5),
            },
            "50.0000",
        ),
    ] {
        crate::support::write_alert_state(&pool, rule_id, phase, minutes(1), value).await;
    }
    // ... the timeline in ClickHouse: a1 pending then firing (the firing
    // row published twice, in two parts, as after a crash), b1 firing ...
    let pending = transition_row(
        ("org-a", a1, "openai failing"),
        ("inactive", "pending"),
        minutes(10),
        minutes(10),
        "7.5000",
        "ev-a1-pending",
    );
    let firing = transition_row(
        ("org-a", a1, "openai failing"),
        ("pending", "firing"),
        minutes(8),
        minutes(10),
        "12.5000",
        "ev-a1-firing",
    );
    let other = transition_row(
        ("org-b", b1, "b failing"),
        ("inactive", "firing"),
        minutes(5),
        minutes(5),
        "50.0000",
        "ev-b1-firing",
    );
    for rows in [vec![&pending, &firing, &other], vec![&firing]] {
        let body: Vec<&str> = rows.iter().map(|s| s.as_str()).collect();
        env.ch(&format!(
            "INSERT INTO {{db}}.alert_transitions FORMAT JSONEachRow\n{}",
            body.join("\n")
        ))
        .await;
    }
    // ... and one dead letter per org.
    for (org, n) in [("org-a", 1u128), ("org-b", 2)] {
        record_dead_letter(
            &pool,
            &DeadLetter {
                receiver_id: Uuid::from_u128(n),
                receiver_kind: "webhook".into(),
                delivery_id: Uuid::from_u128(100 + n),
                notification_ids: vec![Uuid::from_u128(200 + n)],
                org_id: org.into(),
                payload: "[]".into(),
                attempts: 10,
                last_error: "503 Service Unavailable".into(),
                failed_at: minutes(3),
            },
        )
        .await
        .unwrap();
    }
    insert_calls(&env.ch_database, &calls(now.timestamp())).await;

    // ---- JSON and CSV
    let alerts = api.json("/api/v1/alerts", &sre_a).await;
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 2, "org-a's two, not org-b's: {alerts:?}");
    assert_eq!(alerts[0]["rule_id"], a1);
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["value"], "12.5000");
    assert_eq!(alerts[0]["unit"], "%");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["labels"]["team"], "search");
    // The alert's labels, as its notifications carry them.
    assert_eq!(alerts[0]["labels"]["alertname"], alerts[0]["rule_name"]);
    assert_eq!(alerts[0]["labels"]["severity"], "critical");
    assert_eq!(alerts[0]["labels"]["org"], "org-a");
    assert_eq!(
        alerts[0]["fired_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        minutes(8)
    );
    assert!(
        alerts[0]["link"]
            .as_str()
            .unwrap()
            .starts_with("/sre/errors?range=custom&from="),
        "{}",
        alerts[0]["link"]
    );
    assert_eq!(alerts[1]["rule_id"], a2);
    assert_eq!(alerts[1]["state"], "pending");
    assert_eq!(alerts[1]["fired_at"], Value::Null);
    assert_eq!(
        api.json("/api/v1/alerts", &admin)
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        api.json("/api/v1/alerts", &finance_a)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, _) = api.get("/api/v1/alerts?org=org-b", &sre_a).await;
    assert_eq!(status, 404, "another org is not found");

    let csv = csv_records(&api.get("/api/v1/alerts?format=csv", &sre_a).await.1);
    assert_eq!(csv.len(), 3, "{csv:?}");
    assert_eq!(csv[0][..4], ["rule_id", "rule_name", "org_id", "state"]);
    for (row, alert) in csv[1..].iter().zip(alerts) {
        assert_eq!(row[0], alert["rule_id"].to_string());
        assert_eq!(row[3], alert["state"].as_str().unwrap());
        assert_eq!(row[8], alert["value"].as_str().unwrap());
        assert_eq!(row[11], alert["link"].as_str().unwrap());
    }

    let timeline = api.json("/api/v1/alerts/transitions", &sre_a).await;
    let transitions = timeline["transitions"].as_array().unwrap();
    let states: Vec<&str> = transitions
        .iter()
        .map(|t| t["to_state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["firing", "pending"],
        "each once, newest first: {timeline}"
    );
    assert_eq!(transitions[0]["value"], "12.5000");
    assert_eq!(transitions[0]["event_id"], "ev-a1-firing");
    assert_eq!(timeline["truncated"], false);
    let csv = csv_records(
        &api.get("/api/v1/alerts/transitions?format=csv", &sre_a)
            .await
            .1,
    );
    assert_eq!(csv.len(), 3);
    assert_eq!(csv[1][5], "firing");
    assert_eq!(csv[1][10], "ev-a1-firing");
    assert_eq!(csv[2][5], "pending");
    let all = api.json("/api/v1/alerts/transitions", &admin).await;
    assert_eq!(all["transitions"].as_array().unwrap().len(), 3);
    let (status, body) = api
        .get(&format!("/api/v1/alerts/transitions?rule_id={b1}"), &sre_a)
        .await;
    assert_eq!(status, 404, "another org's rule: {body}");
    let one = api
        .json(&format!("/api/v1/alerts/transitions?rule_id={a1}"), &sre_a)
        .await;
    assert_eq!(one["transitions"].as_array().unwrap().len(), 2);
    let (status, body) = api
        .get("/api/v1/alerts/transitions?from=yesterday", &sre_a)
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("\"parameter\":\"from\""), "{body}");

    let letters = api.json("/api/v1/alerts/dead-letters", &sre_a).await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["org_id"], "org-a");
    assert_eq!(letters[0]["attempts"], 10);
    let csv = csv_records(
        &api.get("/api/v1/alerts/dead-letters?format=csv", &sre_a)
            .await
            .1,
    );
    assert_eq!(csv.len(), 2);
    assert_eq!(csv[1][4], letters[0]["delivery_id"].as_str().unwrap());

    // ---- pages in Chromium
    let page = dom(&env, &sre_a, "/sre/alerts", "sre_alerts.png").await;
    assert!(
        page.contains(&format!("data-rule-id=\"{a1}\" data-state=\"firing\"")),
        "the firing alert: {page}"
    );
    assert!(page.contains(&format!("data-rule-id=\"{a2}\" data-state=\"pending\"")));
    assert!(!page.contains("b failing"), "org-b stays hidden");
    assert!(
        page.contains(">12.5%</span>"),
        "values are readable: {page}"
    );
    assert_eq!(page.matches("class=\"transition-row\"").count(), 2);
    assert_eq!(page.matches("class=\"dead-letter-row\"").count(), 1);
    assert!(page.contains("id=\"alert-timeline\""));
    assert!(page.contains("href=\"/sre/errors?range=custom&amp;from="));
    for csv_link in [
        "alerts-csv-link",
        "transitions-csv-link",
        "silences-csv-link",
        "dead-letters-csv-link",
    ] {
        assert!(page.contains(csv_link), "{csv_link}");
    }

    let rule_page = dom(
        &env,
        &sre_a,
        &format!("/sre/alerts/rules/{a1}"),
        "sre_alert_rule.png",
    )
    .await;
    assert!(rule_page.contains("id=\"backtest-chart\""), "{rule_page}");
    assert!(
        rule_page.contains("class=\"threshold\" data-value=\"5\""),
        "the threshold line"
    );
    let points: u64 = {
        let start = rule_page.find("data-points=\"").unwrap() + 13;
        rule_page[start..]
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(points >= 60, "an hour of minutes with calls, got {points}");
    assert!(
        rule_page.contains("class=\"span firing\""),
        "the 50 % episode fired in the backtest"
    );
    assert_eq!(rule_page.matches("class=\"transition-row\"").count(), 2);
    let other = api
        .http
        .get(format!("{}/sre/alerts/rules/{b1}", env.direct_api_url()))
        .bearer_auth(&sre_a)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "another org's rule");
    assert!(!other.text().await.unwrap().contains("b failing"));

    // ---- forms
    let fields = |csrf: &str, action: &str| -> Vec<(&'static str, String)> {
        [
            ("csrf", csrf),
            ("org_id", "org-a"),
            ("name", "from the page"),
            ("severity", "warning"),
            ("for_secs", "60"),
            (
                "signal",
                r#"{"kind": "error_rate", "above_percent": "10", "window_secs": 300}"#,
            ),
            ("labels", "team=search"),
            ("summary", "made on the page"),
            ("receivers", ""),
            ("enabled", "on"),
            ("action", action),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    };
    let before = api.rule_count(&admin).await;
    let save = fields("", "save");
    let r = api.form("/sre/alerts/rules/new", None, &save).await;
    assert_eq!(r.status(), 401, "no session: the login form");
    let r = api.form("/sre/alerts/rules/new", Some(&sre_a), &save).await;
    assert_eq!(r.status(), 403, "no token");
    assert_eq!(
        api.rule_count(&admin).await,
        before,
        "nothing saved without a session"
    );

    let token = api.csrf("/sre/alerts/rules/new", &sre_a).await;
    let r = api
        .form(
            "/sre/alerts/rules/new",
            Some(&sre_a),
            &fields(&token, "backtest"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"backtest-chart\"") && html.contains("data-value=\"10\""));
    // The draft's backtest comes with its CSV (a `data:` link: nothing is
    // stored): one row per minute of the day, and its transitions are the
    // page's table, row for row.
    let at = html
        .find("id=\"backtest-csv-link\" download=\"alert-backtest.csv\" href=\"")
        .unwrap()
        + "id=\"backtest-csv-link\" download=\"alert-backtest.csv\" href=\"".len();
    let link = html[at..at + html[at..].find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let encoded = link.strip_prefix("data:text/csv;charset=utf-8,").unwrap();
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < encoded.len() {
        if encoded.as_bytes()[i] == b'%' {
            bytes.push(u8::from_str_radix(&encoded[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            bytes.push(encoded.as_bytes()[i]);
            i += 1;
        }
    }
    let csv = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "at,value,observation,transition,detail");
    assert!(
        (1_440..=1_441).contains(&(lines.len() - 1)),
        "{} steps",
        lines.len() - 1
    );
    let csv_transitions: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (!cells[3].is_empty()).then(|| (cells[0].to_string(), cells[3].to_string()))
        })
        .collect();
    let page_transitions: Vec<(String, String)> = html
        .split("<tr class=\"backtest-row\">")
        .skip(1)
        .map(|row| {
            let at = row
                .split("datetime=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let state = row
                .split("class=\"state ")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (at.to_string(), state.to_string())
        })
        .collect();
    assert!(
        page_transitions.iter().any(|(_, s)| s == "firing"),
        "{page_transitions:?}"
    );
    assert_eq!(csv_transitions, page_transitions);
    assert_eq!(
        api.rule_count(&admin).await,
        before,
        "a backtest saves nothing"
    );

    let finance_token = api.csrf("/sre/alerts/rules/new", &finance_a).await;
    let r = api
        .form(
            "/sre/alerts/rules/new",
            Some(&finance_a),
            &fields(&finance_token, "save"),
        )
        .await;
    assert_eq!(r.status(), 403, "finance reads only");
    let r = api
        .form(
            "/sre/alerts/rules/new",
            Some(&sre_a),
            &fields(&finance_token, "save"),
        )
        .await;
    assert_eq!(r.status(), 403, "another session's token");

    let r = api
        .form(
            "/sre/alerts/rules/new",
            Some(&sre_a),
            &fields(&token, "save"),
        )
        .await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    let created = api
        .json(&format!("/api/v1/alerts/rules/{id}"), &sre_a)
        .await;
    assert_eq!(created["name"], "from the page");
    assert_eq!(created["annotations"]["summary"], "made on the page");
    assert_eq!(created["signal"]["above_percent"], "10");
    assert_eq!(created["enabled"], true);

    // Edit from the page: the form comes filled in; saving replaces the
    // version it was read from, a stale version is a 409, then delete.
    let edit = format!("/sre/alerts/rules/{id}/edit");
    let (status, html) = api.get(&edit, &sre_a).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("value=\"from the page\""), "{html}");
    assert!(html.contains("name=\"version\" value=\"1\""), "{html}");
    let mut edited = fields(&token, "save");
    for (k, v) in edited.iter_mut() {
        match *k {
            "name" => *v = "edited on the page".into(),
            "signal" => {
                *v = r#"{"kind": "error_rate", "above_percent": "12.5", "window_secs": 600}"#.into()
            }
            _ => {}
        }
    }
    edited.retain(|(k, _)| *k != "enabled"); // unchecked: disabled
    edited.push(("description", "changed".into()));
    edited.push(("version", "1".into()));
    let r = api.form(&edit, Some(&sre_a), &edited).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let changed = api
        .json(&format!("/api/v1/alerts/rules/{id}"), &sre_a)
        .await;
    assert_eq!(changed["name"], "edited on the page");
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["annotations"]["description"], "changed");
    assert_eq!(changed["signal"]["above_percent"], "12.5");
    let r = api.form(&edit, Some(&sre_a), &edited).await;
    assert_eq!(r.status(), 409, "version 1 is stale now");
    let r = api
        .form(
            &edit,
            Some(&finance_a),
            &[("csrf", finance_token.clone()), ("action", "save".into())],
        )
        .await;
    assert_eq!(r.status(), 403, "finance may not edit");
    let delete = format!("/sre/alerts/rules/{id}/delete");
    let r = api
        .form(
            &delete,
            Some(&sre_a),
            &[("csrf", token.clone()), ("version", "1".into())],
        )
        .await;
    assert_eq!(r.status(), 409, "delete names the version it read");
    let r = api
        .form(
            &delete,
            Some(&sre_a),
            &[("csrf", token.clone()), ("version", "2".into())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (status, _) = api.get(&format!("/api/v1/alerts/rules/{id}"), &sre_a).await;
    assert_eq!(status, 404);

    // Silences: create, then expire, from the page; the API names who.
    let r = api
        .form(
            "/sre/alerts/silences",
            Some(&sre_a),
            &[
                ("csrf", token.clone()),
                ("org_id", "org-a".into()),
                ("matchers", "team=search\nseverity=~warning|critical".into()),
                ("starts_at", Utc::now().format("%Y-%m-%dT%H:%M").to_string()),
                (
                    "ends_at",
                    (Utc::now() + chrono::Duration::hours(2))
                        .format("%Y-%m-%dT%H:%M")
                        .to_string(),
                ),
                ("comment", "maintenance".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let silences = api.json("/api/v1/alerts/silences", &sre_a).await;
    let silence = &silences.as_array().unwrap()[0];
    assert_eq!(
        silence["created_by"], "user:sre@a.example",
        "the signed-in person"
    );
    assert_eq!(silence["matchers"].as_array().unwrap().len(), 2);
    let sid = silence["id"].as_i64().unwrap();
    let r = api
        .form(
            &format!("/sre/alerts/silences/{sid}/expire"),
            Some(&sre_a),
            &[("csrf", token.clone())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let expired = api
        .json(&format!("/api/v1/alerts/silences/{sid}"), &sre_a)
        .await;
    assert_eq!(expired["state"], "expired");
    assert_eq!(expired["expired_by"], silence["created_by"]);
    let page = dom(&env, &sre_a, "/sre/alerts", "sre_alerts_silenced.png").await;
    assert!(page.contains(&format!("data-id=\"{sid}\" data-state=\"expired\"")));

    // The old per-area key sign-in now leads to the one sign-in page.
    let r = api
        .http
        .get(format!("{}/compliance/login", env.direct_api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
}
