//! Single sign-on against a real OpenID provider: panva's certified
//! `oidc-provider` from npm, run by `dev/stack up` (dev/oidc) at
//! `TOLLGATE_TEST_OIDC`. Each test registers a client of its own
//! (dynamic registration) with its server's callback, then signs in as
//! one of the provider's demo accounts (dev/oidc/accounts.json) through
//! the provider's login and consent forms with a cookie-keeping HTTP
//! client, the way a browser would.
//!
//! What a user checks: the session the sign-in starts opens the mapped
//! org's report and not another org's, the mapped role is enforced, and a
//! replayed or tampered callback, or an account whose roles claim maps to
//! nothing, gets a page naming the reason.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestEnv;

/// The provider's URL, or `None` (the test says it is skipped).
pub fn provider_url(test: &str) -> Option<String> {
    match std::env::var("TOLLGATE_TEST_OIDC") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_string()),
        _ => {
            eprintln!(
                "SKIPPED {test}: TOLLGATE_TEST_OIDC is not set (the OpenID provider `dev/stack up` starts; dev/test sets it)"
            );
            None
        }
    }
}

/// A `tollgate api` with `[auth.oidc]` pointing at a client registered at
/// the provider for this server's callback.
pub struct SsoServer {
    pub env: TestEnv,
}

impl SsoServer {
    pub async fn start(label: &str, provider: &str) -> Self {
        let mut env = TestEnv::new(label).await;
        let redirect = format!("{}/auth/oidc/callback", env.direct_api_url());
        let registered: Value = reqwest::Client::new()
            .post(format!("{provider}/reg"))
            .json(&json!({
                "client_name": format!("tollgate test {}", env.name),
                "redirect_uris": [redirect],
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let section = format!(
            r#"
[auth.oidc]
issuer_url = "{provider}"
client_id = "{id}"
client_secret = "{secret}"
redirect_url = "{redirect}"
scopes = ["openid", "email", "profile", "tollgate"]
roles_claim = "tollgate_roles"
"#,
            id = registered["client_id"].as_str().unwrap(),
            secret = registered["client_secret"].as_str().unwrap(),
        );
        let mut config = std::fs::read_to_string(&env.config_path).unwrap();
        config.push_str(&section);
        std::fs::write(&env.config_path, config).unwrap();
        env.start_api_on_its_port().await;
        Self { env }
    }

    /// A URL of `tollgate api` itself (not the harness's signed-in
    /// forwarder: these requests bring their own identity or none).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.direct_api_url())
    }
}

/// A browser stand-in: keeps cookies, follows no redirect by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    let to = response.headers()[LOCATION].to_str().unwrap().to_string();
    response.url().join(&to).unwrap().to_string()
}

/// The `action` of the page's one form, as an absolute URL.
fn form_action(page_url: &reqwest::Url, html: &str) -> String {
    let start = html.find("action=\"").expect("a form") + "action=\"".len();
    let end = start + html[start..].find('"').unwrap();
    page_url.join(&html[start..end]).unwrap().to_string()
}

/// Start a sign-in at `server` and go through the provider's login (as
/// `login`/`password`) and consent forms; returns the callback URL the
/// provider redirects back to (not yet visited).
async fn through_provider(
    browser: &reqwest::Client,
    server: &SsoServer,
    next: &str,
    login: &str,
    password: &str,
) -> String {
    let callback = server.url("/auth/oidc/callback");
    let start = browser
        .get(server.url("/auth/oidc/start"))
        .query(&[("next", next)])
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER, "start");
    let mut url = location(&start);
    assert!(url.contains("code_challenge_method=S256"), "PKCE: {url}");
    // Provider redirects and forms, at most a handful.
    for _ in 0..12 {
        if url.starts_with(&callback) {
            return url;
        }
        let response = browser.get(&url).send().await.unwrap();
        if response.status().is_redirection() {
            url = location(&response);
            continue;
        }
        let page_url = response.url().clone();
        let status = response.status();
        let html = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{page_url}: {html}");
        let action = form_action(&page_url, &html);
        let form: Vec<(&str, &str)> = if html.contains("name=\"password\"") {
            vec![("login", login), ("password", password)]
        } else {
            vec![]
        };
        let submitted = browser.post(&action).form(&form).send().await.unwrap();
        assert!(
            submitted.status().is_redirection(),
            "{action}: {} {}",
            submitted.status(),
            submitted.text().await.unwrap()
        );
        url = location(&submitted);
    }
    panic!("the provider never sent the browser back to {callback}");
}

/// The `state` of a callback URL.
fn state_of(callback: &str) -> String {
    reqwest::Url::parse(callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// The session cookie a response sets.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tollgate_session="))
        .map(String::from)
}

/// Sign in as `login` through the provider; returns the browser, now
/// holding the session cookie, after checking where the callback went.
async fn signed_in(server: &SsoServer, next: &str, login: &str, password: &str) -> reqwest::Client {
    let browser = browser();
    let callback = through_provider(&browser, server, next, login, password).await;
    let response = browser.get(&callback).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "callback for {login}: {}",
        response.text().await.unwrap()
    );
    assert_eq!(response.headers()[LOCATION], next);
    let cookie = session_cookie(&response).expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    browser
}

async fn status(browser: &reqwest::Client, url: &str) -> StatusCode {
    browser.get(url).send().await.unwrap().status()
}

#[tokio::test]
async fn a_signed_in_person_sees_the_orgs_and_roles_their_claim_maps_to() {
    let Some(provider) = provider_url("sso::a_signed_in_person_sees_the_orgs_and_roles") else {
        return;
    };
    let server = SsoServer::start("sso_flow", &provider).await;
    let cost = |org: &str| {
        server.url(&format!(
            "/api/v1/reports/cost?from=2026-03-01&to=2026-04-01&org={org}"
        ))
    };
    let latency = |org: &str| {
        server.url(&format!(
            "/api/v1/reports/latency?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z&org={org}"
        ))
    };

    // Without a session: the API says 401; the sign-in page offers SSO.
    let nobody = browser();
    assert_eq!(
        status(&nobody, &cost("acme")).await,
        StatusCode::UNAUTHORIZED
    );
    let login_page = nobody
        .get(server.url("/login?next=/finance/cost"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login_page.contains("href=\"/auth/oidc/start?next=%2Ffinance%2Fcost\"")
            && login_page.contains("Sign in with single sign-on"),
        "{login_page}"
    );

    // finance@acme.test: tollgate_roles = ["acme:finance"].
    let finance = signed_in(
        &server,
        "/finance/cost?org=acme",
        "finance@acme.test",
        "finance",
    )
    .await;
    let report = finance.get(cost("acme")).send().await.unwrap();
    assert_eq!(
        report.status(),
        StatusCode::OK,
        "{}",
        report.text().await.unwrap()
    );
    assert_eq!(
        status(&finance, &cost("globex")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&finance, &latency("acme")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&finance, &server.url("/sre/latency?org=acme")).await,
        StatusCode::FORBIDDEN
    );
    let page = finance
        .get(server.url("/finance/cost?org=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(">Fran Finance</span>"),
        "the signed-in name: {html}"
    );

    // sre@globex.test: ["globex:sre"], the other way round.
    let sre = signed_in(&server, "/sre/latency?org=globex", "sre@globex.test", "sre").await;
    assert_eq!(status(&sre, &latency("globex")).await, StatusCode::OK);
    assert_eq!(status(&sre, &latency("acme")).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&sre, &cost("globex")).await, StatusCode::FORBIDDEN);

    // admin@example.test: ["*:admin"] sees every org.
    let admin = signed_in(&server, "/", "admin@example.test", "admin").await;
    assert_eq!(status(&admin, &cost("acme")).await, StatusCode::OK);
    assert_eq!(status(&admin, &latency("globex")).await, StatusCode::OK);

    // The people are recorded with the grants their claims map to.
    let users: Vec<Value> =
        serde_json::from_str(&server.env.run(&["users", "list", "--json"])).unwrap();
    let mut recorded: Vec<(String, String, Value)> = users
        .iter()
        .map(|u| {
            (
                u["email"].as_str().unwrap().to_string(),
                u["display_name"].as_str().unwrap().to_string(),
                u["grants"].clone(),
            )
        })
        .collect();
    recorded.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        recorded,
        vec![
            (
                "admin@example.test".to_string(),
                "Ada Admin".to_string(),
                json!([{"org_id": null, "role": "admin"}])
            ),
            (
                "finance@acme.test".to_string(),
                "Fran Finance".to_string(),
                json!([{"org_id": "acme", "role": "finance"}])
            ),
            (
                "sre@globex.test".to_string(),
                "Sam Sre".to_string(),
                json!([{"org_id": "globex", "role": "sre"}])
            ),
        ]
    );
}

#[tokio::test]
async fn an_account_whose_roles_claim_maps_to_nothing_gets_the_403_page_naming_the_claim() {
    let Some(provider) = provider_url("sso::an_account_whose_roles_claim_maps_to_nothing") else {
        return;
    };
    let server = SsoServer::start("sso_nobody", &provider).await;
    let browser = browser();
    let callback = through_provider(&browser, &server, "/", "nobody@example.test", "nobody").await;
    let response = browser.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(session_cookie(&response), None);
    let html = response.text().await.unwrap();
    assert!(
        html.contains(
            "nobody@example.test has no role in Tollgate: the `tollgate_roles` claim the provider sent (initech:janitor, staff) maps to no org and role"
        ),
        "{html}"
    );
}

#[tokio::test]
async fn a_replayed_tampered_or_refused_callback_is_refused_by_name() {
    let Some(provider) = provider_url("sso::a_replayed_tampered_or_refused_callback") else {
        return;
    };
    let server = SsoServer::start("sso_replay", &provider).await;

    // Tampered: the state is not the one this browser started.
    let browser_a = browser();
    let callback = through_provider(&browser_a, &server, "/", "finance@acme.test", "finance").await;
    let tampered = callback.replace("state=", "state=x");
    let response = browser_a.get(&tampered).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("this sign-in was started in another browser"),
        "{html}"
    );
    // Nor one this server issued, even with a cookie to match it.
    let forged = state_of(&tampered);
    let response = browser()
        .get(&tampered)
        .header(COOKIE, format!("tollgate_sso_state={forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("this sign-in was not started here (unknown state)"),
        "{html}"
    );

    // Replayed: the first use signs in (or fails later, past the state)
    // and clears the browser's binding; a second use is refused, in the
    // same browser for want of the binding, and with the binding's cookie
    // copied as already used.
    let browser_b = browser();
    let callback = through_provider(&browser_b, &server, "/", "finance@acme.test", "finance").await;
    let first = browser_b.get(&callback).send().await.unwrap();
    assert_ne!(first.status(), StatusCode::BAD_REQUEST, "first use");
    let again = browser_b.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(session_cookie(&again), None);
    let html = again.text().await.unwrap();
    assert!(
        html.contains("this browser sent no `tollgate_sso_state` cookie"),
        "{html}"
    );
    let again = browser()
        .get(&callback)
        .header(
            COOKIE,
            format!("tollgate_sso_state={}", state_of(&callback)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(session_cookie(&again), None);
    let html = again.text().await.unwrap();
    assert!(html.contains("this sign-in was already used at"), "{html}");

    // An answer without the provider's `iss` is refused, since the dev
    // provider advertises RFC 9207 (a mix-up through another provider
    // would come without it), and so is one naming another issuer.
    let browser_d = browser();
    let callback = through_provider(&browser_d, &server, "/", "finance@acme.test", "finance").await;
    let mut url = reqwest::Url::parse(&callback).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(
        kept.len() < url.query_pairs().count(),
        "the provider sent iss: {callback}"
    );
    url.query_pairs_mut().clear().extend_pairs(&kept);
    let response = browser_d.get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(session_cookie(&response), None);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("the answer has no `iss`, which") && html.contains("(RFC 9207)"),
        "{html}"
    );
    let browser_e = browser();
    let callback = through_provider(&browser_e, &server, "/", "finance@acme.test", "finance").await;
    let mut url = reqwest::Url::parse(&callback).unwrap();
    let swapped: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" {
                "https://idp.evil.example".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(&swapped);
    let response = browser_e.get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("the answer comes from issuer https://idp.evil.example, not"),
        "{html}"
    );

    // The provider's refusal (the person pressed cancel, say) is named.
    let browser_c = browser();
    let start = browser_c
        .get(server.url("/auth/oidc/start"))
        .send()
        .await
        .unwrap();
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let refused = browser_c
        .get(server.url("/auth/oidc/callback"))
        .query(&[
            ("error", "access_denied"),
            ("error_description", "End-User aborted interaction"),
            ("state", state.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains(
            "the provider refused the sign-in: access_denied (End-User aborted interaction)"
        ),
        "{html}"
    );
}

/// Someone who starts a sign-in and sends its callback to someone else
/// (login CSRF) does not sign that person's browser in to their account:
/// the callback is refused there, spends nothing, and still finishes in
/// the browser that started it.
#[tokio::test]
async fn a_callback_opened_in_another_browser_signs_nobody_in() {
    let Some(provider) = provider_url("sso::a_callback_opened_in_another_browser") else {
        return;
    };
    let server = SsoServer::start("sso_binding", &provider).await;
    let start = browser()
        .get(server.url("/auth/oidc/start"))
        .send()
        .await
        .unwrap();
    let binding = start
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tollgate_sso_state="))
        .map(String::from)
        .expect("start binds the sign-in to the browser");
    assert!(
        binding.contains("HttpOnly")
            && binding.contains("SameSite=Lax")
            && binding.contains("Path=/auth/oidc/callback"),
        "{binding}"
    );

    let attacker = browser();
    let callback = through_provider(
        &attacker,
        &server,
        "/finance",
        "finance@acme.test",
        "finance",
    )
    .await;
    let victim = browser();
    let response = victim.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(session_cookie(&response), None);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("this browser sent no `tollgate_sso_state` cookie"),
        "{html}"
    );
    assert_eq!(
        status(&victim, &server.url("/finance/cost")).await,
        StatusCode::SEE_OTHER,
        "the victim is not signed in"
    );

    // The refusal spent nothing: the browser that started it finishes it,
    // and its binding is cleared once used.
    let response = attacker.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&response).is_some());
    assert!(
        response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.starts_with("tollgate_sso_state=;") && v.contains("Max-Age=0")),
        "the binding is cleared once used"
    );

    // A newer sign-in started in the same browser replaces the binding of
    // an older one.
    let browser = browser();
    let older = through_provider(
        &browser,
        &server,
        "/finance",
        "finance@acme.test",
        "finance",
    )
    .await;
    let _newer = through_provider(
        &browser,
        &server,
        "/finance",
        "finance@acme.test",
        "finance",
    )
    .await;
    let response = browser.get(&older).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains("another tab started a newer one"), "{html}");
}

#[tokio::test]
async fn a_pending_login_is_taken_once_and_not_after_it_expires() {
    use tollgate_control::sso_logins::{PendingSsoLogin, SsoLoginError, SsoLoginStore};
    let env = TestEnv::new("sso_logins").await;
    let store = SsoLoginStore::new(sqlx::PgPool::connect(&env.pg_url).await.unwrap());
    let login = |minutes: i64| PendingSsoLogin {
        pkce_verifier: "verifier".into(),
        nonce: "nonce".into(),
        next: "/finance".into(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(minutes),
    };
    store.begin("fresh", &login(10)).await.unwrap();
    store.begin("stale", &login(-1)).await.unwrap();

    let taken = store.take("fresh").await.unwrap();
    assert_eq!(
        (
            taken.pkce_verifier.as_str(),
            taken.nonce.as_str(),
            taken.next.as_str()
        ),
        ("verifier", "nonce", "/finance")
    );
    assert!(matches!(
        store.take("fresh").await,
        Err(SsoLoginError::AlreadyUsed { .. })
    ));
    assert!(matches!(
        store.take("stale").await,
        Err(SsoLoginError::Expired { .. })
    ));
    assert!(matches!(
        store.take("never-issued").await,
        Err(SsoLoginError::Unknown)
    ));
}

/// A provider naming the address of an account that signs in with a
/// password does not get that account (nor its admin grant).
#[tokio::test]
async fn a_provider_cannot_take_over_a_password_account_by_its_address() {
    let Some(provider) = provider_url("sso::a_provider_cannot_take_over") else {
        return;
    };
    let server = SsoServer::start("sso_takeover", &provider).await;
    // The provider's finance@acme.test has only `acme:finance`; here the
    // same address is a password account with admin of every org.
    crate::sign_in::create_user(&server.env, "finance@acme.test", &["*:admin"]);
    let browser = browser();
    let callback = through_provider(&browser, &server, "/", "finance@acme.test", "finance").await;
    let response = browser.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(session_cookie(&response), None);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("already exists and signs in another way"),
        "{html}"
    );
    let users = server.env.run(&["users", "list", "--json"]);
    let users: Value = serde_json::from_str(&users).unwrap();
    let account = &users.as_array().unwrap()[0];
    assert_eq!(account["sso_issuer"], Value::Null, "{users}");
    assert_eq!(
        account["grants"],
        json!([{"org_id": null, "role": "admin"}])
    );
}
