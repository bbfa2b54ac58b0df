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
        // The sign-in page's autofocus puts the person in the email field.
        Step::AwaitFocus("#email".into()),
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
    let signed_in = sign_in(&base, &person).len();
    // Every page answers 200 (a 401 or 500 page would pass axe, but would
    // not be the page).
    let expected: Vec<(String, u16)> = pages.iter().map(|p| (p.clone(), 200)).collect();
    let outcome = axe_pages(&base, &person, &expected).await;
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
    let shot = crate::support::repo_root().join("tests/artifacts");
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
    let silences: serde_json::Value =
        serde_json::from_str(&read_as(&base, &seeded.admin_key, "/api/v1/alerts/silences").await)
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

/// Sign `person` in, then open each of `pages` (path, the status it
/// answers) and run axe there. Asserts each page answered its status at
/// its own URL, and returns the outcome.
async fn axe_pages(
    base: &str,
    person: &(String, String),
    pages: &[(String, u16)],
) -> crate::support::browser::Outcome {
    let mut steps = sign_in(base, person);
    let signed_in = steps.len();
    for (page, _) in pages {
        steps.push(Step::Goto(format!("{base}{page}")));
        steps.push(Step::Axe);
    }
    let outcome = run(&steps).await.expect_ok();
    assert_eq!(
        outcome.step(signed_in - 1)["url"],
        format!("{base}/overview"),
        "{} signed in",
        person.0
    );
    for (i, (page, status)) in pages.iter().enumerate() {
        let step = outcome.step(signed_in + 2 * i);
        assert_eq!(step["status"], *status, "{page}: {step}");
        assert_eq!(
            outcome.step(signed_in + 1 + 2 * i)["url"],
            format!("{base}{page}"),
            "{page} was not redirected"
        );
    }
    outcome
}

/// The pages the first test does not reach: the edit and confirmation
/// pages of one object, the pages that answer a form (a key's secret
/// shown once, an invitation sent), the message pages of each area, the
/// gate's refusal, the org switcher of a person of two orgs, and the
/// overview as each non-admin role sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_confirmation_message_and_other_roles_pages_pass_axe() {
    let seeded = seeded("a11y_more").await;
    let env = &seeded.env;
    let base = env.direct_api_url();
    let admin = create_admin(env);
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let budget: i64 = sqlx::query_scalar("SELECT min(id) FROM budgets")
        .fetch_one(&pool)
        .await
        .unwrap();
    let key: String = sqlx::query_scalar(
        "SELECT id::text FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let rule = seeded.firing[0].0;
    let mut violations = Vec::new();

    // An admin: edit and confirmation pages, message pages.
    let pages: Vec<(String, u16)> = vec![
        (format!("/admin/budgets/{budget}/edit"), 200),
        (format!("/admin/budgets/{budget}/delete"), 200),
        (format!("/admin/keys/{key}/revoke"), 200),
        (format!("/sre/alerts/rules/{rule}/edit"), 200),
        // admin_message, sre_alerts_message, compliance_denied,
        // sign_in_sso_error (no `[auth.oidc]` here).
        ("/admin/budgets/999999/edit".into(), 404),
        ("/sre/alerts/rules/999999".into(), 404),
        ("/compliance/entries/search/999".into(), 404),
        ("/auth/oidc/start".into(), 404),
    ];
    let outcome = axe_pages(&base, &admin, &pages).await;
    violations.extend(outcome.violations());

    // The pages that answer a form: a key's secret, an invitation sent.
    let mut steps = sign_in(&base, &admin);
    steps.extend([
        Step::Goto(format!("{base}/admin/keys")),
        Step::Fill("#key-form input[name=name]".into(), "a11y key".into()),
        Step::SetValue("#key-form select[name=role]".into(), "ingest".into()),
        Step::Fill("#key-form input[name=org]".into(), "org-a".into()),
        Step::Click("#create-key".into(), true),
        Step::ExpectText("a11y key".into()),
        Step::Axe,
        Step::Goto(format!("{base}/admin/users")),
        Step::Fill(
            "#invite-form input[name=email]".into(),
            "eve@org-a.example".into(),
        ),
        Step::Fill("#invite-form input[name=org]".into(), "org-a".into()),
        Step::SetValue("#invite-form select[name=role]".into(), "viewer".into()),
        Step::Click("#invite".into(), true),
        Step::ExpectText("eve@org-a.example".into()),
        Step::Axe,
    ]);
    let outcome = run(&steps).await.expect_ok();
    let clicks = outcome.all("click");
    assert_eq!(clicks[0]["status"], 201, "the key's page: {}", clicks[0]);
    assert_eq!(
        clicks[1]["status"], 200,
        "the invitation's page: {}",
        clicks[1]
    );
    violations.extend(outcome.violations());

    // A person of two orgs (the org switcher), refused the admin pages by
    // the gate; and the overview of each other role.
    use crate::sign_in::{create_user, PASSWORD};
    // Email, grants, pages with the status each answers.
    type Person = (&'static str, &'static [&'static str], Vec<(String, u16)>);
    let people: [Person; 4] = [
        (
            "two@example.com",
            &["org-a:viewer", "org-b:finance"],
            vec![
                ("/overview?org=org-a".into(), 200),
                ("/finance/cost?org=org-b".into(), 200),
                ("/admin/users".into(), 403),
            ],
        ),
        (
            "fin@example.com",
            &["org-a:finance"],
            vec![("/overview".into(), 200), ("/finance/budgets".into(), 200)],
        ),
        (
            "sre@example.com",
            &["org-a:sre"],
            vec![("/overview".into(), 200), ("/sre/alerts".into(), 200)],
        ),
        (
            "view@example.com",
            &["org-a:viewer"],
            vec![("/overview".into(), 200), ("/sre/latency".into(), 200)],
        ),
    ];
    for (email, grants, pages) in &people {
        create_user(env, email, grants);
        let person = (email.to_string(), PASSWORD.to_string());
        let outcome = axe_pages(&base, &person, pages).await;
        if *email == "two@example.com" {
            // The switcher is there, naming both orgs.
            let mut steps = sign_in(&base, &person);
            steps.extend([
                Step::Goto(format!("{base}/overview?org=org-a")),
                Step::Read("#org-switch".into()),
            ]);
            let read = run(&steps).await.expect_ok();
            let switch = &read.all("read")[0];
            assert_eq!(
                switch["text"]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .collect::<Vec<_>>(),
                ["org-a", "org-b"],
                "{switch}"
            );
        }
        violations.extend(outcome.violations());
    }
    assert!(
        violations.is_empty(),
        "serious or critical accessibility violations:\n{}",
        describe(&violations)
    );
}

/// The body of `path`, read with the API key `key`.
async fn read_as(base: &str, key: &str, path: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// The same-origin links of `html` (`href="/..."`, fragment dropped),
/// unescaped as a browser reads them.
fn local_links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.starts_with('/') && !href.starts_with("//"))
        .map(unescape)
        .map(|href| href.split('#').next().unwrap_or_default().to_string())
        .filter(|href| !href.is_empty())
        .collect()
}

/// An attribute's text as the browser reads it: character references
/// (`&#38;`, `&#x2F;`, `&amp;`, …) replaced by their characters.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let name = &rest[1..end];
        let decoded = match name {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => name
                .strip_prefix("#x")
                .or_else(|| name.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every link on every page (the navigation the gate adds, the
/// sub-navigation, the pages' own links) leads somewhere that answers:
/// the compliance pages once linked a "Log out" route that did not
/// exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_on_every_page_answers() {
    let seeded = seeded("links").await;
    breaker_transitions(&seeded.env).await;
    audit_entries(&seeded.env).await;
    let base = seeded.env.direct_api_url();
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client
            .get(format!("{base}{path}"))
            .bearer_auth(&seeded.admin_key);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    };
    let mut links = std::collections::BTreeMap::<String, String>::new();
    for page in pages(&seeded).await {
        let (status, html) = get(page.clone()).await;
        assert_eq!(status, 200, "{page}");
        for link in local_links(&html) {
            links.entry(link).or_insert_with(|| page.clone());
        }
    }
    // The navigation of every area and the compliance pages' own links.
    for expected in [
        "/sre/latency",
        "/finance/cost",
        "/compliance/search",
        "/compliance/verify",
        "/admin",
        "/compliance/entries/search/1?org=org-a",
    ] {
        assert!(
            links
                .keys()
                .any(|l| l == expected || l.starts_with(&format!("{expected}?"))),
            "no page links {expected}: {:?}",
            links.keys().collect::<Vec<_>>()
        );
    }
    let mut broken = Vec::new();
    for (link, from) in &links {
        let (status, _) = get(link.clone()).await;
        if !status.is_success() {
            broken.push(format!("{link} (on {from}): {status}"));
        }
    }
    assert!(
        broken.is_empty(),
        "links that do not answer:\n{}",
        broken.join("\n")
    );
    // The org switcher on an entry's page (another org than the entry's)
    // leads to that org's search; a parameter the page does not read is
    // refused by name.
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let switched = direct
        .get(format!("{base}/compliance/entries/search/1?org=org-b"))
        .bearer_auth(&seeded.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 303, "org switched on an entry");
    assert_eq!(
        switched.headers()["location"],
        "/compliance/search?org=org-b"
    );
    // An area's root leads to its home page with the same query.
    for (root, home) in [
        ("/", "/overview"),
        ("/sre", "/sre/latency"),
        ("/finance", "/finance/cost"),
        ("/compliance", "/compliance/search"),
        ("/admin", "/admin/keys"),
    ] {
        let query = "org=org-a&from=2026-12-01";
        let response = direct
            .get(format!("{base}{root}?{query}"))
            .bearer_auth(&seeded.admin_key)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_redirection(), "{root}");
        assert_eq!(response.headers()["location"], format!("{home}?{query}"));
    }
    // A hand-written window without `range` is that window, not the
    // default preset; a preset's time fields must still be times.
    let window = format!(
        "from={}&to={}",
        (seeded.now - chrono::Duration::minutes(20)).format("%Y-%m-%dT%H:%M"),
        (seeded.now + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M")
    );
    let (status, custom) = get(format!("/sre/latency/totals.csv?range=custom&{window}")).await;
    assert_eq!(status, 200, "{custom}");
    let (status, hand_written) = get(format!("/sre/latency/totals.csv?{window}")).await;
    assert_eq!(status, 200, "{hand_written}");
    assert_eq!(hand_written, custom);
    let (status, preset) = get("/sre/latency/totals.csv?range=1h".into()).await;
    assert_eq!(status, 200);
    assert_ne!(preset, custom, "the seed's calls span 5 to 45 minutes ago");
    let (status, body) = get("/sre/latency/totals.csv?range=1h&from=garbage".into()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("invalid from: `garbage` is not a time"),
        "{body}"
    );
    let (status, body) = get("/compliance/entries/search/1?colour=red".into()).await;
    assert_eq!(status, 400);
    assert!(body.contains("`colour`"), "{body}");
    every_org_switch_answers(&seeded).await;
}

/// Every choice of the org switcher on every page, for a person who
/// administers two orgs, answers (a redirect to a page that answers
/// counts): on a page of one org's object (a budget, a rule) the other
/// org's choice once led to that object in the other org, a 404.
async fn every_org_switch_answers(seeded: &Seeded) {
    use crate::sign_in::{create_user, Browser, PASSWORD};
    let email = "two-admin@example.com";
    create_user(&seeded.env, email, &["org-a:admin", "org-b:admin"]);
    let mut person = Browser::new(seeded.env.direct_api_url());
    let signed_in = person.sign_in(email, PASSWORD, "/overview").await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let mut choices = std::collections::BTreeMap::<String, String>::new();
    for page in pages(seeded).await {
        let answer = person.get(&page).await;
        // Changing the price catalog is an admin of every org's: the
        // pages that do refuse an admin of two orgs.
        if page.starts_with("/admin/prices/new") || page.starts_with("/admin/prices/import") {
            assert_eq!(answer.status, 403, "{page}: {}", answer.body);
            continue;
        }
        assert_eq!(answer.status, 200, "{page}: {}", answer.body);
        let offered = org_choices(&answer.body);
        if page != "/logout" {
            assert_eq!(offered.len(), 2, "{page}: {offered:?}");
        }
        for choice in offered {
            choices.entry(choice).or_insert_with(|| page.clone());
        }
    }
    // From an org-a budget's page, org-b's choice is org-b's budgets.
    assert!(
        choices.contains_key("/finance/budgets?org=org-b"),
        "{choices:?}"
    );
    let mut broken = Vec::new();
    for (choice, from) in &choices {
        let mut answer = person.get(choice).await;
        if answer.status == 303 {
            let location = answer.location.clone();
            answer = person.get(&location).await;
        }
        if !answer.status.is_success() {
            broken.push(format!("{choice} (on {from}): {}", answer.status));
        }
    }
    assert!(
        broken.is_empty(),
        "org switcher choices that do not answer:\n{}",
        broken.join("\n")
    );
}

/// The targets the org switcher of `html` offers, as the browser reads
/// them.
fn org_choices(html: &str) -> Vec<String> {
    let Some(switch) = html
        .split("id=\"org-switch\"")
        .nth(1)
        .and_then(|rest| rest.split("</select>").next())
    else {
        return Vec::new();
    };
    switch
        .split("value=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(unescape)
        .collect()
}

/// Steps that Tab to `selector` and type `text` there.
fn type_into(selector: &str, text: &str) -> [Step; 2] {
    [Step::TabTo(selector.into()), Step::Type(text.into())]
}

/// A budget and an alert rule made with the keyboard alone: Tab to each
/// field, type (arrow keys in a menu), Enter; no click.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_and_an_alert_rule_are_made_with_the_keyboard_alone() {
    let seeded = seeded("a11y_forms").await;
    let base = seeded.env.direct_api_url();
    let person = create_admin(&seeded.env);
    let mut steps = sign_in(&base, &person);
    steps.push(Step::Goto(format!("{base}/admin/budgets/new")));
    steps.extend(type_into("#budget-form input[name=org_id]", "org-a"));
    steps.extend(type_into(
        "#budget-form input[name=subject_id]",
        "keyboard-team",
    ));
    // The period menu: monthly, then daily.
    steps.push(Step::TabTo("#budget-form select[name=period]".into()));
    steps.push(Step::Press("ArrowDown".into(), false));
    steps.extend(type_into("#budget-form input[name=limit_usd]", "123.45"));
    steps.push(Step::Press("Enter".into(), true));
    steps.push(Step::ExpectText("keyboard-team".into()));
    steps.push(Step::Goto(format!("{base}/sre/alerts/rules/new")));
    steps.extend(type_into("#rule-form input[name=org_id]", "org-a"));
    // Tab from a text field lands on the next one.
    steps.push(Step::Press("Tab".into(), false));
    steps.push(Step::Type("keyboard rule".into()));
    // Enter in a field would send the form's first button (Backtest):
    // Tab to Save and press Enter on it.
    steps.push(Step::TabTo("#save-button".into()));
    steps.push(Step::Press("Enter".into(), true));
    steps.push(Step::ExpectText("keyboard rule".into()));
    let outcome = run(&steps).await.expect_ok();
    let presses: Vec<&serde_json::Value> = outcome
        .all("press")
        .into_iter()
        .filter(|s| s.get("status").is_some())
        .collect();
    assert_eq!(presses.len(), 3, "{presses:?}");
    assert_eq!(
        presses[1]["url"],
        format!("{base}/admin/budgets"),
        "{}",
        presses[1]
    );
    assert!(outcome.all("click").is_empty(), "nothing was clicked");

    // The budget as typed: org-a's team keyboard-team, daily, $123.45.
    let csv = read_as(&base, &seeded.admin_key, "/admin/budgets.csv").await;
    let row: Vec<&str> = csv
        .lines()
        .find(|l| l.contains("keyboard-team"))
        .unwrap_or_else(|| panic!("no keyboard-team budget:\n{csv}"))
        .split(',')
        .collect();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let field = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        [
            field("org_id"),
            field("subject_kind"),
            field("period"),
            field("limit_usd"),
            field("enforcement")
        ],
        ["org-a", "team", "daily", "123.450000000000", "hard"]
    );
    // The rule as typed, with the form's default signal.
    let rules: serde_json::Value =
        serde_json::from_str(&read_as(&base, &seeded.admin_key, "/api/v1/alerts/rules").await)
            .unwrap();
    let list = rules.as_array().unwrap_or_else(|| panic!("{rules}"));
    let made: Vec<&serde_json::Value> = list
        .iter()
        .filter(|r| r["name"] == "keyboard rule")
        .collect();
    assert_eq!(made.len(), 1, "{rules}");
    assert_eq!(made[0]["org_id"], "org-a", "{}", made[0]);
    assert_eq!(made[0]["severity"], "warning", "{}", made[0]);
    assert_eq!(made[0]["for_secs"], 120, "{}", made[0]);
    assert_eq!(made[0]["signal"]["provider"], "openai", "{}", made[0]);
}
