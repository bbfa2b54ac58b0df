//! Provider credentials at rest (docs/proxy.md, "Provider credentials"):
//! stored with `tollgate providers set` or the admin API, sealed with
//! AES-256-GCM under the master key (the plaintext is nowhere in
//! PostgreSQL), used by the proxy for its calls to the mock upstream
//! (which answers 401 to any other key), reloaded when they change,
//! re-encrypted under a new master key while proxies serve a steady
//! stream of calls without one failing; a missing, malformed or wrong
//! master key and a literal `api_key` are refused with errors that name
//! them; the admin API and the logs never show a credential.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::proxy::{Proxy, UPSTREAM_KEY};
use crate::support::{self, TestEnv};

/// The provider whose credential is stored (the mock's key).
const STORED: &str = "mockstored";
/// A provider configured with no credential at first.
const BARE: &str = "mockbare";

/// `[proxy]` lines and tables for [`Proxy::start`]: the two providers
/// above, reloads every second, the master key from `key_file`.
fn proxy_config(key_file: &str) -> String {
    format!(
        r#"credentials_refresh_secs = 1

[secrets]
master_key_file = "{key_file}"

[proxy.providers.{STORED}]
kind = "openai"
base_url = "@MOCK@"
models = ["stored-*"]
max_retries = 0

[proxy.providers.{BARE}]
kind = "openai"
base_url = "@MOCK@"
models = ["bare-*"]
max_retries = 0
"#
    )
}

/// `tollgate providers generate-master-key --out <dir>/<name>`; the path
/// and the key id it printed.
fn generate_key(env: &TestEnv, dir: &std::path::Path, name: &str) -> (String, String) {
    let path = dir.join(name).display().to_string();
    let out = env.run(&["providers", "generate-master-key", "--out", &path]);
    let id = out
        .trim()
        .rsplit_once("(key id ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no key id in {out:?}"))
        .to_string();
    assert_eq!(id.len(), 16, "{out}");
    (path, id)
}

/// Run a `tollgate` command with `stdin` as its standard input.
fn run_with_stdin(mut cmd: Command, stdin: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input closes the pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// `tollgate providers set <provider> --stdin` with `credential`.
fn set_credential(env: &TestEnv, provider: &str, credential: &str) -> String {
    let out = run_with_stdin(
        env.tollgate(&["providers", "set", provider, "--stdin"]),
        &format!("{credential}\n"),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "providers set: {stderr}");
    assert!(!stdout.contains(credential) && !stderr.contains(credential));
    stdout
}

/// The fingerprint lists show: `sha256:` and 16 hex digits.
fn fingerprint(credential: &str) -> String {
    format!(
        "sha256:{}",
        &hex::encode(Sha256::digest(credential.as_bytes()))[..16]
    )
}

async fn pool(env: &TestEnv) -> sqlx::PgPool {
    sqlx::PgPool::connect(&env.pg_url).await.unwrap()
}

/// Every stored row: provider, key id, nonce, ciphertext.
async fn rows(env: &TestEnv) -> Vec<(String, String, Vec<u8>, Vec<u8>)> {
    sqlx::query_as(
        "SELECT provider, key_id, nonce, ciphertext FROM provider_credentials ORDER BY provider",
    )
    .fetch_all(&pool(env).await)
    .await
    .unwrap()
}

/// The status of one chat call through the proxy at `url` for `model`.
async fn chat_status(http: &reqwest::Client, url: &str, key: &str, model: &str) -> StatusCode {
    http.post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// Poll until a call for `model` answers `want` (a reload took effect).
async fn wait_status(proxy: &Proxy, key: &str, model: &str, want: StatusCode) {
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let got = chat_status(&proxy.http, &proxy.url(), key, model).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model}: still {got}, want {want}; proxy log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Another `tollgate proxy` on `port` with this environment's config,
/// its own spool and `vars`; its log is `<label>.log`.
fn spawn_proxy(proxy: &Proxy, label: &str, port: u16, vars: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(proxy.env.log_path(label)).unwrap();
    let mut cmd = proxy
        .env
        .tollgate(&["proxy", "--listen", &format!("127.0.0.1:{port}")]);
    cmd.env("TOLLGATE_KAFKA__BROKERS", &proxy.brokers)
        .env(
            "TOLLGATE_PROXY__SPOOL_DIR",
            proxy.env.dir.path().join(format!("spool-{label}")),
        )
        .env(crate::proxy::UPSTREAM_KEY_VAR, UPSTREAM_KEY)
        .env("RUST_LOG", "info");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Wait until `log_path` has a line containing `needle`.
async fn wait_log(log_path: &std::path::Path, needle: &str) {
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{log}",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn stored_credentials_are_sealed_and_the_proxy_calls_with_them() {
    let keys = tempfile::tempdir().unwrap();
    let bootstrap = TestEnv::new("provcred_keys").await;
    let (key_file, key_id) = generate_key(&bootstrap, keys.path(), "master.key");
    drop(bootstrap);
    let mut proxy = Proxy::start("provcred", &proxy_config(&key_file), None).await;

    let out = set_credential(&proxy.env, STORED, UPSTREAM_KEY);
    assert!(
        out.contains(&format!(
            "stored the credential of provider {STORED} (key id {key_id}, fingerprint {})",
            fingerprint(UPSTREAM_KEY)
        )),
        "{out}"
    );
    // What PostgreSQL holds: sealed under the key, a 96-bit nonce, the
    // ciphertext with its tag, and not the credential.
    let stored = rows(&proxy.env).await;
    assert_eq!(stored.len(), 1);
    let (provider, row_key, nonce, ciphertext) = &stored[0];
    assert_eq!(
        (provider.as_str(), row_key.as_str()),
        (STORED, key_id.as_str())
    );
    assert_eq!(nonce.len(), 12);
    assert_eq!(ciphertext.len(), UPSTREAM_KEY.len() + 16);
    let plain = UPSTREAM_KEY.as_bytes();
    assert!(!ciphertext.windows(plain.len()).any(|w| w == plain));
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM provider_credentials t")
            .fetch_one(&pool(&proxy.env).await)
            .await
            .unwrap();
    assert!(!dump.contains(UPSTREAM_KEY), "{dump}");
    assert!(!dump.contains(&hex::encode(plain)), "{dump}");
    // Storing the same credential again seals it with a fresh nonce.
    set_credential(&proxy.env, STORED, UPSTREAM_KEY);
    assert_ne!(&rows(&proxy.env).await[0].2, nonce);

    proxy.run_proxy().await;
    let key = proxy.key("acme", "search", "u1", None);
    // The stored credential reaches the mock (it answers 401 to any other).
    assert_eq!(
        chat_status(&proxy.http, &proxy.url(), &key, "stored-model").await,
        StatusCode::OK
    );
    // A provider with no credential is called without one: 401 upstream.
    assert_eq!(
        chat_status(&proxy.http, &proxy.url(), &key, "bare-model").await,
        StatusCode::UNAUTHORIZED
    );
    // Stored while the proxy runs: used without a restart (NOTIFY).
    set_credential(&proxy.env, BARE, UPSTREAM_KEY);
    wait_status(&proxy, &key, "bare-model", StatusCode::OK).await;
    // Removed: no longer used.
    let out = proxy.env.run(&["providers", "remove", BARE]);
    assert!(
        out.contains(&format!("removed the credential of provider {BARE}")),
        "{out}"
    );
    wait_status(&proxy, &key, "bare-model", StatusCode::UNAUTHORIZED).await;
    let err = proxy
        .env
        .tollgate(&["providers", "remove", BARE])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr)
            .contains(&format!("no credential stored for provider {BARE}")),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );

    // The list shows fingerprints and key ids, never a credential.
    let list: Value =
        serde_json::from_str(&proxy.env.run(&["providers", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["provider"], STORED);
    assert_eq!(list[0]["key_id"], key_id.as_str());
    assert_eq!(list[0]["fingerprint"], fingerprint(UPSTREAM_KEY).as_str());
    assert_eq!(list[0]["updated_by"], "cli");
    assert!(!list.to_string().contains(UPSTREAM_KEY));
    let table = proxy.env.run(&["providers", "list"]);
    assert!(
        table.contains(STORED) && !table.contains(UPSTREAM_KEY),
        "{table}"
    );

    // Every change is an admin event in the outbox, without the credential.
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event::text FROM admin_outbox ORDER BY id")
            .fetch_all(&pool(&proxy.env).await)
            .await
            .unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "admin.provider_credential.set",
            "admin.provider_credential.set",
            "admin.provider_credential.set",
            "admin.provider_credential.removed"
        ]
    );
    assert!(events.iter().all(|e| !e.contains(UPSTREAM_KEY)));
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["admin"]["provider"], STORED);
    assert_eq!(
        first["admin"]["fingerprint"],
        fingerprint(UPSTREAM_KEY).as_str()
    );

    // The proxy's log never shows it (the mock's key also reaches the other
    // test providers through api_key_env; none of it may be logged).
    let log = proxy.log();
    assert!(log.contains("provider credential from postgresql"), "{log}");
    assert!(!log.contains(UPSTREAM_KEY), "{log}");
}

#[tokio::test]
async fn rotating_the_master_key_under_steady_calls_fails_none() {
    let keys = tempfile::tempdir().unwrap();
    let bootstrap = TestEnv::new("provrot_keys").await;
    let (old_file, old_id) = generate_key(&bootstrap, keys.path(), "old.key");
    let (new_file, new_id) = generate_key(&bootstrap, keys.path(), "new.key");
    drop(bootstrap);
    let mut proxy = Proxy::start("provrot", &proxy_config(&old_file), None).await;
    set_credential(&proxy.env, STORED, UPSTREAM_KEY);
    set_credential(&proxy.env, BARE, UPSTREAM_KEY);
    // Proxy A holds the old key only; proxy B is already rolled out with
    // the new key and the old one as the previous.
    proxy.run_proxy().await;
    let port_b = support::free_port();
    let b = spawn_proxy(
        &proxy,
        "proxy-b",
        port_b,
        &[
            ("TOLLGATE_SECRETS__MASTER_KEY_FILE", new_file.as_str()),
            (
                "TOLLGATE_SECRETS__PREVIOUS_MASTER_KEY_FILE",
                old_file.as_str(),
            ),
        ],
    );
    proxy.children.push(b);
    let url_b = format!("http://127.0.0.1:{port_b}");
    support::wait_http(
        &format!("{url_b}/healthz"),
        support::PATIENCE,
        &proxy.env.log_path("proxy-b"),
    )
    .await;
    let key = proxy.key("acme", "search", "u1", None);

    // A steady stream of calls, alternating between the proxies and the
    // two providers, until told to stop.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let stream = {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        let urls = [proxy.url(), url_b.clone()];
        let (http, key) = (proxy.http.clone(), key.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.is_cancelled() {
                let model = if i.is_multiple_of(3) {
                    "bare-model"
                } else {
                    "stored-model"
                };
                let url = &urls[i % 2];
                let status = chat_status(&http, url, &key, model).await;
                if status == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed
                        .lock()
                        .unwrap()
                        .push(format!("{url} {model}: {status}"));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let wait_calls = |n: u64| {
        let ok = ok.clone();
        async move {
            let deadline = Instant::now() + support::PATIENCE;
            while ok.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "fewer than {n} calls succeeded");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_calls(30).await;

    let out = proxy
        .env
        .run(&["providers", "rotate-key", "--new-key-file", &new_file]);
    assert!(
        out.contains(&format!(
            "re-encrypted 2 provider credential(s) ({BARE}, {STORED}) from key id(s) {old_id} to key id {new_id} in one transaction"
        )),
        "{out}"
    );
    let after = rows(&proxy.env).await;
    assert!(after.iter().all(|r| r.1 == new_id), "{after:?}");
    // Proxy A reloaded, could not open the new rows and kept what it holds.
    wait_log(
        &proxy.env.log_path("proxy"),
        "keeping the credential this proxy holds",
    )
    .await;
    let at_rotation = ok.load(Ordering::Relaxed);
    wait_calls(at_rotation + 60).await;
    stop.cancel();
    stream.await.unwrap();
    let failures = failed.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) >= at_rotation + 60);

    // A credential changed under the new key reaches proxy B (it holds the
    // new key) and not proxy A (it keeps what it holds until restarted with
    // the new key): here a wrong one, so the mock tells them apart.
    let mut cmd = proxy.env.tollgate(&["providers", "set", BARE, "--stdin"]);
    cmd.env("TOLLGATE_SECRETS__MASTER_KEY_FILE", &new_file);
    let out = run_with_stdin(cmd, "sk-not-the-mocks-key\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + support::PATIENCE;
    while chat_status(&proxy.http, &url_b, &key, "bare-model").await != StatusCode::UNAUTHORIZED {
        assert!(
            Instant::now() < deadline,
            "proxy B never took the new credential"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        chat_status(&proxy.http, &proxy.url(), &key, "bare-model").await,
        StatusCode::OK
    );

    // A proxy started now with only the new key serves; one with only the
    // old key refuses to start, naming both key ids.
    let port_c = support::free_port();
    let c = spawn_proxy(
        &proxy,
        "proxy-c",
        port_c,
        &[("TOLLGATE_SECRETS__MASTER_KEY_FILE", new_file.as_str())],
    );
    proxy.children.push(c);
    let url_c = format!("http://127.0.0.1:{port_c}");
    support::wait_http(
        &format!("{url_c}/healthz"),
        support::PATIENCE,
        &proxy.env.log_path("proxy-c"),
    )
    .await;
    assert_eq!(
        chat_status(&proxy.http, &url_c, &key, "stored-model").await,
        StatusCode::OK
    );
    let old_only = proxy
        .env
        .tollgate(&["proxy", "--listen", "127.0.0.1:0"])
        .env("TOLLGATE_KAFKA__BROKERS", &proxy.brokers)
        .env(crate::proxy::UPSTREAM_KEY_VAR, UPSTREAM_KEY)
        .output()
        .unwrap();
    assert!(!old_only.status.success());
    let stderr = String::from_utf8_lossy(&old_only.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot decrypt provider {BARE}'s credential: wrong master key (the row is under key id {new_id}; this process holds key id {old_id})"
        )),
        "{stderr}"
    );
    for label in ["proxy", "proxy-b", "proxy-c"] {
        let log = std::fs::read_to_string(proxy.env.log_path(label)).unwrap();
        assert!(!log.contains(UPSTREAM_KEY), "{label}: {log}");
    }
}

#[tokio::test]
async fn missing_malformed_or_wrong_master_keys_and_literal_credentials_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let env = TestEnv::new("provkeys").await;
    let (key_file, key_id) = generate_key(&env, keys.path(), "master.key");
    let (other_file, other_id) = generate_key(&env, keys.path(), "other.key");
    let stderr_of = |mut cmd: Command| {
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // No master key: nothing can be stored.
    let out = run_with_stdin(
        env.tollgate(&["providers", "set", STORED, "--stdin"]),
        "sk-abc\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no master key: set TOLLGATE_MASTER_KEY (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`) or secrets.master_key_file (a file holding that text); needed to encrypt provider {STORED}'s credential")),
        "{stderr}"
    );
    // Malformed keys: not base64, wrong length, an unreadable file, both ways.
    let mut cmd = env.tollgate(&["providers", "list"]);
    cmd.env("TOLLGATE_MASTER_KEY", "not base64!");
    assert!(stderr_of(cmd).contains("TOLLGATE_MASTER_KEY is not a usable master key: not base64"));
    let mut cmd = env.tollgate(&["providers", "list"]);
    cmd.env("TOLLGATE_MASTER_KEY", "c2hvcnQ=");
    assert!(stderr_of(cmd).contains(
        "TOLLGATE_MASTER_KEY is not a usable master key: decodes to 5 bytes; a master key is exactly 32 bytes"
    ));
    let mut cmd = env.tollgate(&["providers", "list"]);
    cmd.env(
        "TOLLGATE_SECRETS__MASTER_KEY_FILE",
        "/nonexistent/master.key",
    );
    assert!(stderr_of(cmd).contains(
        "cannot read the master key file /nonexistent/master.key (secrets.master_key_file):"
    ));
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let mut cmd = env.tollgate(&["providers", "list"]);
    cmd.env("TOLLGATE_SECRETS__MASTER_KEY_FILE", &key_file)
        .env("TOLLGATE_MASTER_KEY", key_text.trim());
    assert!(stderr_of(cmd).contains(
        "both TOLLGATE_MASTER_KEY and secrets.master_key_file are set; give the master key one way only"
    ));
    // A bad credential is named and not repeated.
    let mut cmd = env.tollgate(&["providers", "set", STORED, "--stdin"]);
    cmd.env("TOLLGATE_MASTER_KEY", key_text.trim());
    let out = run_with_stdin(cmd, "sk abc\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid credential: must be visible ASCII characters only")
            && !stderr.contains("sk abc"),
        "{stderr}"
    );
    // Stored under one key (from the environment this time) ...
    let mut cmd = env.tollgate(&["providers", "set", STORED, "--from-env", "PROVIDER_SECRET"]);
    cmd.env("TOLLGATE_MASTER_KEY", key_text.trim())
        .env("PROVIDER_SECRET", "sk-from-env-1234");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... a proxy without a key, or with another, does not start.
    let proxy_config = format!(
        "[proxy]\nspool_dir = \"{}\"\n[proxy.providers.{STORED}]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"stored-*\"]\n",
        env.dir.path().join("spool").display()
    );
    let config_path = env.dir.path().join("proxy.toml");
    let base = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&config_path, format!("{base}\n{proxy_config}")).unwrap();
    let proxy_cmd = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(support::tollgate_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .args(["proxy", "--listen", "127.0.0.1:0"])
            .env_remove("TOLLGATE_CONFIG");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd
    };
    let stderr = stderr_of(proxy_cmd(&[]));
    assert!(
        stderr.contains("provider credentials: no master key: set TOLLGATE_MASTER_KEY")
            && stderr.contains(&format!(
                "needed to decrypt provider {STORED}'s stored credential (key id {key_id})"
            )),
        "{stderr}"
    );
    let stderr = stderr_of(proxy_cmd(&[(
        "TOLLGATE_SECRETS__MASTER_KEY_FILE",
        &other_file,
    )]));
    assert!(
        stderr.contains(&format!(
            "cannot decrypt provider {STORED}'s credential: wrong master key (the row is under key id {key_id}; this process holds key id {other_id})"
        )),
        "{stderr}"
    );
    // A row altered in place (its ciphertext moved onto another provider)
    // does not decrypt either.
    let pg = pool(&env).await;
    sqlx::query("INSERT INTO provider_credentials (provider, key_id, nonce, ciphertext, fingerprint, updated_by) SELECT 'moved', key_id, nonce, ciphertext, fingerprint, 'test' FROM provider_credentials WHERE provider = $1")
        .bind(STORED)
        .execute(&pg)
        .await
        .unwrap();
    let moved = std::fs::read_to_string(&config_path).unwrap()
        + "[proxy.providers.moved]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"moved-*\"]\n";
    std::fs::write(&config_path, moved).unwrap();
    let stderr = stderr_of(proxy_cmd(&[(
        "TOLLGATE_SECRETS__MASTER_KEY_FILE",
        &key_file,
    )]));
    assert!(
        stderr.contains(&format!("cannot decrypt provider moved's credential: authentication failed under key id {key_id} (the stored row was altered, or belongs to another provider)")),
        "{stderr}"
    );
    // A credential written in the configuration is refused, saying how to migrate.
    let stderr = stderr_of(proxy_cmd(&[
        ("TOLLGATE_SECRETS__MASTER_KEY_FILE", &key_file),
        (
            "TOLLGATE_PROXY__PROVIDERS__MOVED__API_KEY",
            "sk-literal-9876",
        ),
    ]));
    assert!(
        stderr.contains("proxy.providers.moved.api_key: a credential written in the configuration is refused (it would sit in plain text); store it encrypted with `tollgate providers set moved --stdin`"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-literal-9876"), "{stderr}");
}

#[tokio::test]
async fn the_admin_api_stores_credentials_and_never_returns_them() {
    const SECRET: &str = "sk-admin-api-0123456789abcdef";
    let keys = tempfile::tempdir().unwrap();
    let bootstrap = TestEnv::new("provapi_keys").await;
    let (key_file, key_id) = generate_key(&bootstrap, keys.path(), "master.key");
    drop(bootstrap);
    let mut env = TestEnv::with_extra_config(
        "provapi",
        &format!("[secrets]\nmaster_key_file = \"{key_file}\"\n"),
    )
    .await;
    env.start_api().await;
    let http = reqwest::Client::new();
    let base = env.api_url();
    let url = |path: &str| format!("{base}/api/v1/admin/providers{path}");

    let response = http
        .put(url("/openai"))
        .json(&json!({ "credential": SECRET }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(!body.contains(SECRET), "{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stored["provider"], "openai");
    assert_eq!(stored["key_id"], key_id.as_str());
    assert_eq!(stored["fingerprint"], fingerprint(SECRET).as_str());
    assert!(
        stored["updated_by"].as_str().unwrap().starts_with("key:"),
        "{stored}"
    );

    for path in ["", "/openai"] {
        let response = http.get(url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.text().await.unwrap();
        assert!(!body.contains(SECRET), "{body}");
        assert!(body.contains(&fingerprint(SECRET)), "{body}");
    }
    // Bad input names the field.
    let bad: Value = http
        .put(url("/openai"))
        .json(&json!({ "credential": "sk with spaces" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["field"], "credential", "{bad}");
    let response = http
        .put(url("/openai"))
        .json(&json!({ "api_key": SECRET }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bad: Value = response.json().await.unwrap();
    assert_eq!(bad["field"], "body", "{bad}");
    let response = http
        .put(url("/not%20a%20name"))
        .json(&json!({ "credential": SECRET }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // An admin of one org may not: credentials serve every org.
    let acme_admin = env.create_key_with_role("admin", Some("acme"));
    let response = http
        .get(format!("{}/api/v1/admin/providers", env.direct_api_url()))
        .bearer_auth(&acme_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("only an admin of every org manages them"),
        "{body}"
    );

    // The row is sealed; the outbox event has the fingerprint only.
    let pg = pool(&env).await;
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM provider_credentials t")
            .fetch_one(&pg)
            .await
            .unwrap();
    assert!(!dump.contains(SECRET) && dump.contains(&key_id), "{dump}");
    let events: Vec<String> = sqlx::query_scalar("SELECT event::text FROM admin_outbox")
        .fetch_all(&pg)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert!(!events[0].contains(SECRET) && events[0].contains(&fingerprint(SECRET)));

    let response = http.delete(url("/openai")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let removed: Value = response.json().await.unwrap();
    assert_eq!(removed["removed"]["provider"], "openai");
    let response = http.get(url("/openai")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let log = std::fs::read_to_string(env.log_path("api")).unwrap();
    assert!(log.contains("provider credential stored"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}
