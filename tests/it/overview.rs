//! The overview (`/overview` and `GET /api/v1/overview`) over known data:
//! priced and unpriced calls of two orgs in the last hour, the same hour
//! yesterday, earlier this month and last month, written straight into
//! `calls` (its views fill the cost, latency and error-pattern rollups);
//! budgets in PostgreSQL, some at 80 % or more; alert rules with firing
//! and pending states written as the evaluator writes them. The JSON's and
//! the page's spend, error rates, p95s and lists must equal what this test
//! computes from the rows it wrote, for every org and for one (that org's
//! share exactly). [`Seeded`] is shared with the accessibility test, which
//! needs every page to have something in it.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tollgate_contract::alert_lifecycle::Phase;

use crate::latency_fixture::type7;
use crate::support::{d, TestEnv};

/// One call as this test states it.
#[derive(Debug, Clone)]
pub struct Row {
    pub org: &'static str,
    pub team: &'static str,
    pub at: DateTime<Utc>,
    pub duration_ms: u32,
    /// Failed (`ai.call.failed`, outcome `error`).
    pub failed: bool,
    /// The failure's pattern: `(signature, template)`.
    pub pattern: Option<(u64, &'static str)>,
    /// `None`: unpriced.
    pub cost: Option<&'static str>,
}

impl Row {
    fn json(&self, i: usize) -> Value {
        let (signature, template) = self.pattern.unwrap_or((0, ""));
        json!({
            "event_id": format!("ov-{i}"),
            "schema_version": 1,
            "kind": if self.failed { "ai.call.failed" } else { "ai.call.completed" },
            "occurred_at": self.at.timestamp(),
            "occurred_at_ms": self.at.timestamp_millis(),
            "org_id": self.org,
            "team_id": self.team,
            "user_id": format!("user-{}", self.team),
            "api_key_id": format!("key-{}", self.team),
            "call_id": format!("call-{i}"),
            "trace_id": format!("trace-{i}"),
            "provider": "openai",
            "model": "gpt-4o",
            "requested_model": "gpt-4o",
            "operation": "chat",
            "duration_ms": self.duration_ms,
            "outcome": if self.failed { "error" } else { "success" },
            "http_status": if self.failed { 500 } else { 200 },
            "error_type": if self.failed { "server_error" } else { "" },
            "error_signature": signature,
            "error_template": template,
            "ingested_at": self.at.timestamp(),
            "kafka_partition": 0,
            "kafka_offset": i,
            // A JSON number (18.16 reads no quoted decimals); these print
            // exactly as written.
            "cost": self.cost.unwrap_or("0").parse::<f64>().unwrap(),
            "priced": u8::from(self.cost.is_some()),
            "price_version": u8::from(self.cost.is_some()),
        })
    }
}

pub const PATTERN_A: (u64, &str) = (0xa1, "upstream said <*> after <*> ms");
pub const PATTERN_B: (u64, &str) = (0xb2, "rate limited for <*>");
pub const PATTERN_C: (u64, &str) = (0xc3, "context length <*> exceeded");

/// The rows: org-a (team search) 20 calls in the last hour at 100..2000 ms,
/// 3 failed (two patterns, B first seen earlier than A); 10 calls the same
/// hour yesterday at 1..10 s, one failed; org-b (team ads) 10 calls in the
/// last hour at 50..500 ms, one failed (pattern C) and one unpriced call;
/// one org-a call last month and one earlier this month.
pub fn rows(now: DateTime<Utc>) -> Vec<Row> {
    let ago = |m: i64| now - Duration::minutes(m);
    let mut rows = Vec::new();
    for i in 0..20u32 {
        let pattern = match i {
            0 => Some(PATTERN_A),
            1 | 2 => Some(PATTERN_B),
            _ => None,
        };
        rows.push(Row {
            org: "org-a",
            team: "search",
            // B's failures are older than A's: A is the newer pattern.
            at: ago(match i {
                0 => 5,
                1 => 45,
                2 => 40,
                _ => 10 + i64::from(i),
            }),
            duration_ms: 100 * (i + 1),
            failed: pattern.is_some(),
            pattern,
            cost: Some("0.5"),
        });
    }
    for i in 0..10u32 {
        rows.push(Row {
            org: "org-a",
            team: "search",
            at: ago(24 * 60 + 10 + i64::from(i)),
            duration_ms: 1_000 * (i + 1),
            failed: i == 4,
            pattern: None,
            cost: Some("0.25"),
        });
    }
    for i in 0..10u32 {
        rows.push(Row {
            org: "org-b",
            team: "ads",
            at: ago(20 + i64::from(i)),
            duration_ms: 50 * (i + 1),
            failed: i == 9,
            pattern: (i == 9).then_some(PATTERN_C),
            cost: Some("0.1"),
        });
    }
    rows.push(Row {
        org: "org-b",
        team: "ads",
        at: ago(15),
        duration_ms: 300,
        failed: false,
        pattern: None,
        cost: None,
    });
    rows.push(Row {
        org: "org-a",
        team: "search",
        at: now - Duration::days(40),
        duration_ms: 100,
        failed: false,
        pattern: None,
        cost: Some("100"),
    });
    // Earlier this month when there is an earlier day (else yesterday's
    // rows are last month's already).
    if now.day() > 2 {
        rows.push(Row {
            org: "org-a",
            team: "search",
            at: now - Duration::days(2),
            duration_ms: 100,
            failed: false,
            pattern: None,
            cost: Some("3.125"),
        });
    }
    rows
}

/// `(kind, subject, period, limit)`: org-a's daily budget at 10 / 12, its
/// monthly one far from it, the team search at 10 / 11 daily, org-b's
/// daily at 1.0 / 1.25 (80 % exactly) and a key of org-b far from its
/// limit.
/// `(kind, subject, period, limit, org)`.
pub const BUDGETS: [(&str, &str, &str, &str, &str); 5] = [
    ("org", "org-a", "daily", "12", "org-a"),
    ("org", "org-a", "monthly", "1000", "org-a"),
    ("team", "search", "daily", "11", "org-a"),
    ("org", "org-b", "daily", "1.25", "org-b"),
    ("key", "key-ads", "monthly", "500", "org-b"),
];

/// An environment with [`rows`], [`BUDGETS`], alert rules (org-a: one
/// firing, one pending; org-b: one firing) and `tollgate api` running.
pub struct Seeded {
    pub env: TestEnv,
    pub now: DateTime<Utc>,
    pub rows: Vec<Row>,
    pub admin_key: String,
    /// `(rule id, org, name)` of the firing rules.
    pub firing: Vec<(i64, &'static str, &'static str)>,
}

impl Seeded {
    /// Whether every seeded call of the last hour falls on `served`'s UTC
    /// day. The seed puts them 5 to 45 minutes before its instant, so in
    /// the first hour after midnight some are yesterday's: today's spend,
    /// its unpriced calls and the daily budgets near their limit are then
    /// smaller than the seed means them to be. Expectations come from
    /// [`expected`] either way; the fixed figures of the seed are checked
    /// only when this holds.
    pub fn last_hour_is_today(&self, served: DateTime<Utc>) -> bool {
        self.rows
            .iter()
            .filter(|r| r.at > self.now - Duration::hours(1))
            .all(|r| r.at.date_naive() == served.date_naive())
    }
}

pub async fn seeded(label: &str) -> Seeded {
    let mut env = TestEnv::new(label).await;
    let now = Utc::now();
    let rows = rows(now);
    let body: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| r.json(i).to_string())
        .collect();
    env.ch(&format!(
        "INSERT INTO {{db}}.calls FORMAT JSONEachRow\n{}",
        body.join("\n")
    ))
    .await;
    env.wait_for_cost_rollup().await;
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    for (kind, subject, period, limit, org) in BUDGETS {
        sqlx::query(
            "INSERT INTO budgets (subject_kind, subject_id, period, limit_usd, enforcement, org_id) \
             VALUES ($1, $2, $3, $4::numeric, 'soft', $5)",
        )
        .bind(kind)
        .bind(subject)
        .bind(period)
        .bind(limit)
        .bind(org)
        .execute(&pool)
        .await
        .unwrap();
    }
    env.start_api().await;
    // `start_api` waits on the signed-in forwarder, which answers (502)
    // before the server does: wait for the server itself.
    crate::support::wait_http(
        &format!("{}/healthz", env.direct_api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
    let admin_key = env.create_key_with_role("admin", None);
    let http = reqwest::Client::new();
    let rule = |org: &'static str, name: &'static str| {
        let http = http.clone();
        let url = format!("{}/api/v1/alerts/rules", env.direct_api_url());
        let key = admin_key.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({
                    "org_id": org,
                    "name": name,
                    "signal": {"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300},
                    "for_secs": 60,
                    "labels": {},
                    "severity": "critical",
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let body: Value = r.json().await.unwrap();
            body["rule"]["id"].as_i64().unwrap()
        }
    };
    let a_firing = rule("org-a", "org-a failing").await;
    let a_pending = rule("org-a", "org-a slow").await;
    let b_firing = rule("org-b", "org-b failing").await;
    let minutes = |m: i64| now - Duration::minutes(m);
    for (rule_id, phase, value) in [
        (
            a_firing,
            Phase::Firing {
                since: minutes(12),
                fired_at: minutes(10),
            },
            "15.0000",
        ),
        (a_pending, Phase::Pending { since: minutes(2) }, "6.0000"),
        (
            b_firing,
            Phase::Firing {
                since: minutes(6),
                fired_at: minutes(5),
            },
            "9.0909",
        ),
    ] {
        crate::support::write_alert_state(&pool, rule_id, phase, minutes(1), value).await;
    }
    Seeded {
        env,
        now,
        rows,
        admin_key,
        firing: vec![
            (a_firing, "org-a", "org-a failing"),
            (b_firing, "org-b", "org-b failing"),
        ],
    }
}

/// What the overview must say for `org` (every org with `None`),
/// computed from the rows.
struct Expected {
    today: Decimal,
    month: Decimal,
    unpriced_today: i64,
    days: BTreeMap<NaiveDate, Decimal>,
    /// `(calls, errors, p95)` of the last hour and of yesterday's.
    now: (u64, u64, Option<f64>),
    yesterday: (u64, u64, Option<f64>),
}

fn expected(rows: &[Row], now: DateTime<Utc>, org: Option<&str>) -> Expected {
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| org.is_none_or(|o| r.org == o))
        .collect();
    let today = now.date_naive();
    let first = today.with_day(1).unwrap();
    let cost = |r: &&Row| r.cost.map(d).unwrap_or_default();
    let mut days = BTreeMap::new();
    let mut day = first;
    while day <= today {
        days.insert(day, Decimal::ZERO);
        day = day.succ_opt().unwrap();
    }
    for r in &mine {
        if let Some(total) = days.get_mut(&r.at.date_naive()) {
            *total += cost(r);
        }
    }
    let [hour, yesterday] = tollgate_queries::home::hours(now);
    let health = |(from, to): (DateTime<Utc>, DateTime<Utc>)| {
        let calls: Vec<&&Row> = mine.iter().filter(|r| r.at >= from && r.at < to).collect();
        let durations: Vec<f64> = calls.iter().map(|r| f64::from(r.duration_ms)).collect();
        (
            calls.len() as u64,
            calls.iter().filter(|r| r.failed).count() as u64,
            (!durations.is_empty()).then(|| type7(&durations, 0.95)),
        )
    };
    Expected {
        today: days[&today],
        month: days.values().copied().sum(),
        unpriced_today: mine
            .iter()
            .filter(|r| r.cost.is_none() && r.at.date_naive() == today)
            .count() as i64,
        days,
        now: health(hour),
        yesterday: health(yesterday),
    }
}

/// The instant the server computed an overview at (`now` of its JSON).
fn served_now(home: &Value) -> DateTime<Utc> {
    home["now"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no now in {home}"))
}

fn decimal(v: &Value) -> Decimal {
    v.as_str()
        .map(d)
        .unwrap_or_else(|| v.to_string().parse().unwrap())
}

fn check_health(label: &str, got: &Value, (calls, errors, p95): (u64, u64, Option<f64>)) {
    assert_eq!(got["calls"], calls, "{label} calls: {got}");
    assert_eq!(got["errors"], errors, "{label} errors: {got}");
    if calls == 0 {
        assert_eq!(got["error_rate"], Value::Null, "{label}");
        assert_eq!(got["p95_ms"], Value::Null, "{label}");
    } else {
        assert_eq!(
            got["error_rate"].as_f64().unwrap(),
            errors as f64 / calls as f64,
            "{label} error rate"
        );
        assert_eq!(got["p95_ms"].as_f64(), p95, "{label} p95");
        assert_eq!(got["p95_estimate"], false, "{label}");
    }
}

/// The JSON's figures against the rows'.
fn check_json(home: &Value, want: &Expected) {
    let spend = &home["spend"];
    assert_eq!(decimal(&spend["today"]["spend_usd"]), want.today, "{spend}");
    assert_eq!(decimal(&spend["month"]["spend_usd"]), want.month, "{spend}");
    assert_eq!(spend["today"]["unpriced_calls"], want.unpriced_today);
    let days: BTreeMap<NaiveDate, Decimal> = spend["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["day"].as_str().unwrap().parse().unwrap(),
                decimal(&d["spend_usd"]),
            )
        })
        .collect();
    assert_eq!(days, want.days);
    check_health("last hour", &home["health"]["now"], want.now);
    check_health("yesterday", &home["health"]["yesterday"], want.yesterday);
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| match &v[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// `path` as the admin reads it; must answer 200.
async fn get_page(seeded: &Seeded, path: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", seeded.env.direct_api_url()))
        .bearer_auth(&seeded.admin_key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn get_json(seeded: &Seeded, path: &str) -> Value {
    serde_json::from_str(&get_page(seeded, path).await).unwrap()
}

/// The text of the element with `id`'s first `class` descendant's title
/// (the exact value behind a formatted one).
fn title_in(html: &str, id: &str, class: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &html[at..];
    let at = rest
        .find(&format!("class=\"{class}\""))
        .unwrap_or_else(|| panic!("no .{class} in #{id}"));
    let rest = &rest[at..];
    let start = rest.find("title=\"").unwrap() + 7;
    rest[start..start + rest[start..].find('"').unwrap()].to_string()
}

fn row_of<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    &html[at..at + html[at..].find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_totals_rates_and_lists_equal_the_seeded_values() {
    let seeded = seeded("overview").await;

    // ---- every org
    let home = get_json(&seeded, "/api/v1/overview").await;
    // Expected from the server's instant, not the seed's: a run that
    // crosses midnight UTC between the two still compares like with like.
    let now = served_now(&home);
    let all = expected(&seeded.rows, now, None);
    check_json(&home, &all);
    assert_eq!(home["org"], Value::Null);
    assert_eq!(home["spend"]["today"]["budget_usd"], Value::Null);
    // Firing alerts of both orgs, oldest episode first; the pending one
    // is counted.
    assert_eq!(
        ids(&home["firing_alerts"], "rule_id"),
        [
            seeded.firing[0].0.to_string(),
            seeded.firing[1].0.to_string()
        ]
    );
    assert_eq!(home["firing_alerts"][0]["value"], "15.0000");
    assert_eq!(home["pending_alerts"], 1);
    // Budgets at 80 % or more, most used first (then by subject): team
    // search 10 / 11, org-a daily 10 / 12, org-b daily 1.0 / 1.25; org-a's
    // monthly and key-ads's are far from theirs.
    let a = expected(&seeded.rows, now, Some("org-a"));
    let b = expected(&seeded.rows, now, Some("org-b"));
    let near = |orgs: &[&str]| -> Vec<(String, String)> {
        let mut near: Vec<(Decimal, String)> = BUDGETS
            .iter()
            .filter_map(|(kind, subject, period, limit, org)| {
                let want = if *org == "org-b" { &b } else { &a };
                let spend = if *period == "daily" {
                    want.today
                } else {
                    want.month
                };
                let mut p = (spend * Decimal::ONE_HUNDRED / d(limit)).round_dp(2);
                p.rescale(2);
                (orgs.contains(org) && p >= Decimal::from(80)).then(|| {
                    (
                        p,
                        tollgate_contract::decisions::budget_subject(kind, Some(org), subject),
                    )
                })
            })
            .collect();
        near.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        near.into_iter().map(|(p, s)| (s, p.to_string())).collect()
    };
    let got_near = |home: &Value| -> Vec<(String, String)> {
        ids(&home["budgets_near_limit"], "subject")
            .into_iter()
            .zip(ids(&home["budgets_near_limit"], "percent"))
            .collect()
    };
    let want_all = near(&["org-a", "org-b"]);
    assert_eq!(got_near(&home), want_all);
    // The seed puts these three over 80 % when its last hour is today's.
    let last_hour_today = seeded.last_hour_is_today(now);
    if last_hour_today {
        assert_eq!(
            want_all.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            [
                "budget/in/org-a/team/search",
                "budget/org/org-a",
                "budget/org/org-b"
            ],
            "the seeded budgets"
        );
    }
    // Newest first: A (first seen 5 minutes ago), C (29), B (45).
    let hex = |(id, _): (u64, &str)| format!("{id:016x}");
    assert_eq!(
        ids(&home["newest_patterns"], "signature"),
        [hex(PATTERN_A), hex(PATTERN_C), hex(PATTERN_B)]
    );
    assert_eq!(ids(&home["newest_patterns"], "failures"), ["1", "1", "2"]);

    // ---- org-a: its share exactly, and its own budgets.
    let home_a = get_json(&seeded, "/api/v1/overview?org=org-a").await;
    check_json(&home_a, &a);
    assert_eq!(home_a["org"], "org-a");
    assert_eq!(decimal(&home_a["spend"]["today"]["budget_usd"]), d("12"));
    assert_eq!(decimal(&home_a["spend"]["month"]["budget_usd"]), d("1000"));
    let want_percent = |spend: Decimal, limit: &str| {
        let mut p = (spend * Decimal::ONE_HUNDRED / d(limit)).round_dp(2);
        p.rescale(2);
        p.to_string()
    };
    assert_eq!(
        home_a["spend"]["today"]["percent"],
        want_percent(a.today, "12")
    );
    assert_eq!(
        ids(&home_a["firing_alerts"], "rule_id"),
        [seeded.firing[0].0.to_string()]
    );
    assert_eq!(got_near(&home_a), near(&["org-a"]));
    assert_eq!(
        ids(&home_a["newest_patterns"], "signature"),
        [hex(PATTERN_A), hex(PATTERN_B)]
    );
    // org-b: the unpriced call and org-b's budget only.
    let home_b = get_json(&seeded, "/api/v1/overview?org=org-b").await;
    check_json(&home_b, &b);
    assert_eq!(home_b["spend"]["today"]["unpriced_calls"], b.unpriced_today);
    if last_hour_today {
        assert_eq!(b.unpriced_today, 1, "the seeded unpriced call is today's");
    }
    assert_eq!(got_near(&home_b), near(&["org-b"]));
    // The shares add up to the whole.
    assert_eq!(a.month + b.month, all.month);
    // Someone who sees only org-a gets org-a's overview without asking,
    // and no other org's.
    let finance_a = seeded.env.create_key_with_role("finance", Some("org-a"));
    let http = reqwest::Client::new();
    let scoped = |path: &str| {
        http.get(format!("{}{path}", seeded.env.direct_api_url()))
            .bearer_auth(&finance_a)
            .send()
    };
    let r = scoped("/api/v1/overview").await.unwrap();
    assert_eq!(r.status(), 200);
    let pinned: Value = r.json().await.unwrap();
    assert_eq!(pinned["org"], "org-a");
    // Finance reads cost, budgets and alerts, not latency and errors.
    assert_eq!(pinned["spend"], home_a["spend"]);
    // The budgets by subject and percent (their forecasts move with the
    // clock between the two requests).
    assert_eq!(got_near(&pinned), got_near(&home_a));
    assert_eq!(pinned["firing_alerts"], home_a["firing_alerts"]);
    assert_eq!(pinned["health"], Value::Null);
    assert_eq!(pinned["newest_patterns"], Value::Null);
    // SRE the other way round (and alerts).
    let sre_a = seeded.env.create_key_with_role("sre", Some("org-a"));
    let sre: Value = http
        .get(format!("{}/api/v1/overview", seeded.env.direct_api_url()))
        .bearer_auth(&sre_a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Its figures, not its window: a minute may turn between the two
    // requests and move `from` and `to`.
    check_health("sre, last hour", &sre["health"]["now"], a.now);
    check_health("sre, yesterday", &sre["health"]["yesterday"], a.yesterday);
    assert_eq!(sre["newest_patterns"], home_a["newest_patterns"]);
    assert_eq!(sre["firing_alerts"], home_a["firing_alerts"]);
    assert_eq!(sre["spend"], Value::Null);
    assert_eq!(sre["budgets_near_limit"], Value::Null);
    assert_eq!(
        scoped("/api/v1/overview?org=org-b").await.unwrap().status(),
        404
    );
    assert_eq!(
        reqwest::get(format!("{}/api/v1/overview", seeded.env.direct_api_url()))
            .await
            .unwrap()
            .status(),
        401,
        "no identity"
    );

    // ---- the page shows the same figures.
    let page = get_page(&seeded, "/overview?org=org-a").await;
    assert_eq!(
        title_in(&page, "spend-today", "spend"),
        decimal(&home_a["spend"]["today"]["spend_usd"]).to_string()
    );
    assert_eq!(
        title_in(&page, "spend-month", "spend"),
        decimal(&home_a["spend"]["month"]["spend_usd"]).to_string()
    );
    let rate = |(calls, errors, _): (u64, u64, Option<f64>)| {
        format!("{:.2} %", errors as f64 / calls as f64 * 100.0)
    };
    let now_row = row_of(&page, "health-now");
    assert!(now_row.contains(&rate(a.now)), "{now_row}");
    assert!(
        now_row.contains(&format!("title=\"{} ms\"", a.now.2.unwrap())),
        "{now_row}"
    );
    let yesterday_row = row_of(&page, "health-yesterday");
    assert!(
        yesterday_row.contains(&rate(a.yesterday)),
        "{yesterday_row}"
    );
    assert!(
        yesterday_row.contains(&format!("title=\"{} ms\"", a.yesterday.2.unwrap())),
        "{yesterday_row}"
    );
    assert_eq!(
        page.matches("data-rule=\"").count(),
        1,
        "org-a's firing alert"
    );
    assert!(page.contains(&format!("data-rule=\"{}\"", seeded.firing[0].0)));
    assert_eq!(
        page.matches("data-budget=\"").count(),
        near(&["org-a"]).len()
    );
    assert_eq!(page.matches("<tr data-signature=\"").count(), 2);
    // The chart has a bar per day of the month, each day so far with its
    // spend.
    let today = now.date_naive();
    let days_in_month = (today.with_day(28).unwrap() + Duration::days(4))
        .with_day(1)
        .unwrap()
        .pred_opt()
        .unwrap()
        .day() as usize;
    assert!(page.contains(&format!("data-bars=\"{days_in_month}\"")));
    for (day, spend) in &a.days {
        let bar = format!("<title>{}: ", day.format("%m-%d"));
        let at = page.find(&bar).unwrap_or_else(|| panic!("no bar {bar}"));
        let rect = &page[page[..at].rfind("<rect").unwrap()..at];
        let value: f64 = spend.to_string().parse().unwrap();
        assert!(rect.contains(&format!("data-value=\"{value}\"")), "{rect}");
    }
    // `/` leads to the overview.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", seeded.env.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/overview");
}

/// The CSV a page link points at, read with `key`: `(status, lines split
/// at commas)` (no seeded value holds a comma or a quote).
async fn csv_of(seeded: &Seeded, href: &str, key: Option<&str>) -> (u16, Vec<Vec<String>>) {
    let href = unescape(href);
    let mut request = reqwest::Client::new().get(format!("{}{href}", seeded.env.direct_api_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    }
    let body = r.text().await.unwrap();
    let lines = body
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (status, lines)
}

/// An attribute's text as the page wrote it, unescaped.
fn unescape(text: &str) -> String {
    text.replace("&#38;", "&").replace("&amp;", "&")
}

/// `href` of the link with `id` in `page`.
fn href_of(page: &str, id: &str) -> String {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &page[at..];
    let start = rest.find("href=\"").unwrap() + 6;
    rest[start..start + rest[start..].find('"').unwrap()].to_string()
}

/// Money as the CSVs write it: every one of its 12 decimals.
fn usd12(value: Decimal) -> String {
    let mut exact = value;
    exact.rescale(12);
    exact.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overview_table_has_a_csv_with_the_exact_values() {
    let seeded = seeded("overview_csv").await;
    let now = served_now(&get_json(&seeded, "/api/v1/overview?org=org-a").await);
    let a = expected(&seeded.rows, now, Some("org-a"));
    let page = get_page(&seeded, "/overview?org=org-a").await;
    let link = |id: &str| href_of(&page, id);
    let admin = Some(seeded.admin_key.as_str());

    // Spend per day: every day of the month so far, exact.
    let days_href = link("spend-days-csv-link");
    assert_eq!(
        unescape(&days_href),
        "/api/v1/overview?format=csv&table=spend_days&org=org-a"
    );
    let (status, days) = csv_of(&seeded, &days_href, admin).await;
    assert_eq!(status, 200);
    assert_eq!(days[0], ["day", "spend_usd"]);
    let want: Vec<Vec<String>> = a
        .days
        .iter()
        .map(|(day, spend)| vec![day.to_string(), usd12(*spend)])
        .collect();
    assert_eq!(days[1..], want[..]);
    assert!(
        days[1..]
            .iter()
            .all(|r| r[1].split('.').nth(1).unwrap().len() == 12),
        "{days:?}"
    );

    // Budgets near their limit: org-a's daily ones, spend and limit exact.
    let (status, budgets) = csv_of(&seeded, &link("budgets-csv-link"), admin).await;
    assert_eq!(status, 200);
    // The columns read below: subject, period, spend, limit, percent.
    assert_eq!(
        [1, 2, 4, 5, 6].map(|i| budgets[0][i].as_str()),
        ["subject", "period", "spend_usd", "limit_usd", "percent"]
    );
    let percent = |limit: &str| {
        let mut p = (a.today * Decimal::ONE_HUNDRED / d(limit)).round_dp(2);
        p.rescale(2);
        p.to_string()
    };
    let got: Vec<(&str, &str, &str, &str, String)> = budgets[1..]
        .iter()
        .map(|r| {
            (
                r[1].as_str(),
                r[2].as_str(),
                r[4].as_str(),
                r[5].as_str(),
                r[6].clone(),
            )
        })
        .collect();
    let spend = usd12(a.today);
    // Both daily budgets of org-a are listed when today's spend is at 80 %
    // of them or more, the fuller first; the seed's last hour puts them
    // there unless it crossed midnight.
    let want: Vec<(&str, &str, &str, &str, String)> = [
        ("budget/in/org-a/team/search", "11.000000000000", "11"),
        ("budget/org/org-a", "12.000000000000", "12"),
    ]
    .into_iter()
    .filter(|(_, _, limit)| a.today * Decimal::ONE_HUNDRED >= d(limit) * Decimal::from(80))
    .map(|(subject, exact_limit, limit)| {
        (
            subject,
            "daily",
            spend.as_str(),
            exact_limit,
            percent(limit),
        )
    })
    .collect();
    assert_eq!(got, want);
    if seeded.last_hour_is_today(now) {
        assert_eq!(want.len(), 2, "the seed puts both daily budgets near");
    }

    // The newest error patterns, the firing alert, the two hours.
    let (status, patterns) = csv_of(&seeded, &link("patterns-csv-link"), admin).await;
    assert_eq!(status, 200);
    let hex = |(id, _): (u64, &str)| format!("{id:016x}");
    let got: Vec<(&str, &str, &str)> = patterns[1..]
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[5].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (hex(PATTERN_A).as_str(), PATTERN_A.1, "1"),
            (hex(PATTERN_B).as_str(), PATTERN_B.1, "2"),
        ]
    );
    let (status, alerts) = csv_of(&seeded, &link("alerts-csv-link"), admin).await;
    assert_eq!(status, 200);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let fired =
        (seeded.now - Duration::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        alerts[1][..6],
        [
            seeded.firing[0].0.to_string(),
            "org-a failing".to_string(),
            "org-a".to_string(),
            "critical".to_string(),
            fired,
            "15.0000".to_string()
        ]
    );
    let (status, health) = csv_of(&seeded, &link("health-csv-link"), admin).await;
    assert_eq!(status, 200);
    assert_eq!(health[1][0], "last_hour");
    assert_eq!(health[1][3..5], [a.now.0.to_string(), a.now.1.to_string()]);
    assert_eq!(health[1][6], a.now.2.unwrap().to_string());
    assert_eq!(health[2][0], "same_hour_yesterday");
    assert_eq!(
        health[2][3..5],
        [a.yesterday.0.to_string(), a.yesterday.1.to_string()]
    );

    // Access as the page's: finance of org-a reads the cost tables, not
    // latency's; another org is a 404; nobody gets a 401.
    let finance_a = seeded.env.create_key_with_role("finance", Some("org-a"));
    let (status, scoped) = csv_of(&seeded, &link("budgets-csv-link"), Some(&finance_a)).await;
    assert_eq!((status, &scoped), (200, &budgets));
    let (status, _) = csv_of(&seeded, &link("health-csv-link"), Some(&finance_a)).await;
    assert_eq!(status, 403);
    let other = "/api/v1/overview?format=csv&table=budgets_near_limit&org=org-b";
    assert_eq!(csv_of(&seeded, other, Some(&finance_a)).await.0, 404);
    assert_eq!(csv_of(&seeded, &days_href, None).await.0, 401);
    // A CSV needs a table, and a table only comes as CSV.
    let (status, body) = csv_of(&seeded, "/api/v1/overview?format=csv", admin).await;
    assert_eq!(status, 400);
    assert!(body[0].join(",").contains("table"), "{body:?}");
    let (status, _) = csv_of(&seeded, "/api/v1/overview?table=health", admin).await;
    assert_eq!(status, 400);
}
