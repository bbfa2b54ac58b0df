//! Pages name what people know by name (black-box trials saw raw UUIDs):
//! an API key is `search-svc (tg_abcd1234)` with its id on hover on the
//! cost page (top keys, the report by key) and the Errors page's Keys
//! column, while the CSV and JSON keep the ids; an alert rule's page names
//! its receivers. A reader limited to one org never sees another org's key
//! or receiver names, even for an id that appears in their org's calls.
//! One call is "1 call".

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tollgate_contract::{Event, Outcome};
use uuid::Uuid;

use crate::support::errors::{failed_with, SHAPES};
use crate::support::events::{call_event, usage};
use crate::support::TestEnv;

/// `(id, prefix)` of the key named `name`, from `tollgate keys list --json`.
fn key(env: &TestEnv, name: &str) -> (String, String) {
    let all: Value = serde_json::from_str(&env.run(&["keys", "list", "--json"])).unwrap();
    let k = all
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name}: {all}"));
    (
        k["id"].as_str().unwrap().to_string(),
        k["prefix"].as_str().unwrap().to_string(),
    )
}

fn in_acme(mut e: Event, key: &str) -> Event {
    e.org_id = "acme".into();
    e.api_key_id = key.into();
    e
}

async fn get(url: String, key: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The part of `html` from the element with `id` to the end of its table.
fn table<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

#[tokio::test]
async fn pages_name_keys_and_receivers_within_the_readers_orgs() {
    let mut env = TestEnv::new("names_not_ids").await;
    env.run(&[
        "keys",
        "create",
        "--name",
        "search-svc",
        "--org",
        "acme",
        "--role",
        "proxy",
    ]);
    env.run(&[
        "keys",
        "create",
        "--name",
        "globex-secret-svc",
        "--org",
        "globex",
        "--role",
        "proxy",
    ]);
    let (search, search_prefix) = key(&env, "search-svc");
    let (globex, _) = key(&env, "globex-secret-svc");
    let search_name = format!("search-svc (tg_{search_prefix})");
    let unknown = Uuid::now_v7().to_string();
    let finance_acme = env.create_key_with_role("finance", Some("acme"));
    let sre_acme = env.create_key_with_role("sre", Some("acme"));

    // March: two calls of search-svc, one under globex's key id (as a
    // client could send it) and one of a key nobody has, all in acme.
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap();
    let ok = |at, key: &str| {
        in_acme(
            call_event(
                "team-a",
                "openai",
                "gpt-4o",
                at,
                usage(100, 0, 0, 10, 0),
                Outcome::Success,
            ),
            key,
        )
    };
    // Failures in the last hour, for the Errors page.
    let recent = Utc::now() - chrono::Duration::minutes(10);
    let shape = &SHAPES[0];
    let fail = |key: &str| in_acme(failed_with("team-a", shape, "upstream broke", recent), key);
    let events = vec![
        ok(day(5), &search),
        ok(day(6), &search),
        ok(day(7), &globex),
        ok(day(8), &unknown),
        fail(&search),
        fail(&globex),
    ];
    env.process_events(&events).await;
    env.wait_for_cost_rollup().await;
    let failures = env
        .wait_for_count(
            "SELECT sum(failures) FROM {db}.error_patterns_minute",
            2,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(failures, 2, "the error-patterns fold never counted both");
    env.start_api().await;
    let admin = env.api_url();
    let direct = env.direct_api_url();
    let march = "from=2026-03-01&to=2026-04-01&org=acme";

    // ---- the cost page, as an admin of every org
    let (status, html) = get(format!("{admin}/finance/cost?{march}&group_by=key"), None).await;
    assert_eq!(status, 200, "{html}");
    let top = table(&html, "top-keys");
    assert!(
        top.contains(&format!("title=\"{search}\">{search_name}</a>")),
        "top keys by name, the id on hover: {top}"
    );
    assert!(
        top.contains(&format!("&#38;key={search}&#38;group_by=model")),
        "the drill-down filters on the id: {top}"
    );
    assert!(top.contains(&format!(">{unknown}</a>")), "{top}");
    let report = table(&html, "cost-table");
    assert!(
        report.contains(&format!("<td title=\"{search}\">{search_name}</td>")),
        "the report by key: {report}"
    );
    assert!(report.contains(&format!("<td>{unknown}</td>")), "{report}");
    // An admin of every org may read globex's key's name.
    assert!(report.contains("globex-secret-svc (tg_"), "{report}");

    // ---- the same page for finance of acme only
    let (status, html) = get(
        format!("{direct}/finance/cost?{march}&group_by=key"),
        Some(&finance_acme),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        table(&html, "cost-table").contains(&format!("<td title=\"{search}\">{search_name}</td>")),
        "{html}"
    );
    assert!(
        !html.contains("globex-secret-svc"),
        "another org's key name: {html}"
    );
    assert!(
        table(&html, "cost-table").contains(&format!("<td>{globex}</td>")),
        "{html}"
    );
    assert!(
        table(&html, "top-keys").contains(&format!(">{globex}</a>")),
        "{html}"
    );

    // ---- CSV and JSON keep the ids, exactly
    let (_, csv) = get(
        format!("{admin}/finance/cost.csv?{march}&group_by=key"),
        None,
    )
    .await;
    assert!(csv.starts_with("key,"), "{csv}");
    for id in [&search, &globex, &unknown] {
        assert!(csv.contains(&format!("\n{id},")), "{id} in {csv}");
    }
    assert!(!csv.contains("search-svc"), "{csv}");
    let (_, top_csv) = get(format!("{admin}/finance/cost/top.csv?{march}"), None).await;
    assert!(
        top_csv.contains(&search) && !top_csv.contains("search-svc"),
        "{top_csv}"
    );
    let (_, json) = get(
        format!("{admin}/api/v1/reports/cost?{march}&group_by=key"),
        None,
    )
    .await;
    let json: Value = serde_json::from_str(&json).unwrap();
    let mut ids: Vec<&str> = json["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .map(|g| g["key"]["key"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![search.as_str(), globex.as_str(), unknown.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // ---- one call is "1 call"
    let (_, html) = get(
        format!("{admin}/finance/cost?{march}&key={unknown}&group_by=model"),
        None,
    )
    .await;
    let card = html
        .split("id=\"overview-total\"")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or_else(|| panic!("{html}"));
    assert!(card.contains("<p class=\"card-note\">1 call"), "{card}");
    assert!(!card.contains("1 calls"), "{card}");

    // ---- the Errors page's Keys column
    let (status, html) = get(format!("{direct}/sre/errors?range=1h"), Some(&sre_acme)).await;
    assert_eq!(status, 200, "{html}");
    let patterns = table(&html, "patterns");
    assert!(
        patterns.contains(&format!("title=\"{search}\">{search_name}</span>")),
        "{patterns}"
    );
    assert!(patterns.contains(&globex), "{patterns}");
    assert!(!html.contains("globex-secret-svc"), "{html}");
    let (_, html) = get(format!("{admin}/sre/errors?range=1h"), None).await;
    assert!(
        table(&html, "patterns").contains("globex-secret-svc (tg_"),
        "{html}"
    );
    let (_, csv) = get(
        format!("{admin}/api/v1/reports/errors?format=csv&org=acme"),
        None,
    )
    .await;
    assert!(
        csv.contains(&search) && !csv.contains("search-svc"),
        "{csv}"
    );

    // ---- an alert rule's receivers
    let client = reqwest::Client::new();
    let receiver = |org: &str, name: &str| {
        json!({"org_id": org, "name": name, "kind": "webhook",
               "url": "http://127.0.0.1:9/hook", "group_by": ["alertname"],
               "signing_secret": "s".repeat(40)})
    };
    let mut receiver_ids = Vec::new();
    for (org, name) in [("acme", "oncall-pager"), ("globex", "globex-pager")] {
        let r = client
            .post(format!("{admin}/api/v1/alerts/receivers"))
            .json(&receiver(org, name))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        receiver_ids.push(
            body["receiver"]["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{body}")),
        );
    }
    let (acme_receiver, globex_receiver) = (receiver_ids[0], receiver_ids[1]);
    let r = client
        .post(format!("{admin}/api/v1/alerts/rules"))
        .json(&json!({
            "org_id": "acme", "name": "openai errors",
            "signal": {"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300},
            "for_secs": 120, "severity": "critical", "receivers": [acme_receiver],
        }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let rule = body["rule"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"));
    // A rule naming another org's receiver (the API refuses one; a row
    // written before that check, or by hand, may still name it).
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    sqlx::query("UPDATE alert_rules SET spec = jsonb_set(spec, '{receivers}', $1) WHERE id = $2")
        .bind(json!([acme_receiver, globex_receiver]))
        .bind(rule)
        .execute(&pool)
        .await
        .unwrap();
    let (status, html) = get(format!("{direct}/sre/alerts/rules/{rule}"), Some(&sre_acme)).await;
    assert_eq!(status, 200, "{html}");
    let row = html
        .split("id=\"rule-receivers\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("{html}"));
    assert!(
        row.contains(&format!(
            "<a class=\"receiver\" href=\"/api/v1/alerts/receivers/{acme_receiver}\" title=\"receiver {acme_receiver}\">oncall-pager</a>"
        )),
        "{row}"
    );
    assert!(
        row.contains(&format!("{globex_receiver} (no such receiver in acme)")),
        "{row}"
    );
    assert!(!html.contains("globex-pager"), "{html}");
    assert!(
        row.contains("href=\"/api/v1/alerts/receivers?org=acme\""),
        "{row}"
    );
    // The link leads to the receiver.
    let (status, body) = get(
        format!("{direct}/api/v1/alerts/receivers/{acme_receiver}"),
        Some(&sre_acme),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("oncall-pager"), "{body}");
}
