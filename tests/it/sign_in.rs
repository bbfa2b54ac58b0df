//! People signing in over HTTP, as a browser does (cookies kept by hand):
//! password sign-in with the session cookie's attributes, role-limited
//! navigation and org-pinned reports, CSRF refusal of a form without the
//! session's token, sign-out, lockout after repeated failures, session
//! expiry, the invitation flow, and the pre-session token of the sign-in
//! and invitation forms (login CSRF). (The same in headless Chromium is in
//! `browser_sign_in.rs`.)

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::TestEnv;

pub const PASSWORD: &str = "correct horse battery staple";

/// Create a person with `grants` (`org:role`) and [`PASSWORD`] via the CLI.
pub fn create_user(env: &TestEnv, email: &str, grants: &[&str]) {
    create_named_user(env, email, None, grants)
}

/// [`create_user`] with a display name.
pub fn create_named_user(env: &TestEnv, email: &str, name: Option<&str>, grants: &[&str]) {
    let mut args = vec!["users", "create", "--email", email, "--password-stdin"];
    if let Some(name) = name {
        args.extend(["--name", name]);
    }
    for g in grants {
        args.extend(["--grant", g]);
    }
    let (ok, err) = with_password(env, &args, PASSWORD);
    assert!(ok, "users create: {err}");
}

/// `tollgate <args>` given `password` on stdin: whether it succeeded, and
/// its stderr.
fn with_password(env: &TestEnv, args: &[&str], password: &str) -> (bool, String) {
    let mut child = env
        .tollgate(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A browser without a cookie jar: the session cookie and the sign-in
/// form's `tollgate_login_csrf` cookie are carried by hand.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
    /// The pre-session form token's cookie, once a page set it.
    pub login_token: Option<String>,
}

pub struct Answer {
    pub status: StatusCode,
    pub location: String,
    pub set_cookie: String,
    pub body: String,
}

impl Browser {
    pub fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base,
            cookie: None,
            login_token: None,
        }
    }

    async fn answer(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookies: Vec<String> = [
            ("tollgate_session", &self.cookie),
            ("tollgate_login_csrf", &self.login_token),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
        let request = if cookies.is_empty() {
            request
        } else {
            request.header("cookie", cookies.join("; "))
        };
        let response = request.send().await.unwrap();
        if let Some(token) = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("tollgate_login_csrf="))
            .and_then(|rest| rest.split(';').next())
        {
            self.login_token = Some(token.to_string());
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (location, set_cookie) = (header("location"), header("set-cookie"));
        Answer {
            status: response.status(),
            location,
            set_cookie,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(format!("{}{path}", self.base));
        self.answer(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.answer(request).await
    }

    /// The pre-session form token, as the sign-in page's form holds it
    /// (which is also its cookie's value, now kept).
    pub async fn login_token(&mut self) -> String {
        if self.login_token.is_none() {
            let page = self.get("/login").await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            assert_eq!(
                Some(csrf_of(&page.body)),
                self.login_token,
                "form and cookie"
            );
        }
        self.login_token.clone().unwrap()
    }

    /// Post a form used before signing in (`/login`, an invitation's) with
    /// the pre-session token, as the page's form sends it.
    pub async fn post_signed_out(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let token = self.login_token().await;
        let mut form = form.to_vec();
        form.push(("csrf", &token));
        self.post(path, &form).await
    }

    /// Sign in; keeps the session cookie.
    pub async fn sign_in(&mut self, email: &str, password: &str, next: &str) -> Answer {
        let answer = self
            .post_signed_out(
                "/login",
                &[("email", email), ("password", password), ("next", next)],
            )
            .await;
        if let Some(token) = answer
            .set_cookie
            .strip_prefix("tollgate_session=")
            .and_then(|rest| rest.split(';').next())
            .filter(|t| !t.is_empty())
        {
            self.cookie = Some(token.to_string());
        }
        answer
    }
}

/// Invite `email` with `grant` via the CLI: the link's path.
fn invite(env: &TestEnv, email: &str, grant: &str) -> String {
    let link = env.run(&[
        "users",
        "invite",
        "--email",
        email,
        "--grant",
        grant,
        "--base-url",
        &env.direct_api_url(),
    ]);
    let path = link
        .trim()
        .strip_prefix(&env.direct_api_url())
        .unwrap()
        .to_string();
    assert!(path.starts_with("/invitations/"), "{link}");
    path
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in the page"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn password_sign_in_roles_csrf_and_sign_out() {
    let mut env = TestEnv::new("signin").await;
    env.start_api().await;
    create_user(&env, "fin@acme.example", &["acme:finance"]);
    create_user(&env, "sre@acme.example", &["acme:sre"]);
    let mut browser = Browser::new(env.direct_api_url());

    // Without a session: the sign-in page, coming back afterwards.
    let answer = browser.get("/finance/cost").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location, "/login?next=%2Ffinance%2Fcost");
    let page = browser.get("/login?next=%2Ffinance%2Fcost").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("name=\"password\""), "{}", page.body);

    // A wrong password: the same words whether or not the account exists.
    let wrong = browser
        .sign_in("fin@acme.example", "not the password", "/finance/cost")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("wrong email or password"));
    let unknown = browser
        .sign_in("nobody@acme.example", PASSWORD, "/finance/cost")
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("wrong email or password"));
    assert!(browser.cookie.is_none());

    // The right one: a session cookie, HttpOnly and SameSite, back to next.
    let ok = browser
        .sign_in("FIN@acme.example", PASSWORD, "/finance/cost")
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location, "/finance/cost");
    assert!(ok.set_cookie.contains("HttpOnly"), "{}", ok.set_cookie);
    assert!(ok.set_cookie.contains("SameSite=Lax"), "{}", ok.set_cookie);
    assert!(ok.set_cookie.contains("Path=/"), "{}", ok.set_cookie);
    // An open redirect is not followed.
    let mut other = Browser::new(env.direct_api_url());
    let away = other
        .sign_in("fin@acme.example", PASSWORD, "//evil.example/")
        .await;
    assert_eq!(away.location, "/");

    // Finance sees its areas only, pinned to its org.
    let page = browser.get("/finance/cost").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">Finance</a>"), "{}", page.body);
    assert!(!page.body.contains(">Admin</a>") && !page.body.contains(">Compliance</a>"));
    assert!(page.body.contains("Sign out"));
    let report = browser.get("/api/v1/reports/cost").await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    let report: serde_json::Value = serde_json::from_str(&report.body).unwrap();
    assert_eq!(report["filters"]["org"], "acme", "{report}");
    assert_eq!(
        browser.get("/api/v1/reports/cost?org=globex").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        browser.get("/compliance/search").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        browser.get("/sre/latency").await.status,
        StatusCode::FORBIDDEN
    );

    // CSRF: an sre's form without the session's token changes nothing.
    let mut sre = Browser::new(env.direct_api_url());
    assert_eq!(
        sre.sign_in("sre@acme.example", PASSWORD, "/sre/alerts")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let alerts = sre.get("/sre/alerts").await;
    assert_eq!(alerts.status, StatusCode::OK, "{}", alerts.body);
    let token = csrf_of(&alerts.body);
    let now = chrono::Utc::now();
    let starts = now.format("%Y-%m-%dT%H:%M").to_string();
    let ends = (now + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let silence = [
        ("org_id", "acme"),
        ("matchers", "team=search"),
        ("starts_at", starts.as_str()),
        ("ends_at", ends.as_str()),
        ("comment", "csrf test"),
    ];
    let forged = sre.post("/sre/alerts/silences", &silence).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    // No token is named as missing, a wrong one as another session's.
    assert!(forged.body.contains("no form token"), "{}", forged.body);
    let mut bad = silence.to_vec();
    bad.push(("csrf", "not-the-token"));
    let wrong = sre.post("/sre/alerts/silences", &bad).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(
        wrong.body.contains("does not belong to this session"),
        "{}",
        wrong.body
    );
    let silences = sre.get("/sre/alerts/silences.csv").await;
    assert_eq!(
        silences.body.lines().count(),
        1,
        "nothing created: {}",
        silences.body
    );
    let mut good = silence.to_vec();
    good.push(("csrf", token.as_str()));
    let created = sre.post("/sre/alerts/silences", &good).await;
    assert!(
        created.status == StatusCode::SEE_OTHER || created.status == StatusCode::OK,
        "{}: {}",
        created.status,
        created.body
    );
    let silences = sre.get("/sre/alerts/silences.csv").await;
    assert_eq!(silences.body.lines().count(), 2, "{}", silences.body);
    assert!(
        silences.body.contains("user:sre@acme.example"),
        "{}",
        silences.body
    );

    // Sign-out needs the token too, ends the session and clears the cookie.
    assert_eq!(sre.post("/logout", &[]).await.status, StatusCode::FORBIDDEN);
    let out = sre.post("/logout", &[("csrf", token.as_str())]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location, "/login");
    assert!(out.set_cookie.contains("Max-Age=0"), "{}", out.set_cookie);
    let after = sre.get("/sre/alerts").await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
    assert!(after.location.starts_with("/login"));
}

/// A person with a role in two orgs, asking one org for what only the
/// other role opens: a 403 naming the role that org's page needs (their
/// org switcher offers both orgs), not "no org" as if it did not exist;
/// an org they hold nothing in stays a 404.
#[tokio::test]
async fn another_role_in_an_org_is_named_not_hidden() {
    let mut env = TestEnv::new("signin_two").await;
    env.start_api().await;
    create_user(&env, "both@example.test", &["acme:finance", "globex:sre"]);
    let mut browser = Browser::new(env.direct_api_url());
    let ok = browser
        .sign_in("both@example.test", PASSWORD, "/finance/cost")
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    for (path, org, role) in [
        (
            "/finance/cost?org=globex",
            "globex",
            "admin or finance or viewer",
        ),
        (
            "/api/v1/reports/cost?org=globex",
            "globex",
            "admin or finance or viewer",
        ),
        ("/sre/latency?org=acme", "acme", "admin or sre"),
    ] {
        let answer = browser.get(path).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            answer.body
        );
        assert!(
            answer
                .body
                .contains(&format!("in org {org}: that needs role {role}")),
            "{path}: {}",
            answer.body
        );
    }
    for path in [
        "/finance/cost?org=initech",
        "/api/v1/reports/latency?org=initech",
    ] {
        let answer = browser.get(path).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("no org initech"),
            "{path}: {}",
            answer.body
        );
    }
    // Each role in its own org is served.
    for path in ["/finance/cost?org=acme", "/sre/latency?org=globex"] {
        assert_eq!(browser.get(path).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn repeated_failures_lock_the_account() {
    let mut env = TestEnv::new("lockout").await;
    env.start_api().await;
    create_user(&env, "ada@acme.example", &["acme:viewer"]);
    let mut browser = Browser::new(env.direct_api_url());
    for attempt in 1..=4 {
        let answer = browser
            .sign_in("ada@acme.example", "guess guess guess", "/")
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let fifth = browser
        .sign_in("ada@acme.example", "guess guess guess", "/")
        .await;
    assert_eq!(
        fifth.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        fifth.body
    );
    assert!(fifth.body.contains("locked until"), "{}", fifth.body);
    // Locked: the right password is refused too, and no session starts.
    let right = browser.sign_in("ada@acme.example", PASSWORD, "/").await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(browser.cookie.is_none());
    let list = env.run(&["users", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("ada@acme.example") && l.contains("locked")),
        "{list}"
    );

    // An address without an account gets exactly what an account gets, so
    // guessing tells nobody which addresses have one (a trial told them
    // apart after five tries: the account locked, the unknown one never).
    let mut stranger = Browser::new(env.direct_api_url());
    let answers: Vec<(StatusCode, String)> = {
        let mut out = Vec::new();
        for _ in 1..=6 {
            let a = stranger
                .sign_in("nobody@acme.example", "guess guess guess", "/")
                .await;
            out.push((a.status, alert_of(&a.body)));
        }
        out
    };
    let statuses: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(answers[0].1, "wrong email or password");
    assert!(
        answers[4]
            .1
            .starts_with("too many failed attempts: this account is locked until"),
        "{}",
        answers[4].1
    );

    // A disabled account tells a wrong password only what any address does.
    create_user(&env, "gone@acme.example", &["acme:viewer"]);
    env.run(&["users", "disable", "--email", "gone@acme.example"]);
    let guess = Browser::new(env.direct_api_url())
        .sign_in("gone@acme.example", "guess guess guess", "/")
        .await;
    assert_eq!(guess.status, StatusCode::UNAUTHORIZED, "{}", guess.body);
    assert_eq!(alert_of(&guess.body), "wrong email or password");
    let right = Browser::new(env.direct_api_url())
        .sign_in("gone@acme.example", PASSWORD, "/")
        .await;
    assert_eq!(right.status, StatusCode::FORBIDDEN, "{}", right.body);
}

/// The text of the sign-in page's alert.
fn alert_of(page: &str) -> String {
    page.split("role=\"alert\"")
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split('<').next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `tollgate users set-password` with the password on stdin; its stderr
/// and whether it succeeded.
fn set_password(env: &TestEnv, email: &str, password: &str) -> (bool, String) {
    with_password(
        env,
        &[
            "users",
            "set-password",
            "--email",
            email,
            "--password-stdin",
        ],
        password,
    )
}

/// Someone who lost their password gets a new one from an admin: the old
/// password and every session of the account stop working, a lockout is
/// lifted, a weak password or an unknown account is refused by name.
#[tokio::test]
async fn set_password_replaces_the_password_ends_sessions_and_lifts_a_lockout() {
    let mut env = TestEnv::new("setpw").await;
    env.start_api().await;
    create_user(&env, "ada@acme.example", &["acme:viewer"]);
    let mut signed_in = Browser::new(env.direct_api_url());
    let answer = signed_in.sign_in("ada@acme.example", PASSWORD, "/").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(signed_in.get("/overview").await.status, StatusCode::OK);
    // Locked by five wrong guesses.
    let mut guesser = Browser::new(env.direct_api_url());
    for _ in 0..5 {
        guesser
            .sign_in("ada@acme.example", "guess guess guess", "/")
            .await;
    }
    assert_eq!(
        guesser
            .sign_in("ada@acme.example", PASSWORD, "/")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let (ok, err) = set_password(&env, "ada@acme.example", "short");
    assert!(!ok, "a weak password is refused");
    assert!(err.contains("password"), "{err}");
    let (ok, err) = set_password(&env, "nobody@acme.example", "a new long passphrase");
    assert!(!ok);
    assert!(err.contains("no account for nobody@acme.example"), "{err}");
    let (ok, err) = set_password(&env, "ada@acme.example", "a new long passphrase");
    assert!(ok, "{err}");
    assert!(err.contains("password set, sessions ended"), "{err}");

    // The old session is over; the old password is refused; the new one
    // signs in at once (the lockout is lifted).
    let page = signed_in.get("/overview").await;
    assert_ne!(page.status, StatusCode::OK, "the old session still works");
    let mut fresh = Browser::new(env.direct_api_url());
    assert_eq!(
        fresh
            .sign_in("ada@acme.example", PASSWORD, "/")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let answer = fresh
        .sign_in("ada@acme.example", "a new long passphrase", "/")
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(fresh.get("/overview").await.status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_expire() {
    let mut env = TestEnv::with_extra_config(
        "expiry",
        "[auth]\nsecure_cookies = false\nsession_ttl_secs = 3\n",
    )
    .await;
    env.start_api().await;
    create_user(&env, "ada@acme.example", &["acme:finance"]);
    let mut browser = Browser::new(env.direct_api_url());
    let ok = browser
        .sign_in("ada@acme.example", PASSWORD, "/finance/cost")
        .await;
    assert!(ok.set_cookie.contains("Max-Age=3"), "{}", ok.set_cookie);
    assert_eq!(
        browser.get("/api/v1/finance/budgets").await.status,
        StatusCode::OK
    );
    // Polled with a deadline: the session ends however active it is.
    let deadline = Instant::now() + crate::support::PATIENCE;
    loop {
        let answer = browser.get("/api/v1/finance/budgets").await;
        if answer.status == StatusCode::UNAUTHORIZED {
            assert!(answer.body.contains("session has ended"), "{}", answer.body);
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let page = browser.get("/finance/cost").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.starts_with("/login?next="));
}

#[tokio::test]
async fn an_invitation_creates_an_account_once() {
    let mut env = TestEnv::new("invite").await;
    env.start_api().await;
    let path = invite(&env, "Grace@Globex.example", "globex:compliance");
    let mut browser = Browser::new(env.direct_api_url());
    let form = browser.get(&path).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("grace@globex.example"), "{}", form.body);
    assert!(form.body.contains("compliance in globex"), "{}", form.body);
    let short = browser
        .post_signed_out(&path, &[("display_name", "Grace"), ("password", "short")])
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(
        short.body.contains("password: must be at least 12"),
        "{}",
        short.body
    );
    let accepted = browser
        .post_signed_out(&path, &[("display_name", "Grace"), ("password", PASSWORD)])
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let token = accepted
        .set_cookie
        .strip_prefix("tollgate_session=")
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_string();
    browser.cookie = Some(token);
    assert_eq!(
        browser.get("/compliance/search").await.status,
        StatusCode::OK
    );
    assert_eq!(
        browser.get("/finance/cost").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        browser.get("/api/v1/audit/entries?org=acme").await.status,
        StatusCode::NOT_FOUND
    );
    // Once only.
    let mut again = Browser::new(env.direct_api_url());
    assert_eq!(again.get(&path).await.status, StatusCode::NOT_FOUND);
    let reuse = again
        .post_signed_out(&path, &[("display_name", "Eve"), ("password", PASSWORD)])
        .await;
    assert_eq!(reuse.status, StatusCode::NOT_FOUND);
    assert!(again.cookie.is_none() && !reuse.set_cookie.starts_with("tollgate_session="));
    // And the account signs in with the chosen password.
    let ok = again
        .sign_in("grace@globex.example", PASSWORD, "/compliance/search")
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
}

/// An invitation to an address that has an account is no way into it: it
/// asks for the account's current password, adds the access only with it,
/// never changes the password, and a wrong one uses nothing. (A trial
/// invited an admin of every org's address as an org admin, accepted it
/// with a password of its own, and was signed in as that admin.)
#[tokio::test]
async fn an_invitation_to_an_existing_account_needs_its_password_and_keeps_it() {
    let mut env = TestEnv::new("invite_existing").await;
    env.start_api().await;
    create_user(&env, "root@example.com", &["*:admin"]);
    let path = invite(&env, "root@example.com", "acme:viewer");
    let mut attacker = Browser::new(env.direct_api_url());
    let form = attacker.get(&path).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("Your current password"), "{}", form.body);
    assert!(!form.body.contains("display_name"), "{}", form.body);
    let chosen = "attacker-chosen-password";
    let refused = attacker
        .post_signed_out(&path, &[("display_name", "Mallory"), ("password", chosen)])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("already has an account: enter its current password"),
        "{}",
        refused.body
    );
    assert!(!refused.set_cookie.starts_with("tollgate_session="));
    // Nothing changed: the old password signs in, the chosen one does not,
    // and the invitation is still open.
    let mut owner = Browser::new(env.direct_api_url());
    let wrong = owner.sign_in("root@example.com", chosen, "/overview").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = owner
        .sign_in("root@example.com", PASSWORD, "/overview")
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(attacker.get(&path).await.status, StatusCode::OK);
    // With the account's password: the access is added, the password kept.
    let accepted = attacker
        .post_signed_out(
            &path,
            &[("display_name", "Mallory"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let people: serde_json::Value =
        serde_json::from_str(&env.run(&["users", "list", "--json"])).unwrap();
    let root = people
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == "root@example.com")
        .unwrap();
    assert_ne!(root["display_name"], "Mallory", "{root}");
    let grants = root["grants"].to_string();
    assert!(
        grants.contains("acme") && grants.contains("viewer"),
        "{root}"
    );
    let mut later = Browser::new(env.direct_api_url());
    let ok = later
        .sign_in("root@example.com", PASSWORD, "/overview")
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
}

/// Login CSRF: the sign-in and invitation forms carry a pre-session token
/// (double-submit: the `tollgate_login_csrf` cookie and the form's `csrf`
/// field). A post without the cookie, without the field or with another
/// value is a 403 page naming which, signs nobody in and uses no
/// invitation; the page's own form then works.
#[tokio::test]
async fn sign_in_and_invitation_forms_refuse_a_missing_or_forged_token() {
    let mut env = TestEnv::new("logincsrf").await;
    env.start_api().await;
    create_user(&env, "fin@acme.example", &["acme:finance"]);
    let credentials = [
        ("email", "fin@acme.example"),
        ("password", PASSWORD),
        ("next", "/finance/cost"),
    ];

    // The page sets the cookie and puts the same value in its form.
    let mut browser = Browser::new(env.direct_api_url());
    let page = browser.get("/login").await;
    assert_eq!(page.status, StatusCode::OK);
    let token = csrf_of(&page.body);
    assert_eq!(token.len(), 64, "{token}");
    assert_eq!(
        page.set_cookie,
        format!("tollgate_login_csrf={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=86400")
    );
    // Another visit of the same browser keeps its token.
    assert_eq!(csrf_of(&browser.get("/login").await.body), token);

    let refused = |answer: &Answer, reason: &str| {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert!(answer.body.contains(reason), "{reason}: {}", answer.body);
        assert!(
            !answer.set_cookie.starts_with("tollgate_session="),
            "{}",
            answer.set_cookie
        );
    };
    // A forged post from another site: no cookie (SameSite=Strict keeps it
    // home), with or without a field.
    let mut stranger = Browser::new(env.direct_api_url());
    let mut forged = credentials.to_vec();
    forged.push(("csrf", &token));
    refused(
        &stranger.post("/login", &credentials).await,
        "this browser sent no `tollgate_login_csrf` cookie",
    );
    refused(
        &Browser::new(env.direct_api_url())
            .post("/login", &forged)
            .await,
        "this browser sent no `tollgate_login_csrf` cookie",
    );
    // The refusal's page has a new form that works.
    let retry = stranger.post_signed_out("/login", &credentials).await;
    assert_eq!(retry.status, StatusCode::SEE_OTHER, "{}", retry.body);
    assert_eq!(retry.location, "/finance/cost");

    // The cookie, but no field; or a field with another value.
    refused(
        &browser.post("/login", &credentials).await,
        "token is missing from the form",
    );
    // Its last hex digit changed (one token in 16 already ends in 0).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &token[..63]);
    assert_ne!(tampered, token);
    let mut wrong = credentials.to_vec();
    wrong.push(("csrf", &tampered));
    refused(
        &browser.post("/login", &wrong).await,
        "token does not match this browser",
    );
    assert!(browser.cookie.is_none());
    let ok = browser
        .sign_in("fin@acme.example", PASSWORD, "/finance/cost")
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(
        browser.get("/finance/cost?org=acme").await.status,
        StatusCode::OK
    );

    // An invitation: a forged acceptance uses nothing; the page's form does.
    let path = invite(&env, "nia@acme.example", "acme:finance");
    let accept = [("display_name", "Nia"), ("password", PASSWORD)];
    let mut invited = Browser::new(env.direct_api_url());
    let forged = invited.post(&path, &accept).await;
    refused(&forged, "the invitation form");
    assert!(
        forged
            .body
            .contains("this browser sent no `tollgate_login_csrf` cookie"),
        "{}",
        forged.body
    );
    // Still open, with the form to accept it.
    assert!(forged.body.contains("nia@acme.example"), "{}", forged.body);
    let accepted = invited.post_signed_out(&path, &accept).await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    assert!(accepted.set_cookie.starts_with("tollgate_session="));
}
