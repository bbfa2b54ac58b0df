//! Every page passes axe-core with no serious or critical violation, with
//! data in it (the overview's seeded calls, budgets and alerts, a breaker
//! transition and an audit chain), in Debian's headless Chromium driven by
//! `tests/browser/drive.mjs`; and a form can be filled and sent with the
//! keyboard alone (Tab to a field, type, Enter). The pages before
//! signing in (the sign-in form, with and without its error, and an
//! invitation link's form) pass too.

use chrono::{Datelike, Utc};
use serde_json::json;
use tollgate_contract::audit::entry::{chain_entry, EntryFields, EntryRow, Position, GENESIS};

use crate::overview::{seeded, Seeded, PATTERN_A};
use crate::support::browser::{describe, run, Step};
use crate::support::{self, TestEnv};

/// A breaker that opened ten minutes ago and is half open since five.
pub async fn breaker_transitions(env: &TestEnv) {
    let now = Utc::now().timestamp();
    let row = |at: i64, from: &str, to: &str, id: &str| {
        json!({
            "at": at, "at_ms": at * 1_000, "provider": "openai", "model": "gpt-4o",
            "from_state": from, "to_state": to, "generation": 1, "calls": 20,
            "failures": 12, "slow": 0, "signature": PATTERN_A.0, "reason": "failure rate 60 %",
            "event_id": id,
        })
        .to_string()
    };
    env.ch(&format!(
        "INSERT INTO {{db}}.breaker_transitions FORMAT JSONEachRow\n{}\n{}",
        row(now - 600, "closed", "open", "br-1"),
        row(now - 300, "open", "half_open", "br-2")
    ))
    .await;
}

/// Three entries of org-a's chain `search`.
async fn audit_entries(env: &TestEnv) {
    let client = clickhouse::Client::default()
        .with_url(support::clickhouse_url())
        .with_database(&env.ch_database)
        .with_validation(false);
    let now = Utc::now().timestamp_millis() as u64;
    let mut prev = GENESIS;
    let mut insert = client.insert::<EntryRow>("audit_chain").await.unwrap();
    for seq in 1..=3u64 {
        let fields = EntryFields {
            occurred_at_ms: now - 60_000 * (4 - seq),
            event_id: uuid::Uuid::now_v7().to_string(),
            kind: "ai.call.completed".into(),
            org_id: "org-a".into(),
            team_id: "search".into(),
            user_id: "user-search".into(),
            api_key_id: "key-search".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            outcome: "success".into(),
            decision: String::new(),
            decision_reason: String::new(),
            event_json: json!({"call": {"model": "gpt-4o"}, "seq": seq}).to_string(),
        };
        let (row, hash) = chain_entry(
            fields,
            Position {
                chain_id: "search",
                seq,
                partition: 0,
                offset: seq as i64,
            },
            &prev,
            &rand::random(),
        );
        prev = hash;
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();
}

/// A person who may open everything: an admin of every org with a
/// password, created as `tollgate users create` does.
fn create_admin(env: &TestEnv) -> (String, String) {
    use std::io::Write;
    let (email, password) = (
        "ann@example.com".to_string(),
        "a long passphrase 1".to_string(),
    );
    let mut child = env
        .tollgate(&[
            "users",
            "create",
            "--email",
            &email,
            "--name",
            "Ann",
            "--admin",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "users create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (email, password)
}

/// Steps that sign a person in through the sign-in form, from the
/// keyboard (the email field has focus when the page opens).
fn sign_in(base: &str, (email, password): &(String, String)) -> Vec<Step> {
    vec![
        Step::Goto(format!("{base}/login?next=/overview")),
        Step::Type(email.clone()),
        Step::Press("Tab".into(), false),
        Step::Type(password.clone()),
        Step::Press("Enter".into(), true),
    ]
}

/// Every page of every area, with the ids of `seeded`'s data.
async fn pages(seeded: &Seeded) -> Vec<String> {
    let pool = sqlx::PgPool::connect(&seeded.env.pg_url).await.unwrap();
    let budget: i64 = sqlx::query_scalar("SELECT min(id) FROM budgets")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rule = seeded.firing[0].0;
    let month = Utc::now().format("%Y-%m");
    let signature = format!("{:016x}", PATTERN_A.0);
    vec![
        "/overview".into(),
        "/overview?org=org-a".into(),
        "/sre/latency".into(),
        "/sre/errors?range=24h".into(),
        format!("/sre/errors/{signature}?range=24h"),
        "/sre/breakers".into(),
        "/sre/alerts".into(),
        "/sre/alerts/rules".into(),
        format!("/sre/alerts/rules/{rule}"),
        "/sre/alerts/rules/new".into(),
        "/finance/cost".into(),
        format!("/finance/statement?team=search&month={month}"),
        "/finance/budgets".into(),
        format!("/finance/budgets/{budget}"),
        "/compliance/search".into(),
        "/compliance/verify?org=org-a".into(),
        "/compliance/entries/search/2".into(),
        "/admin/users".into(),
        "/admin/keys".into(),
        "/admin/budgets".into(),
        "/admin/budgets/new".into(),
        "/admin/prices".into(),
        "/admin/prices/new".into(),
        "/admin/prices/import".into(),
        "/logout".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_with_data_in_it() {
    let seeded = seeded("a11y").await;
    breaker_transitions(&seeded.env).await;
    audit_entries(&seeded.env).await;
    // The server itself, not the test's signed-in forwarder: a person
    // signs in.
    let base = seeded.env.direct_api_url();
    let person = create_admin(&seeded.env);
    let pages = pages(&seeded).await;
    let mut steps = sign_in(&base, &person);
    let signed_in = steps.len();
    for page in &pages {
        steps.push(Step::Goto(format!("{base}{page}")));
        steps.push(Step::Axe);
    }
    let outcome = run(&steps).await.expect_ok();
    assert_eq!(
        outcome.step(signed_in - 1)["url"],
        format!("{base}/overview"),
        "signed in, the overview"
    );
    // Every page answered 200 (a 401 or 500 page would pass axe, but
    // would not be the page).
    for (i, page) in pages.iter().enumerate() {
        let step = outcome.step(signed_in + 2 * i);
        assert_eq!(step["status"], 200, "{page}: {step}");
        assert_eq!(
            outcome.step(signed_in + 1 + 2 * i)["url"],
            format!("{base}{page}"),
            "{page} was not redirected"
        );
    }
    for (i, page) in pages.iter().enumerate() {
        let minor = &outcome.step(signed_in + 1 + 2 * i)["minor"];
        if minor.as_array().is_some_and(|m| !m.is_empty()) {
            println!("{page}: minor or moderate: {minor}");
        }
    }
    let violations = outcome.violations();
    assert!(
        violations.is_empty(),
        "serious or critical accessibility violations:\n{}",
        describe(&violations)
    );
    // A picture of the overview for people.
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&shot).unwrap();
    let mut steps = sign_in(&base, &person);
    steps.extend([
        Step::Goto(format!("{base}/overview?org=org-a")),
        Step::Screenshot(shot.join("overview.png")),
    ]);
    run(&steps).await.expect_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_is_made_with_the_keyboard_alone() {
    let seeded = seeded("a11y_keys").await;
    let base = seeded.env.direct_api_url();
    let person = create_admin(&seeded.env);
    let comment = format!("keyboard only {}", Utc::now().day());
    let mut steps = sign_in(&base, &person);
    steps.extend([
        Step::Goto(format!("{base}/sre/alerts")),
        Step::TabTo("#silence-form input[name=org_id]".into()),
        Step::Type("org-a".into()),
        // Tab from a text field lands on the next field.
        Step::Press("Tab".into(), false),
        Step::Type("team=search".into()),
        Step::TabTo("#silence-form input[name=comment]".into()),
        Step::Type(comment.clone()),
        // Enter in a text field sends the form.
        Step::Press("Enter".into(), true),
        Step::ExpectText(comment.clone()),
        Step::Html,
        Step::Cookies,
        // A filter with the mouse: the overview of one org.
        Step::Goto(format!("{base}/overview")),
        Step::Fill("#overview-org".into(), "org-b".into()),
        Step::Click("form[action='/overview'] button".into(), true),
        Step::ExpectText("org org-b".into()),
    ]);
    let outcome = run(&steps).await.expect_ok();
    let html = outcome.html();
    assert!(html.contains("team=search"), "the silence is listed");
    // The session cookie is out of reach of scripts.
    let cookies = outcome.steps.iter().find(|s| s["do"] == "cookies").unwrap();
    let cookies = cookies["cookies"].as_array().unwrap();
    assert!(!cookies.is_empty());
    for cookie in cookies {
        assert_eq!(cookie["httpOnly"], true, "{cookie}");
    }
    let filtered = outcome.steps.last().unwrap();
    assert_eq!(filtered["do"], "expect_text");
    let clicked = &outcome.steps[outcome.steps.len() - 2];
    assert_eq!(
        clicked["url"],
        format!("{base}/overview?org=org-b"),
        "{clicked}"
    );
    // The silence is stored with what was typed.
    let silences: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/alerts/silences"))
        .bearer_auth(&seeded.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = silences.as_array().unwrap();
    assert_eq!(list.len(), 1, "{silences}");
    assert_eq!(list[0]["org_id"], "org-a");
    assert_eq!(list[0]["comment"], comment);
}

/// The pages a person sees before signing in: the sign-in form, the same
/// form with the error of a wrong password, and an invitation link's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_and_invitation_pages_pass_axe() {
    let mut env = TestEnv::new("a11y_signin").await;
    env.start_api().await;
    let base = env.direct_api_url();
    let link = env.run(&[
        "users",
        "invite",
        "--email",
        "grace@globex.example",
        "--grant",
        "globex:compliance",
        "--base-url",
        &base,
    ]);
    let invitation = link.trim().to_string();
    assert!(
        invitation.starts_with(&format!("{base}/invitations/")),
        "{link}"
    );
    let steps = vec![
        Step::Goto(format!("{base}/login?next=%2Foverview")),
        Step::Axe,
        Step::Fill("#email".into(), "nobody@example.com".into()),
        Step::Fill("#password".into(), "not the password".into()),
        Step::Click("form[action='/login'] button[type=submit]".into(), true),
        Step::ExpectText("wrong email or password".into()),
        Step::Axe,
        Step::Goto(invitation.clone()),
        Step::ExpectText("grace@globex.example".into()),
        Step::Axe,
    ];
    let outcome = run(&steps).await.expect_ok();
    assert_eq!(outcome.step(0)["status"], 200);
    assert_eq!(outcome.step(4)["status"], 401, "the error page");
    assert_eq!(outcome.step(7)["status"], 200, "the invitation");
    let axed: Vec<&str> = outcome
        .all("axe")
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        axed,
        [
            format!("{base}/login?next=%2Foverview").as_str(),
            format!("{base}/login").as_str(),
            invitation.as_str(),
        ]
    );
    let violations = outcome.violations();
    assert!(
        violations.is_empty(),
        "serious or critical accessibility violations:\n{}",
        describe(&violations)
    );
}
