//! The admin pages (`/admin/keys`, `/admin/budgets`, `/admin/prices`)
//! over HTTP against a spawned `tollgate api` with real PostgreSQL, Kafka
//! and ClickHouse: a key created on the page sends events to the ingest API
//! until it is revoked there (then 401), and its secret is shown once; a
//! budget created on the page hard-limits a team and the proxy refuses
//! the team's calls once it is spent, and serves them again once it is
//! deleted there; a key created on the page calls through the proxy until
//! it is revoked there; a budget form with a bad limit
//! names the field and creates nothing; a price version's reprice preview
//! counts exactly the calls and the cost difference `tollgate reprice`
//! then changes; a LiteLLM file imported through the page says what it
//! imported and what not; every table's CSV holds its rows. Form posts
//! without the session's CSRF token are refused.

use std::time::{Duration, Instant};

use reqwest::redirect::Policy;
use serde_json::{json, Value};

use crate::support::{self, d, TestEnv};

/// An HTTP client of the pages, signed in as a person (a session cookie)
/// or with an API key.
struct Pages {
    http: reqwest::Client,
    base: String,
    /// `Authorization` or `Cookie` header.
    credential: (&'static str, String),
}

const PASSWORD: &str = "correct horse battery";

/// A page's answer.
struct Answer {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Pages {
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    /// A program with API key `key`.
    fn new(env: &TestEnv, key: &str) -> Self {
        Self {
            http: Self::client(),
            base: env.direct_api_url(),
            credential: ("authorization", format!("Bearer {key}")),
        }
    }

    /// A person with `grant` (`*:admin`, `acme:admin`), signed in on the
    /// sign-in page.
    async fn person(env: &TestEnv, email: &str, grant: &str) -> Self {
        use std::io::Write;
        let mut child = env
            .tollgate(&[
                "users",
                "create",
                "--email",
                email,
                "--grant",
                grant,
                "--password-stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "users create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Signed in through the sign-in form (its pre-session token too).
        let mut browser = crate::sign_in::Browser::new(env.direct_api_url());
        let signed_in = browser.sign_in(email, PASSWORD, "/admin/keys").await;
        assert_eq!(signed_in.status, 303, "{}", signed_in.body);
        let session = format!("tollgate_session={}", browser.cookie.expect("signed in"));
        let http = Self::client();
        Self {
            http,
            base: env.direct_api_url(),
            credential: ("cookie", session),
        }
    }

    fn signed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header(self.credential.0, &self.credential.1)
    }

    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        Answer {
            status,
            location,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        Self::answer(self.signed(self.http.get(format!("{}{path}", self.base)))).await
    }

    /// `path`, which must answer 200.
    async fn page(&self, path: &str) -> String {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answer.body
    }

    /// The session's form token, from the keys page's form.
    async fn csrf(&self) -> String {
        let html = self.page("/admin/keys").await;
        hidden(&html, "csrf")
    }

    /// Post a form with the session's token.
    async fn form(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf().await;
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &csrf));
        self.form_as_is(path, &all).await
    }

    /// Post a form exactly as given (no token added).
    async fn form_as_is(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let request = self.http.post(format!("{}{path}", self.base)).form(fields);
        Self::answer(self.signed(request)).await
    }

    /// Post a multipart form: text fields and one file.
    async fn upload(&self, path: &str, fields: &[(&str, &str)], file: (&str, &str)) -> Answer {
        let boundary = "tollgate-test-boundary-7c1e4a52";
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/json\r\n\r\n{}\r\n--{boundary}--\r\n",
            file.0, file.1
        ));
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        Self::answer(self.signed(request)).await
    }

    /// A CSV download: its rows, header first.
    async fn csv(&self, path: &str) -> Vec<Vec<String>> {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(
            answer.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv"),
            "{path}"
        );
        csv_rows(&answer.body)
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.signed(self.http.request(method, format!("{}{path}", self.base)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The value of the first `<input name="name" value="...">`.
fn hidden(html: &str, name: &str) -> String {
    attribute_after(html, &format!("name=\"{name}\" value=\""))
}

/// The text from `marker` to the next `"`.
fn attribute_after(html: &str, marker: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"))
        + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_string()
}

/// The text of the element with `id`.
fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let len = html[open_end..].find('<').unwrap();
    html[open_end..open_end + len].trim().to_string()
}

/// Rows of a CSV (RFC 4180 quoting; no line breaks inside fields).
pub(crate) fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            let mut fields = vec![String::new()];
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        chars.next();
                        fields.last_mut().unwrap().push('"');
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => fields.push(String::new()),
                    (c, _) => fields.last_mut().unwrap().push(c),
                }
            }
            fields
        })
        .collect()
}

/// Text as the page escaped it, unescaped.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A `data:text/csv` link's CSV text.
fn data_url_csv(url: &str) -> String {
    let url = unescape(url);
    let encoded = url.strip_prefix("data:text/csv;charset=utf-8,").unwrap();
    let bytes = encoded.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&encoded[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

async fn admin_outbox_kinds(env: &TestEnv) -> Vec<(String, String)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&env.pg_url).await.unwrap();
    sqlx::query_as("SELECT event->>'kind', event->'admin'->>'actor' FROM admin_outbox ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

fn ingest_event(org: &str) -> Value {
    json!([{
        "schema_version": 1,
        "event_id": uuid::Uuid::now_v7(),
        "kind": "ai.call.completed",
        "occurred_at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "org_id": org,
        "team_id": "search",
        "user_id": "u-1",
        "call": {
            "call_id": format!("call-{}", uuid::Uuid::now_v7()),
            "provider": "openai", "model": "gpt-4o-mini", "operation": "chat",
            "duration_ms": 420, "usage": {"input_tokens": 100, "output_tokens": 20},
            "outcome": "success", "http_status": 200
        }
    }])
}

async fn send_event(env: &TestEnv, secret: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/events", env.ingest_url()))
        .bearer_auth(secret)
        .json(&ingest_event("acme"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_key_created_on_the_page_sends_events_until_it_is_revoked_there() {
    let mut env = TestEnv::new("admin_keys").await;
    crate::ingest_api::start_ingest(&mut env).await;
    env.start_api().await;
    let admin = Pages::person(&env, "root@example.com", "*:admin").await;
    let root_key = Pages::new(&env, &env.create_key_with_role("admin", None));

    // Only admins open the pages.
    let stranger = Pages::new(&env, "");
    let sign_in = stranger.get("/admin/keys").await;
    assert_eq!(sign_in.status, 303);
    assert_eq!(
        sign_in.location.as_deref(),
        Some("/login?next=%2Fadmin%2Fkeys")
    );
    let finance = Pages::new(&env, &env.create_key_with_role("finance", None));
    assert_eq!(finance.get("/admin/keys").await.status, 403);

    // Without the session's token nothing is created.
    let keys_before = admin.csv("/admin/keys.csv").await.len();
    let refused = admin
        .form_as_is(
            "/admin/keys",
            &[("name", "page-ingest"), ("role", "ingest"), ("org", "acme")],
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(admin.csv("/admin/keys.csv").await.len(), keys_before);

    // A refused field is named next to it, the form refilled.
    let bad = admin
        .form(
            "/admin/keys",
            &[("name", "page-ingest"), ("role", "boss"), ("org", "acme")],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        text_of(&bad.body, "role-error").contains("unknown role"),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("value=\"page-ingest\""));
    // A name with a NUL or an escape sequence is refused naming `name`
    // (the NUL was a 503 from PostgreSQL, the escape stored and printed
    // raw by `keys list`), on the page and through the API.
    for name in ["trial\u{0}nul", "trial\u{7}bell\u{1b}[31m"] {
        let bad = admin
            .form(
                "/admin/keys",
                &[("name", name), ("role", "ingest"), ("org", "acme")],
            )
            .await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        assert!(
            text_of(&bad.body, "name-error").contains("without control characters"),
            "{}",
            bad.body
        );
        let (status, body) = root_key
            .api(
                reqwest::Method::POST,
                "/api/v1/admin/keys",
                Some(serde_json::json!({"name": name, "role": "sre", "org_id": "acme"})),
            )
            .await;
        assert_eq!(
            (status, &body["field"]),
            (400, &Value::from("name")),
            "{body}"
        );
    }

    let created = admin
        .form(
            "/admin/keys",
            &[("name", "page-ingest"), ("role", "ingest"), ("org", "acme")],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.headers["cache-control"], "no-store");
    let secret = attribute_after(&created.body, "id=\"secret\" class=\"secret\" value=\"");
    let prefix = text_of(&created.body, "key-prefix");
    assert_eq!(&secret[3..11], prefix);

    // The secret works against the ingest API ...
    assert_eq!(send_event(&env, &secret).await, 200);
    // ... and is never shown or logged again.
    let list = admin.page("/admin/keys").await;
    assert!(list.contains(&prefix));
    assert!(!list.contains(&secret));
    for log in ["api", "ingest"] {
        let text = std::fs::read_to_string(env.log_path(log)).unwrap_or_default();
        assert!(!text.contains(&secret[12..]), "{log} log holds the secret");
    }
    let csv = admin.csv("/admin/keys.csv").await;
    assert_eq!(
        csv[0],
        ["name", "prefix", "org", "role", "created_at", "revoked_at"]
    );
    let row = csv.iter().find(|r| r[1] == prefix).unwrap();
    assert_eq!(
        &row[..4],
        ["page-ingest", prefix.as_str(), "acme", "ingest"]
    );
    assert_eq!(row[5], "");
    // The page shows the CSV's time in a `<time>` (the viewer's zone once
    // local-time.js ran; UTC without scripts).
    let created = chrono::DateTime::parse_from_rfc3339(&row[4]).unwrap();
    assert!(
        (chrono::Utc::now() - created.to_utc()).num_minutes().abs() < 30,
        "{row:?}"
    );
    // (`datetime` carries the milliseconds the CSV's second leaves out.)
    let at = list
        .find(&format!(
            r#"<time datetime="{}"#,
            row[4].trim_end_matches('Z')
        ))
        .unwrap_or_else(|| panic!("no <time> of {}: {list}", row[4]));
    let time = &list[at..at + list[at..].find("</time>").unwrap()];
    assert!(
        time.contains(&format!(
            r#" title="{}"#,
            created.format("%Y-%m-%d %H:%M:%S")
        )),
        "{time}"
    );

    // Revoke it on the page: a confirmation, then the post.
    let id = key_id(&admin, &prefix).await;
    let confirm = admin.page(&format!("/admin/keys/{id}/revoke")).await;
    assert!(confirm.contains(&format!("Revoke {prefix}")));
    let no_token = admin
        .form_as_is(&format!("/admin/keys/{id}/revoke"), &[])
        .await;
    assert_eq!(no_token.status, 403);
    assert_eq!(send_event(&env, &secret).await, 200);
    let revoked = admin.form(&format!("/admin/keys/{id}/revoke"), &[]).await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(revoked.location.as_deref(), Some("/admin/keys"));
    // Refused once the key's cached answer expires (`ingest.key_cache_secs`).
    let start = std::time::Instant::now();
    while send_event(&env, &secret).await != 401 {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "the revoked key was still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let csv = admin.csv("/admin/keys.csv").await;
    let row = csv.iter().find(|r| r[1] == prefix).unwrap();
    assert!(!row[5].is_empty(), "revoked_at: {row:?}");
    assert_eq!(
        admin.get(&format!("/admin/keys/{id}/revoke")).await.status,
        404
    );

    // The JSON API does the same for programs; an org's admin manages its
    // org's keys only.
    let acme_admin = Pages::new(&env, &env.create_key_with_role("admin", Some("acme")));
    let (status, body) = acme_admin
        .api(
            reqwest::Method::POST,
            "/api/v1/admin/keys",
            Some(json!({"name": "other-ingest", "role": "ingest", "org_id": "other"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = acme_admin
        .api(
            reqwest::Method::POST,
            "/api/v1/admin/keys",
            Some(json!({"name": "api-ingest", "role": "ingest", "org_id": "acme"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let api_secret = body["secret"].as_str().unwrap().to_string();
    assert_eq!(send_event(&env, &api_secret).await, 200);
    let (_, other) = root_key
        .api(
            reqwest::Method::POST,
            "/api/v1/admin/keys",
            Some(json!({"name": "other-ingest", "role": "ingest", "org_id": "other"})),
        )
        .await;
    let other_prefix = other["key"]["prefix"].as_str().unwrap().to_string();
    let (_, listed) = acme_admin
        .api(reqwest::Method::GET, "/api/v1/admin/keys", None)
        .await;
    let orgs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["org_id"].as_str().unwrap_or("all orgs"))
        .collect();
    assert!(
        !orgs.is_empty() && orgs.iter().all(|o| *o == "acme"),
        "{listed}"
    );
    assert!(!listed.to_string().contains("secret"));
    let acme_csv = acme_admin.csv("/admin/keys.csv").await;
    assert!(acme_csv[1..].iter().all(|r| r[2] == "acme"), "{acme_csv:?}");
    let (status, _) = acme_admin
        .api(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/keys/{other_prefix}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = acme_admin
        .api(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/keys/{}", &api_secret[3..11]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Refused once the key's cached answer expires (`ingest.key_cache_secs`).
    let start = std::time::Instant::now();
    while send_event(&env, &api_secret).await != 401 {
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "the revoked key was still accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The id of the key with `prefix`, as the admin API lists it.
async fn key_id(admin: &Pages, prefix: &str) -> String {
    let (status, keys) = admin
        .api(reqwest::Method::GET, "/api/v1/admin/keys", None)
        .await;
    assert_eq!(status, 200, "{keys}");
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix)
        .unwrap_or_else(|| panic!("no key {prefix} in {keys}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Prices of the proxy's `mock-race` model: $0.000001 per input token,
/// $0.0001 per output token.
const RACE_PRICES: &str = r#"{"mock-race": {"litellm_provider": "mockai", "effective_from": "2025-01-01T00:00:00Z",
    "input_cost_per_token": 1e-06, "output_cost_per_token": 0.0001}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_created_on_the_page_stops_the_teams_calls_at_the_proxy() {
    let mut proxy = crate::proxy::Proxy::start("admin_budget_proxy", "", None).await;
    let prices = proxy.env.dir.path().join("race_prices.json");
    std::fs::write(&prices, RACE_PRICES).unwrap();
    proxy
        .env
        .run(&["prices", "import", prices.to_str().unwrap()]);
    proxy.env.start_api().await;
    let admin = Pages::person(&proxy.env, "root@example.com", "*:admin").await;

    // A bad limit: the field's error next to it, the form refilled,
    // nothing created.
    let bad = admin
        .form(
            "/admin/budgets/new",
            &[
                ("subject_kind", "team"),
                ("subject_id", "paged"),
                ("period", "daily"),
                ("limit_usd", "-5"),
                ("enforcement", "hard"),
                ("thresholds", "50, 80, 100"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    let reason = text_of(&bad.body, "limit_usd-error");
    assert!(reason.contains("negative"), "{reason}");
    assert!(bad
        .body
        .contains("aria-invalid=\"true\" aria-describedby=\"limit_usd-error\""));
    assert!(bad.body.contains("value=\"-5\""));
    assert!(bad.body.contains("value=\"paged\""));
    let bad = admin
        .form(
            "/admin/budgets/new",
            &[
                ("subject_kind", "team"),
                ("subject_id", "paged"),
                ("period", "daily"),
                ("limit_usd", "1"),
                ("enforcement", "hard"),
                ("thresholds", "50, lots"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(text_of(&bad.body, "thresholds-error").contains("lots"));
    assert_eq!(
        admin.csv("/admin/budgets.csv").await.len(),
        1,
        "header only"
    );

    let created = admin
        .form(
            "/admin/budgets/new",
            &[
                ("org_id", "acme"),
                ("org_id", "acme"),
                ("subject_kind", "team"),
                ("subject_id", "paged"),
                ("period", "daily"),
                ("limit_usd", "0.001"),
                ("enforcement", "hard"),
                ("thresholds", "80"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let csv = admin.csv("/admin/budgets.csv").await;
    assert_eq!(
        csv[0],
        [
            "id",
            "org_id",
            "subject_kind",
            "subject_id",
            "period",
            "limit_usd",
            "enforcement",
            "thresholds"
        ]
    );
    assert_eq!(
        &csv[1][1..],
        [
            "acme",
            "team",
            "paged",
            "daily",
            "0.001000000000",
            "hard",
            "80"
        ]
    );
    let id = csv[1][0].clone();

    // The watcher publishes the budget; the proxy spends it and refuses.
    proxy.env.spawn("process", &["process"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !crate::proxy::read_decisions(&proxy.brokers, &proxy.env.decisions_topic)
        .contains_key("budget/in/acme/team/paged")
    {
        assert!(Instant::now() < deadline, "no budget decision published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.run_proxy().await;
    let key = proxy.key("acme", "paged", "pager", None);
    let other = proxy.key("acme", "unbudgeted", "free", None);
    // Another org's team of the same id: acme's budget is not its.
    let namesake = proxy.key("globex", "paged", "namesake", None);
    let (admitted, answer) = proxy.admitted_until_refused(&key, "mock-race").await;
    assert_eq!(answer["error"]["code"], "budget_exceeded", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team paged of org acme"),
        "{answer}"
    );
    // Each call reserves about $0.0003 (3 output tokens at $0.0001).
    assert!((1..=4).contains(&admitted), "{admitted} calls admitted");
    assert_eq!(proxy.chat(&other, "mock-race", &[]).await.status(), 200);
    for _ in 0..3 {
        assert_eq!(proxy.chat(&namesake, "mock-race", &[]).await.status(), 200);
    }

    // Raising the limit on the edit page lets the team call again.
    let edit = admin.page(&format!("/admin/budgets/{id}/edit")).await;
    assert!(edit.contains("value=\"0.001\""), "{edit}");
    let set_limit = |limit: &'static str| {
        let (admin, path) = (&admin, format!("/admin/budgets/{id}/edit"));
        async move {
            let saved = admin
                .form(
                    &path,
                    &[
                        ("limit_usd", limit),
                        ("enforcement", "hard"),
                        ("thresholds", "80"),
                    ],
                )
                .await;
            assert_eq!(saved.status, 303, "{}", saved.body);
        }
    };
    // Polled: the change reaches the proxy through the decisions topic.
    let until = |want: u16, what: &'static str| {
        let (proxy, key) = (&proxy, &key);
        async move {
            let deadline = Instant::now() + crate::support::PATIENCE;
            while proxy.chat(key, "mock-race", &[]).await.status() != want {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    set_limit("100").await;
    // Money in the CSV with all 12 decimals; the page reads $100.00 with
    // the CSV's value on hover.
    let limit = admin.csv("/admin/budgets.csv").await[1][5].clone();
    assert_eq!(limit, "100.000000000000");
    let list = admin.page("/admin/budgets").await;
    assert!(
        list.contains(&format!(
            r#"<span class="money" title="{limit}">$100.00</span>"#
        )),
        "{list}"
    );
    until(200, "still refused after the raise").await;

    // Lowered again below what was spent: refused again.
    set_limit("0.001").await;
    until(429, "still admitted after the lowering").await;

    // Delete it: a confirmation, then the post; the proxy serves the team
    // again once the deletion reached it.
    let confirm = admin.page(&format!("/admin/budgets/{id}/delete")).await;
    assert!(confirm.contains("team paged"));
    let deleted = admin
        .form(&format!("/admin/budgets/{id}/delete"), &[])
        .await;
    assert_eq!(deleted.status, 303);
    assert_eq!(admin.csv("/admin/budgets.csv").await.len(), 1);
    until(200, "still refused after the deletion").await;

    // A key made on the page calls through the proxy until it is revoked
    // on the page; then the proxy refuses it (401) once its cached answer
    // expires (`proxy.key_cache_secs`).
    let created = admin
        .form(
            "/admin/keys",
            &[("name", "page-proxy"), ("role", "proxy"), ("org", "acme")],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = attribute_after(&created.body, "id=\"secret\" class=\"secret\" value=\"");
    let prefix = text_of(&created.body, "key-prefix");
    let answered = proxy.chat(&secret, "mock-race", &[]).await;
    assert_eq!(answered.status(), 200, "{:?}", answered.text().await);
    let key_id = key_id(&admin, &prefix).await;
    let revoked = admin
        .form(&format!("/admin/keys/{key_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    let deadline = Instant::now() + crate::support::PATIENCE;
    loop {
        let response = proxy.chat(&secret, "mock-race", &[]).await;
        if response.status() == 401 {
            break;
        }
        assert_eq!(
            response.status(),
            200,
            "neither served nor refused as revoked"
        );
        assert!(
            Instant::now() < deadline,
            "the revoked key was still accepted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each change went through the outbox as the API's do, naming the admin.
    let actor = "user:root@example.com".to_string();
    let events: Vec<(String, String)> = admin_outbox_kinds(&proxy.env)
        .await
        .into_iter()
        .filter(|(kind, _)| kind.starts_with("admin.budget.") && kind != "admin.budget.threshold")
        .collect();
    assert_eq!(
        events,
        [
            ("admin.budget.set".to_string(), actor.clone()),
            ("admin.budget.set".to_string(), actor.clone()),
            ("admin.budget.set".to_string(), actor.clone()),
            ("admin.budget.deleted".to_string(), actor),
        ]
    );
}

/// Three `tg-page` calls in March 2026 (and one of another model), priced
/// at $0.000001 per input and $0.000002 per output token.
async fn priced_calls(env: &mut TestEnv) {
    use chrono::{TimeZone, Utc};
    use support::events::{call_event, usage};
    let path = env.dir.path().join("page_prices.json");
    std::fs::write(
        &path,
        r#"{"tg-page": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                        "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
            "tg-other": {"litellm_provider": "testprov", "effective_from": "2026-03-01T00:00:00Z",
                        "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
    )
    .unwrap();
    env.run(&["prices", "import", path.to_str().unwrap()]);
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 3, d, 10, 0, 0).unwrap();
    let ok = tollgate_contract::Outcome::Success;
    let events = vec![
        call_event(
            "a",
            "testprov",
            "tg-page",
            day(5),
            usage(1000, 0, 0, 500, 0),
            ok,
        ),
        call_event(
            "a",
            "testprov",
            "tg-page",
            day(6),
            usage(200, 0, 0, 0, 0),
            ok,
        ),
        call_event(
            "b",
            "testprov",
            "tg-page",
            day(7),
            usage(1000, 0, 0, 0, 0),
            ok,
        ),
        call_event(
            "a",
            "testprov",
            "tg-other",
            day(7),
            usage(1000, 0, 0, 0, 0),
            ok,
        ),
    ];
    env.process_events(&events).await;
    env.wait_for_cost_rollup().await;
}

#[tokio::test]
async fn a_price_versions_preview_is_what_reprice_then_changes() {
    let mut env = TestEnv::new("admin_prices").await;
    priced_calls(&mut env).await;
    env.start_api().await;
    let admin = Pages::person(&env, "root@example.com", "*:admin").await;
    let root_key = Pages::new(&env, &env.create_key_with_role("admin", None));

    let catalog = admin.page("/admin/prices").await;
    assert!(catalog.contains("testprov / tg-page"));
    let before = admin.csv("/admin/prices.csv").await;
    assert_eq!(
        &before[0][..5],
        ["id", "provider", "model", "effective_from", "in_force"]
    );
    let form = admin
        .page("/admin/prices/new?provider=testprov&model=tg-page")
        .await;
    assert!(
        form.contains("name=\"input_per_token\" value=\"0.000001\""),
        "{form}"
    );

    // An admin of one org sees the catalog but changes nothing of it: it
    // sets every org's costs (a trial's acme admin added versions through
    // these pages; the admin API refused them).
    let org_admin = Pages::person(&env, "acme-admin@example.com", "acme:admin").await;
    let seen = org_admin.page("/admin/prices").await;
    // Signed-in answers are neither framed, sniffed, nor kept by caches
    // (a trial found none of these headers); the gate's refusals too.
    for path in ["/admin/prices", "/admin/prices.csv", "/admin/prices/new"] {
        let answer = org_admin.get(path).await;
        for (name, value) in [
            ("x-frame-options", "DENY"),
            ("content-security-policy", "frame-ancestors 'none'"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(
                answer.headers.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{path}: {name}"
            );
        }
    }
    assert!(seen.contains("testprov / tg-page"), "{seen}");
    assert!(!seen.contains("/admin/prices/new"), "{seen}");
    assert!(seen.contains("an admin of every org changes it"), "{seen}");
    let save = [
        ("provider", "testprov"),
        ("model", "tg-page"),
        ("effective_from", "2026-03-01T00:00:00Z"),
        ("input_per_token", "0.5"),
        ("output_per_token", "0.5"),
        ("action", "save"),
    ];
    for answer in [
        org_admin.get("/admin/prices/new").await,
        org_admin.get("/admin/prices/import").await,
        org_admin.form("/admin/prices/new", &save).await,
    ] {
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(
            answer.body.contains("needs role admin in every org"),
            "{}",
            answer.body
        );
    }
    assert_eq!(
        admin.csv("/admin/prices.csv").await,
        before,
        "nothing saved"
    );

    let mut fields = vec![
        ("provider", "testprov"),
        ("model", "tg-page"),
        ("effective_from", "2026-03-01T00:00:00Z"),
        ("input_per_token", "0.0000015"),
        ("output_per_token", "0.000002"),
        ("note", "vendor invoice correction"),
    ];
    // A price that is not a decimal is named like the API names it.
    let mut bad = fields.clone();
    bad[3] = ("input_per_token", "1e-6");
    bad.push(("action", "preview"));
    let refused = admin.form("/admin/prices/new", &bad).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("id=\"input_per_token-error\""),
        "{}",
        refused.body
    );
    let (status, api) = root_key
        .api(
            reqwest::Method::POST,
            "/api/v1/admin/prices",
            Some(json!({"provider": "testprov", "model": "tg-page",
                        "effective_from": "2026-03-01T00:00:00Z", "input_per_token": "1e-6"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(api["field"], "input_per_token");
    assert_eq!(
        unescape(&text_of(&refused.body, "input_per_token-error")),
        api["error"]
            .as_str()
            .unwrap()
            .strip_prefix("invalid field `input_per_token`: ")
            .unwrap()
    );

    // The preview: three calls, +0.0005 + 0.0001 + 0.0005.
    fields.push(("action", "preview"));
    let preview = admin.form("/admin/prices/new", &fields).await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert_eq!(text_of(&preview.body, "calls-examined"), "3");
    assert_eq!(text_of(&preview.body, "calls-changed"), "3");
    assert_eq!(text_of(&preview.body, "calls-cost-changed"), "3");
    let delta = text_of(&preview.body, "cost-delta");
    assert_eq!(delta, "0.001100000000");
    let csv_link = attribute_after(&preview.body, "download=\"reprice-preview.csv\" href=\"");
    let csv = data_url_csv(&csv_link);
    assert!(csv.ends_with(",3,3,3,0.001100000000\n"), "{csv}");
    // It reaches back into ended months, whose statements would change.
    let ended = text_of(&preview.body, "ended-months");
    assert!(
        ended.contains("months that have ended (2026-03 to "),
        "{ended}"
    );
    // A version that takes effect later reprices nothing, and says so.
    let mut later = fields.clone();
    later[2] = ("effective_from", "2099-01-01T00:00:00Z");
    let later = admin.form("/admin/prices/new", &later).await;
    assert_eq!(later.status, 200, "{}", later.body);
    assert!(
        text_of(&later.body, "takes-effect-later")
            .contains("takes effect at 2099-01-01T00:00:00Z, later than now"),
        "{}",
        later.body
    );
    assert!(!later.body.contains("tollgate reprice"), "{}", later.body);
    assert_eq!(
        admin.csv("/admin/prices.csv").await,
        before,
        "nothing saved"
    );

    // Save, then reprice: exactly what the preview said.
    fields.pop();
    fields.push(("action", "save"));
    let saved = admin.form("/admin/prices/new", &fields).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let location = saved.location.unwrap();
    let id = location
        .strip_prefix("/admin/prices?added=")
        .unwrap()
        .to_string();
    let after = admin.csv("/admin/prices.csv").await;
    assert_eq!(after.len(), before.len() + 1);
    let row = after.iter().find(|r| r[0] == id).unwrap();
    assert_eq!(
        &row[1..7],
        [
            "testprov",
            "tg-page",
            "2026-03-01T00:00:00Z",
            "yes",
            "0.0000015",
            "0.000002"
        ]
    );
    let catalog = admin.page(&location).await;
    assert!(catalog.contains(&format!("Version {id} added")));
    // The version's row: its time in a `<time>`, prices per million tokens
    // with the CSV's exact per-token price on hover.
    let at = catalog
        .find(&format!("<td>{id}</td>"))
        .unwrap_or_else(|| panic!("no row {id}: {catalog}"));
    let row = &catalog[at..at + catalog[at..].find("</tr>").unwrap()];
    assert!(
        row.contains(r#"<time datetime="2026-03-01T00:00:00Z" title="2026-03-01 00:00:00 UTC">"#),
        "{row}"
    );
    assert!(
        row.contains(r#"<span class="money" title="0.0000015 per token">$1.50 / M</span>"#),
        "{row}"
    );
    assert!(
        row.contains(r#"<span class="money" title="0.000002 per token">$2.00 / M</span>"#),
        "{row}"
    );
    let to = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = env.run(&[
        "reprice",
        "--provider",
        "testprov",
        "--model",
        "tg-page",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        &to,
    ]);
    let repriced = out
        .split("3 call(s) changed, cost change ")
        .nth(1)
        .and_then(|rest| rest.split(" USD").next())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(d(repriced), d(&delta), "{out}");
    // Once repriced, the same version changes nothing.
    fields.pop();
    fields.push(("action", "preview"));
    let again = admin.form("/admin/prices/new", &fields).await;
    assert_eq!(text_of(&again.body, "calls-changed"), "0");
    assert_eq!(d(&text_of(&again.body, "cost-delta")), d("0"));
    let events: Vec<String> = admin_outbox_kinds(&env)
        .await
        .into_iter()
        .filter(|(_, actor)| actor == "user:root@example.com")
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(events, ["admin.price.corrected"]);
}

#[tokio::test]
async fn a_litellm_file_imported_on_the_page_says_what_was_not_imported() {
    let mut env = TestEnv::new("admin_import").await;
    env.start_api().await;
    let admin = Pages::person(&env, "root@example.com", "*:admin").await;
    let file = r#"{
      "sample_spec": {"input_cost_per_token": 0},
      "tg-imp": {"litellm_provider": "testprov", "effective_from": "2026-02-01T00:00:00Z",
                 "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                 "input_cost_per_character": 1e-07},
      "tg-tiered": {"litellm_provider": "testprov", "input_cost_per_token": 1e-06,
                    "tiered_pricing": [{"range": [0, 1000], "input_cost_per_token": 1e-06}]},
      "tg-free": {"litellm_provider": "testprov", "max_tokens": 100}
    }"#;
    let page = admin.page("/admin/prices/import").await;
    // An upload carries the session's token in the form's action.
    let action = format!(
        "/admin/prices/import?csrf={}",
        unescape(&attribute_after(
            &page,
            "action=\"/admin/prices/import?csrf="
        ))
    );
    assert!(action.starts_with("/admin/prices/import?csrf="), "{action}");
    let no_token = admin
        .upload("/admin/prices/import", &[], ("prices.json", file))
        .await;
    assert_eq!(no_token.status, 403);
    let not_json = admin.upload(&action, &[], ("prices.json", "{")).await;
    assert_eq!(not_json.status, 400);
    assert!(text_of(&not_json.body, "form-error").contains("Not imported"));

    let imported = admin
        .upload(
            &action,
            &[("effective_from", "2026-01-01T00:00:00Z")],
            ("prices.json", file),
        )
        .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    let added_csv = data_url_csv(&attribute_after(
        &imported.body,
        "download=\"imported.csv\" href=\"",
    ));
    let added = csv_rows(&added_csv);
    assert_eq!(added.len(), 2, "{added_csv}");
    assert_eq!(
        &added[1][1..],
        [
            "testprov",
            "tg-imp",
            "2026-02-01T00:00:00Z",
            "0.0000025",
            "0.00001"
        ]
    );
    let not_csv = data_url_csv(&attribute_after(
        &imported.body,
        "download=\"not-imported.csv\" href=\"",
    ));
    let not = csv_rows(&not_csv);
    assert_eq!(not[0], ["entry", "key", "reason"]);
    assert!(
        not.contains(&vec![
            "tg-imp".to_string(),
            "input_cost_per_character".to_string(),
            "entry imported without this price".to_string()
        ]),
        "{not_csv}"
    );
    assert!(
        not.iter()
            .any(|r| r[0] == "tg-tiered" && r[2].starts_with("entry refused")),
        "{not_csv}"
    );
    assert!(
        imported.body.contains("tg-free"),
        "skipped entries are named"
    );
    let catalog = admin.csv("/admin/prices.csv").await;
    assert!(
        catalog
            .iter()
            .any(|r| r[2] == "tg-imp" && r[13].is_empty() && r[14] == "import:prices.json"),
        "{catalog:?}"
    );

    // The same file again adds nothing.
    let again = admin
        .upload(
            &action,
            &[("effective_from", "2026-01-01T00:00:00Z")],
            ("prices.json", file),
        )
        .await;
    assert_eq!(again.status, 200);
    assert!(
        again.body.contains("0 version(s) added, 1 unchanged"),
        "{}",
        again.body
    );
}

#[tokio::test]
async fn an_org_admin_sees_and_changes_only_its_orgs_budgets_and_keys() {
    let mut env = TestEnv::new("admin_orgs").await;
    env.start_api().await;
    let root = Pages::person(&env, "root@example.com", "*:admin").await;
    let acme = Pages::person(&env, "ada@acme.example", "acme:admin").await;
    let budget = |org: &'static str, team: &'static str| {
        [
            ("org_id", org),
            ("subject_kind", "team"),
            ("subject_id", team),
            ("period", "monthly"),
            ("limit_usd", "250.50"),
            ("enforcement", "soft"),
            ("thresholds", "50, 100"),
        ]
    };
    for (org, team) in [("acme", "search"), ("globex", "ads")] {
        let created = root.form("/admin/budgets/new", &budget(org, team)).await;
        assert_eq!(created.status, 303, "{}", created.body);
    }
    let all = root.csv("/admin/budgets.csv").await;
    assert_eq!(all.len(), 3);
    let globex_id = all.iter().find(|r| r[1] == "globex").unwrap()[0].clone();

    // Ada sees acme's budget only, and another org's is not there at all.
    let mine = acme.csv("/admin/budgets.csv").await;
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(
        &mine[1][1..],
        [
            "acme",
            "team",
            "search",
            "monthly",
            "250.500000000000",
            "soft",
            "50, 100"
        ]
    );
    for path in [
        format!("/admin/budgets/{globex_id}/edit"),
        format!("/admin/budgets/{globex_id}/delete"),
    ] {
        assert_eq!(acme.get(&path).await.status, 404, "{path}");
    }
    assert_eq!(
        acme.form(&format!("/admin/budgets/{globex_id}/delete"), &[])
            .await
            .status,
        404
    );
    assert_eq!(root.csv("/admin/budgets.csv").await.len(), 3);
    // Her new budgets are acme's: another org is refused by name.
    let refused = acme
        .form("/admin/budgets/new", &budget("globex", "ml"))
        .await;
    assert_eq!(refused.status, 400);
    assert!(text_of(&refused.body, "org_id-error").contains("no org globex"));
    let created = acme.form("/admin/budgets/new", &budget("", "ml")).await;
    assert_eq!(created.status, 303, "{}", created.body);
    let mine = acme.csv("/admin/budgets.csv").await;
    assert!(
        mine.iter().any(|r| r[1] == "acme" && r[3] == "ml"),
        "{mine:?}"
    );
    // The price catalog is not an org's: admins of some orgs read it.
    assert_eq!(acme.get("/admin/prices").await.status, 200);

    // Keys: a key of every org is not hers to create; acme's are.
    let refused = acme
        .form(
            "/admin/keys",
            &[("name", "k"), ("role", "ingest"), ("org", "")],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(text_of(&refused.body, "org-error").contains("required"));
    let created = acme
        .form(
            "/admin/keys",
            &[("name", "k"), ("role", "ingest"), ("org", "acme")],
        )
        .await;
    assert_eq!(created.status, 201);
    let created = root
        .form(
            "/admin/keys",
            &[("name", "g"), ("role", "ingest"), ("org", "globex")],
        )
        .await;
    assert_eq!(created.status, 201);
    let keys = acme.csv("/admin/keys.csv").await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[1][2], "acme");
    let all = root.csv("/admin/keys.csv").await;
    assert!(
        all.iter().any(|r| r[0] == "g" && r[2] == "globex"),
        "{all:?}"
    );
    assert!(all.iter().any(|r| r[0] == "k" && r[2] == "acme"), "{all:?}");
}

/// The pages in headless Chromium (through the signed-in forwarder, as an
/// admin of every org): the navigation's Admin area, each table and its
/// CSV link, the budget form's fields with their labels.
#[tokio::test]
async fn admin_pages_render_in_chromium() {
    use crate::support::chromium::{run_chromium, screenshot};
    let mut env = TestEnv::new("admin_chromium").await;
    env.start_api().await;
    let root = Pages::person(&env, "root@example.com", "*:admin").await;
    let created = root
        .form(
            "/admin/budgets/new",
            &[
                ("org_id", "acme"),
                ("subject_kind", "team"),
                ("subject_id", "search"),
                ("period", "monthly"),
                ("limit_usd", "1234.5"),
                ("enforcement", "hard"),
                ("thresholds", "80"),
            ],
        )
        .await;
    assert_eq!(created.status, 303);
    for (path, wants) in [
        (
            "/admin/keys",
            &[
                "id=\"keys-table\"",
                "href=\"/admin/keys.csv\"",
                "Create key",
            ][..],
        ),
        (
            "/admin/budgets",
            &[
                "id=\"budgets-table\"",
                "<td>search</td>",
                "1234.5",
                "href=\"/admin/budgets.csv\"",
            ][..],
        ),
        (
            "/admin/budgets/new",
            &["name=\"limit_usd\"", "Limit (USD)", "name=\"thresholds\""][..],
        ),
        (
            "/admin/prices",
            &[
                "Price catalog",
                "href=\"/admin/prices.csv\"",
                "Import a LiteLLM file",
            ][..],
        ),
    ] {
        let url = format!("{}{path}", env.api_url());
        let profile = tempfile::tempdir().unwrap();
        let dom = {
            let (url, profile) = (url.clone(), profile.path().to_path_buf());
            tokio::task::spawn_blocking(move || run_chromium(&url, &profile, &["--dump-dom"]))
                .await
                .unwrap()
        };
        assert!(dom.status.success());
        let dom = String::from_utf8(dom.stdout).unwrap();
        assert!(
            dom.contains(">Admin<"),
            "{path}: no Admin area in the navigation\n{dom}"
        );
        for want in wants {
            assert!(dom.contains(want), "{path}: no {want}\n{dom}");
        }
        let shot = format!("admin{}.png", path.replace('/', "_"));
        screenshot(&url, &shot).await;
    }
}
