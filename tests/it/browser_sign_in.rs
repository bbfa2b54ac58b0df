//! Sign-in in a real browser: Debian's headless Chromium driven by
//! `tests/browser/drive.mjs`, against `tollgate api` itself (no signed-in
//! forwarder). Password sign-in shows the person's name and sign-out ends
//! the session (the old cookie is refused afterwards); single sign-on goes
//! through the real OpenID provider's login and consent pages and comes
//! back with the role and org its claim maps to; a form whose `csrf` field
//! was tampered with is refused and changes nothing; an expired session
//! sends the browser to `/login?next=` and signing in returns to the page;
//! after the configured number of wrong passwords the right one is refused
//! with the lockout message. (The same over plain HTTP is in `sign_in.rs`
//! and `sso.rs`.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::sign_in::{create_named_user, create_user, PASSWORD};
use crate::sso::{provider_url, SsoServer};
use crate::support::browser::{run, Outcome, Step};
use crate::support::TestEnv;

/// Steps that fill the sign-in form on the page shown and send it.
fn submit_sign_in(email: &str, password: &str) -> Vec<Step> {
    vec![
        Step::Fill("#email".into(), email.into()),
        Step::Fill("#password".into(), password.into()),
        Step::Click("form[action='/login'] button[type=submit]".into(), true),
        Step::Location,
    ]
}

/// The value of the `tollgate_session` cookie of the last `Cookies` step.
fn session_cookie(outcome: &Outcome) -> Option<String> {
    outcome.all("cookies").last().and_then(|step| {
        step["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "tollgate_session")
            .map(|c| c["value"].as_str().unwrap().to_string())
    })
}

/// `GET path` with only the session cookie `token`, following nothing.
async fn with_cookie(base: &str, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}{path}"))
        .header("cookie", format!("tollgate_session={token}"))
        .send()
        .await
        .unwrap()
}

fn text(step: &Value) -> String {
    step["text"].as_str().unwrap_or_default().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_sign_in_shows_the_name_and_sign_out_ends_the_session() {
    let mut env = TestEnv::new("br_signin").await;
    env.start_api().await;
    let email = "fran@acme.example";
    create_named_user(&env, email, Some("Fran Finance"), &["acme:finance"]);
    let base = env.direct_api_url();

    // A page without a session leads to the sign-in form, and back.
    let mut steps = vec![Step::Goto(format!("{base}/finance/cost"))];
    steps.extend(submit_sign_in(email, PASSWORD));
    steps.extend([Step::Read(".who .name".into()), Step::Cookies]);
    let outcome = run(&steps).await.expect_ok();
    assert_eq!(
        outcome.step(0)["url"],
        format!("{base}/login?next=%2Ffinance%2Fcost")
    );
    let signed_in = outcome.all("location")[0];
    assert_eq!(signed_in["url"], format!("{base}/finance/cost"));
    assert_eq!(signed_in["status"], 200, "{signed_in}");
    assert_eq!(text(outcome.all("read")[0]), "Fran Finance");
    let token = session_cookie(&outcome).expect("a session cookie");
    // The cookie is the session: it opens the page on its own.
    assert_eq!(
        with_cookie(&base, "/finance/cost", &token).await.status(),
        StatusCode::OK
    );

    // The same session in a new browser: sign out from the navigation.
    let steps = vec![
        Step::SetCookie(base.clone(), "tollgate_session".into(), token.clone()),
        Step::Goto(format!("{base}/finance/cost")),
        Step::Read(".who .name".into()),
        Step::Click(".who form.sign-out button[type=submit]".into(), true),
        Step::Location,
        Step::Cookies,
        Step::Goto(format!("{base}/finance/cost")),
    ];
    let outcome = run(&steps).await.expect_ok();
    assert_eq!(outcome.step(1)["status"], 200, "{}", outcome.step(1));
    assert_eq!(text(outcome.all("read")[0]), "Fran Finance");
    assert_eq!(outcome.all("location")[0]["url"], format!("{base}/login"));
    assert_eq!(session_cookie(&outcome), None, "the cookie is cleared");
    assert_eq!(
        outcome.steps.last().unwrap()["url"],
        format!("{base}/login?next=%2Ffinance%2Fcost")
    );
    // The old cookie is refused: the page sends it to sign in, the API
    // says 401, and no session is stored.
    let page = with_cookie(&base, "/finance/cost", &token).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()["location"], "/login?next=%2Ffinance%2Fcost");
    assert_eq!(
        with_cookie(&base, "/api/v1/finance/budgets", &token)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_through_the_providers_pages_maps_the_claim() {
    let Some(provider) = provider_url("browser_sign_in::single_sign_on") else {
        return;
    };
    let server = SsoServer::start("br_sso", &provider).await;
    let base = server.env.direct_api_url();
    let steps = vec![
        Step::Goto(format!("{base}/login?next=%2Ffinance%2Fcost%3Forg%3Dacme")),
        // The sign-in page's button, to the provider's login form.
        Step::Click("a[href^='/auth/oidc/start']".into(), true),
        Step::Location,
        Step::Fill("input[name=login]".into(), "finance@acme.test".into()),
        Step::Fill("input[name=password]".into(), "finance".into()),
        Step::Click("button[type=submit]".into(), true),
        // Its consent page.
        Step::Location,
        Step::ExpectText("Authorize".into()),
        Step::Click("button[type=submit]".into(), true),
        // Back at Tollgate, signed in, on the page asked for.
        Step::Location,
        Step::Read(".who .name".into()),
        Step::Html,
        Step::Cookies,
        // finance@acme.test's claim is `acme:finance`: no SRE pages, no
        // other org.
        Step::Goto(format!("{base}/sre/latency")),
        Step::Goto(format!("{base}/finance/cost?org=globex")),
    ];
    let outcome = run(&steps).await.expect_ok();
    let locations = outcome.all("location");
    let login = locations[0]["url"].as_str().unwrap();
    assert!(
        login.starts_with(&format!("{provider}/interaction/")),
        "the provider's login page: {login}"
    );
    let consent = locations[1]["url"].as_str().unwrap();
    assert!(
        consent.starts_with(&format!("{provider}/interaction/")) && consent != login,
        "the provider's consent page: {consent}"
    );
    assert_eq!(
        locations[2]["url"],
        format!("{base}/finance/cost?org=acme"),
        "{}",
        locations[2]
    );
    assert_eq!(locations[2]["status"], 200);
    assert_eq!(text(outcome.all("read")[0]), "Fran Finance");
    let html = outcome.html();
    assert!(html.contains(">Finance</a>"), "finance's navigation");
    assert!(!html.contains(">Admin</a>") && !html.contains(">Latency</a>"));
    assert!(session_cookie(&outcome).is_some());
    let n = outcome.steps.len();
    assert_eq!(
        outcome.step(n - 2)["status"],
        403,
        "{}",
        outcome.step(n - 2)
    );
    assert_eq!(
        outcome.step(n - 1)["status"],
        404,
        "{}",
        outcome.step(n - 1)
    );
    // The person is stored with the claim's grant.
    let pool = sqlx::PgPool::connect(&server.env.pg_url).await.unwrap();
    let grants: Vec<(String, String)> = sqlx::query_as(
        "SELECT g.org_id, g.role FROM user_grants g JOIN users u ON u.id = g.user_id \
         WHERE u.email = 'finance@acme.test'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(grants, vec![("acme".to_string(), "finance".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_with_a_tampered_csrf_field_changes_nothing() {
    let mut env = TestEnv::new("br_csrf").await;
    env.start_api().await;
    let email = "ada@acme.example";
    create_user(&env, email, &["acme:admin"]);
    let base = env.direct_api_url();
    let mut steps = vec![Step::Goto(format!("{base}/login?next=%2Fadmin%2Fkeys"))];
    steps.extend(submit_sign_in(email, PASSWORD));
    let create = |name: &str, csrf: Option<&str>| {
        let mut steps = vec![
            Step::Goto(format!("{base}/admin/keys")),
            Step::Fill("#key-form input[name=name]".into(), name.into()),
            Step::Fill("#key-form input[name=org]".into(), "acme".into()),
        ];
        if let Some(csrf) = csrf {
            steps.push(Step::SetValue(
                "#key-form input[name=csrf]".into(),
                csrf.into(),
            ));
        }
        steps.extend([
            Step::Click("#create-key".into(), true),
            Step::Location,
            Step::Read("body".into()),
        ]);
        steps
    };
    steps.extend(create("forged key", Some("0123456789abcdef-tampered")));
    // The same form untouched does create a key (the refusal above is the
    // token's doing).
    steps.extend(create("honest key", None));
    let outcome = run(&steps).await.expect_ok();
    let locations = outcome.all("location");
    assert_eq!(locations[0]["url"], format!("{base}/admin/keys"));
    let forged = locations[1];
    assert_eq!(forged["status"], 403, "{forged}");
    let refusal = text(outcome.all("read")[0]);
    assert!(refusal.contains("token"), "{refusal}");
    assert!(!refusal.contains("forged key"), "{refusal}");
    assert_eq!(locations[2]["status"], 201, "created: {}", locations[2]);
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM api_keys ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        !names.iter().any(|n| n == "forged key"),
        "a forged form created a key: {names:?}"
    );
    assert!(names.iter().any(|n| n == "honest key"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_signs_in_again_and_returns_to_the_page() {
    let mut env = TestEnv::with_extra_config(
        "br_expiry",
        "[auth]\nsecure_cookies = false\nsession_ttl_secs = 3\n",
    )
    .await;
    env.start_api().await;
    let email = "fran@acme.example";
    create_named_user(&env, email, Some("Fran Finance"), &["acme:finance"]);
    let base = env.direct_api_url();
    let mut steps = vec![Step::Goto(format!("{base}/login?next=%2Foverview"))];
    steps.extend(submit_sign_in(email, PASSWORD));
    // Polled: the page opens while the session lasts, then leads to the
    // sign-in form.
    steps.push(Step::GotoUntil {
        url: format!("{base}/finance/budgets"),
        url_contains: "/login?next=".into(),
        deadline: Duration::from_secs(30),
    });
    steps.extend(submit_sign_in(email, PASSWORD));
    steps.push(Step::Read(".who .name".into()));
    let outcome = run(&steps).await.expect_ok();
    let locations = outcome.all("location");
    assert_eq!(locations[0]["url"], format!("{base}/overview"));
    let expired = outcome.all("goto_until")[0];
    assert_eq!(
        expired["url"],
        format!("{base}/login?next=%2Ffinance%2Fbudgets"),
        "{expired}"
    );
    assert_eq!(locations[1]["url"], format!("{base}/finance/budgets"));
    assert_eq!(locations[1]["status"], 200, "{}", locations[1]);
    assert_eq!(text(outcome.all("read")[0]), "Fran Finance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_wrong_passwords_the_right_one_is_refused_on_the_page() {
    let mut env = TestEnv::with_extra_config(
        "br_lockout",
        "[auth]\nsecure_cookies = false\nlockout_attempts = 3\nlockout_secs = 600\n",
    )
    .await;
    env.start_api().await;
    let email = "ada@acme.example";
    create_user(&env, email, &["acme:viewer"]);
    let base = env.direct_api_url();
    let mut steps = vec![Step::Goto(format!("{base}/login?next=%2Foverview"))];
    for _ in 0..3 {
        steps.extend(submit_sign_in(email, "guess guess guess"));
        steps.push(Step::Read("[role=alert]".into()));
    }
    steps.extend(submit_sign_in(email, PASSWORD));
    steps.extend([
        Step::Read("[role=alert]".into()),
        Step::ExpectText("locked until".into()),
        Step::Cookies,
    ]);
    let outcome = run(&steps).await.expect_ok();
    let (locations, alerts) = (outcome.all("location"), outcome.all("read"));
    for attempt in 0..2 {
        assert_eq!(locations[attempt]["status"], 401, "{}", locations[attempt]);
        assert_eq!(text(alerts[attempt]), "wrong email or password");
    }
    assert_eq!(locations[2]["status"], 429, "the third locks");
    let right = locations[3];
    assert_eq!(right["status"], 429, "{right}");
    assert_eq!(right["url"], format!("{base}/login"));
    let message = text(alerts[3]);
    assert!(
        message.starts_with("too many failed attempts: this account is locked until"),
        "{message}"
    );
    assert_eq!(session_cookie(&outcome), None, "no session started");
}
