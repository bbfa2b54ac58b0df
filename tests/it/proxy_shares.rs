//! Many proxies (issue 18, part 3): three `tollgate proxy` processes share
//! a small hard budget through their memberships in PostgreSQL and a
//! tokens-per-minute limit through the claims pool (`rate_limit_windows`),
//! under 64 concurrent clients; one is killed (SIGKILL) midway and its
//! share comes back to the others after its lease expires; a proxy that
//! joins shrinks the others' shares. Requests-per-minute limits hold
//! exactly across the three, whether every call reaches one proxy or the
//! limit is below the number of proxies. The mock upstream is the only
//! stand-in; Kafka (the cluster's three brokers when
//! `TOLLGATE_TEST_CLUSTER_KAFKA` is set), PostgreSQL and the processor are
//! real. `docs/cost.md`, "Shares among proxies", states the bounds checked.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::proxy::{read_decisions, read_events, Proxy};
use crate::support::{self, d};

// Long enough that a renewal every 500 ms does not lapse on a loaded 2-core CI
// machine (3 s did once, at load 25: a survivor then rightly took the whole).
const LEASE_MS: u64 = 6000;
const RENEW_MS: u64 = 500;
const TPM: u64 = 6000;
const BUDGET: &str = "0.6";

fn config() -> String {
    format!(
        "shares = {{ lease_ms = {LEASE_MS}, renew_ms = {RENEW_MS} }}\ntiers = {{ refresh_ms = 300 }}"
    )
}

/// The cluster's brokers when the cluster stack is up (`dev/test` sets
/// the variable), else the single dev broker.
fn brokers() -> Option<String> {
    std::env::var("TOLLGATE_TEST_CLUSTER_KAFKA")
        .ok()
        .filter(|b| !b.is_empty())
}

/// What the proxies together claimed of a scope's windows: minute ->
/// (requests, tokens). The limits here are set without `--org`: the pool
/// names their scope `*/<id>` (`tollgate_control::rate_limits::tier_id`).
async fn claimed(pg_url: &str, kind: &str, id: &str) -> BTreeMap<i64, (i64, i64)> {
    let id = &format!("*/{id}");
    let pool = sqlx::PgPool::connect(pg_url).await.unwrap();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT minute, requests_claimed, tokens_claimed FROM rate_limit_windows
         WHERE scope_kind = $1 AND scope_id = $2",
    )
    .bind(kind)
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter().map(|(m, r, t)| (m, (r, t))).collect()
}

/// One sample of `name` from a proxy's `/metrics` (`None` if unreachable).
async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The proxies' log lines saying a membership renewal failed (a lease that
/// lapsed under load changes every share; shown when a bound fails).
fn renewal_warnings(env: &support::TestEnv) -> Vec<String> {
    (0..4)
        .flat_map(|i| {
            std::fs::read_to_string(env.log_path(&format!("proxy{i}")))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("cannot renew") || l.contains("joined the live"))
                .map(|l| format!("proxy{i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Wait until `port` reports `share` of `live` proxies.
async fn until_share(http: &reqwest::Client, port: u16, share: f64, live: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = metric(http, port, "tollgate_proxy_share").await;
        let l = metric(http, port, "tollgate_proxy_live_proxies").await;
        if s.is_some_and(|s| (s - share).abs() < 1e-9) && l == Some(live) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: proxy on {port} reports share {s:?} of {l:?} live, expected {share} of {live}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Proxies {
    base: Proxy,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Proxies {
    /// Three proxies of `base`'s configuration, each seeing all three live.
    async fn three(base: Proxy) -> Self {
        let mut proxies = Proxies {
            base,
            ports: Vec::new(),
            children: Vec::new(),
        };
        for _ in 0..3 {
            proxies.start_one().await;
        }
        let http = reqwest::Client::new();
        for &port in &proxies.ports {
            until_share(&http, port, 1.0 / 3.0, 3.0, "three proxies").await;
        }
        proxies
    }

    async fn start_one(&mut self) -> usize {
        let i = self.ports.len();
        let port = support::free_port();
        let spool = self.base.env.dir.path().join(format!("spool-{i}"));
        let label = format!("proxy{i}");
        let child = self.base.spawn_in(
            &label,
            &["proxy", "--listen", &format!("127.0.0.1:{port}")],
            &spool,
        );
        self.children.push(Some(child));
        self.ports.push(port);
        support::wait_http(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(60),
            &self.base.env.log_path(&label),
        )
        .await;
        i
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One admitted or refused call, as its client saw it.
#[derive(Debug, Clone)]
struct Seen {
    proxy: usize,
    budget_key: bool,
    started_ms: u128,
    ended_ms: u128,
    /// (input, output) tokens when admitted.
    usage: Option<(u64, u64)>,
}

/// A refused call: status, answer, `retry-after`.
type Refusal = (u16, Value, Option<String>);

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn cost((input, output): (u64, u64)) -> Decimal {
    Decimal::from(input) * d("0.000001") + Decimal::from(output) * d("0.0001")
}

/// Budget spend (from the usage each client received) per proxy.
fn spend_by_proxy(seen: &[Seen]) -> BTreeMap<usize, Decimal> {
    let mut out = BTreeMap::new();
    for s in seen.iter().filter(|s| s.budget_key) {
        if let Some(u) = s.usage {
            *out.entry(s.proxy).or_insert(Decimal::ZERO) += cost(u);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_proxies_share_a_budget_and_a_token_rate_and_a_dead_ones_share_returns() {
    let base = Proxy::start("proxy_shares", &config(), brokers().as_deref()).await;
    let prices = base.env.dir.path().join("shares_prices.json");
    std::fs::write(
        &prices,
        r#"{"mock-shares": {"litellm_provider": "mockai", "effective_from": "2025-01-01T00:00:00Z",
            "input_cost_per_token": 1e-06, "output_cost_per_token": 0.0001}}"#,
    )
    .unwrap();
    let tpm = TPM.to_string();
    for args in [
        vec!["prices", "import", prices.to_str().unwrap()],
        vec![
            "budgets",
            "set",
            "--kind",
            "team",
            "--id",
            "shared-budget",
            "--limit",
            BUDGET,
            "--period",
            "daily",
        ],
        vec![
            "ratelimits",
            "set",
            "--scope",
            "team",
            "--id",
            "shared-tpm",
            "--tpm",
            &tpm,
        ],
    ] {
        let out = base.env.tollgate(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The watcher publishes the budget's state (nothing spent), then stops:
    // with no spend folded, each proxy can commit exactly its share of the
    // limit, which makes the shares visible in what the clients get.
    let mut processor = base.spawn("process", &["process"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let records = read_decisions(&base.brokers, &base.env.decisions_topic);
        if let Some(r) = records.get("budget/team/shared-budget") {
            assert_eq!(r["budget"]["periods"][0]["limit_usd"], BUDGET);
            break;
        }
        assert!(Instant::now() < deadline, "no budget decision: {records:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processor.kill().unwrap();
    processor.wait().unwrap();

    let budget_key = base.key("acme", "shared-budget", "ada", None);
    let tpm_key = base.key("acme", "shared-tpm", "bob", None);
    let mut proxies = Proxies::three(base).await;
    let http = reqwest::Client::new();

    // 64 clients, spread over the proxies (moving on when theirs is gone),
    // alternating a call against the budget and one against the rate limit.
    let body = json!({"model": "mock-shares", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "share and share alike"}]});
    let body_len = serde_json::to_vec(&body).unwrap().len() as u64;
    let alive = Arc::new(Mutex::new(vec![true; 3]));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<Refusal>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..64usize {
        let (http, ports, alive, stop, seen, refusals, body) = (
            http.clone(),
            proxies.ports.clone(),
            alive.clone(),
            stop.clone(),
            seen.clone(),
            refusals.clone(),
            body.clone(),
        );
        let keys = [budget_key.clone(), tpm_key.clone()];
        clients.push(tokio::spawn(async move {
            let mut p = c % 3;
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                if !alive.lock().unwrap()[p] {
                    // All gone (the test failed and killed them): stop.
                    if !alive.lock().unwrap().iter().any(|a| *a) {
                        return;
                    }
                    p = (p + 1) % 3;
                    continue;
                }
                n += 1;
                let budget_call = n % 2 == 0;
                let started_ms = now_ms();
                let sent = send(&http, ports[p], &keys[usize::from(!budget_call)], &body).await;
                let Some((status, answer, retry_after)) = sent else {
                    // Killed under us: this call's fate is unknown; move on.
                    alive.lock().unwrap()[p] = false;
                    continue;
                };
                let usage = (status == 200).then(|| {
                    (
                        answer["usage"]["prompt_tokens"].as_u64().unwrap(),
                        answer["usage"]["completion_tokens"].as_u64().unwrap(),
                    )
                });
                seen.lock().unwrap().push(Seen {
                    proxy: p,
                    budget_key: budget_call,
                    started_ms,
                    ended_ms: now_ms(),
                    usage,
                });
                if status != 200 {
                    refusals.lock().unwrap().push((status, answer, retry_after));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }

    // Each proxy's estimate of one budget call (what it reserves).
    let estimate =
        Decimal::from(body_len + 32) * d("0.000001") + Decimal::from(50u64) * d("0.0001");
    let limit = d(BUDGET);
    let third = limit / Decimal::from(3);
    let half = limit / Decimal::from(2);
    let snapshot = |seen: &Arc<Mutex<Vec<Seen>>>| seen.lock().unwrap().clone();
    // Wait until each of `proxies` has committed more than `floor`.
    let until_spent = |proxies: std::ops::Range<usize>, floor: Decimal, what: &'static str| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let by_proxy = spend_by_proxy(&seen.lock().unwrap().clone());
                if proxies
                    .clone()
                    .all(|p| by_proxy.get(&p).is_some_and(|s| *s > floor))
                {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}: {by_proxy:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Every proxy commits up to its third (within one call) and no more.
    until_spent(
        0..3,
        third - estimate,
        "the proxies never reached their thirds",
    )
    .await;
    let before_kill = spend_by_proxy(&snapshot(&seen));
    for (p, s) in &before_kill {
        assert!(*s <= third, "proxy {p} committed {s} > its third {third}");
    }

    // SIGKILL one proxy: no clean leave, its lease runs out.
    let killed_at = Instant::now();
    alive.lock().unwrap()[2] = false;
    let mut dead = proxies.children[2].take().unwrap();
    dead.kill().unwrap();
    dead.wait().unwrap();
    for &port in &proxies.ports[..2] {
        until_share(&http, port, 0.5, 2.0, "after the kill").await;
    }
    let returned_after = killed_at.elapsed();
    eprintln!("proxy shares: the dead proxy's share came back after {returned_after:?}");
    assert!(
        returned_after >= Duration::from_millis(LEASE_MS - RENEW_MS),
        "the share came back after {returned_after:?}, before the lease of {LEASE_MS} ms could expire"
    );
    // The survivors now commit past their old third, up to their half.
    until_spent(
        0..2,
        half - estimate,
        "the survivors never grew to their halves",
    )
    .await;
    // A window in which the survivors serve on their grown shares (an
    // overrun of the budget would show up in it), not a wait for progress.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let seen = snapshot(&seen);
    let by_proxy = spend_by_proxy(&seen);
    let total: Decimal = by_proxy.values().copied().sum();
    eprintln!("proxy shares: budget spend by proxy {by_proxy:?}, total {total} of {limit}");
    for p in 0..2 {
        assert!(
            by_proxy[&p] <= half,
            "survivor {p}: {} > {half}; membership warnings: {:?}",
            by_proxy[&p],
            renewal_warnings(&proxies.base.env)
        );
    }
    // The documented bound with one death and no spend folded meanwhile:
    // limit + the dead proxy's share of what remained (here all of it).
    assert!(
        total <= limit + third,
        "overrun past the bound: {total} > {limit} + {third}"
    );
    assert!(
        total > limit,
        "the dead proxy's third was not spent: {total}"
    );

    // Tokens per minute: per UTC minute, the calls surely admitted in it
    // (sent and answered within it) used at most the limit.
    let mut per_minute: BTreeMap<u128, u64> = BTreeMap::new();
    for s in seen.iter().filter(|s| !s.budget_key) {
        if let Some((i, o)) = s.usage {
            if s.started_ms / 60_000 == s.ended_ms / 60_000 {
                *per_minute.entry(s.started_ms / 60_000).or_default() += i + o;
            }
        }
    }
    eprintln!("proxy shares: tokens per minute {per_minute:?}");
    assert!(!per_minute.is_empty());
    for (minute, tokens) in &per_minute {
        assert!(*tokens <= TPM, "minute {minute}: {tokens} tokens > {TPM}");
    }
    let refusals = refusals.lock().unwrap().clone();
    let token_refusals: Vec<_> = refusals
        .iter()
        .filter(|(_, a, _)| a["error"]["code"] == "rate_limit_exceeded")
        .collect();
    assert!(
        !token_refusals.is_empty(),
        "no rate-limit refusal: {refusals:?}"
    );
    for (status, answer, retry_after) in &token_refusals {
        assert_eq!(*status, 429);
        assert_eq!(answer["error"]["type"], "rate_limit_error");
        let message = answer["error"]["message"].as_str().unwrap();
        // Refused because the window's pool is spent, or (default
        // claim_wait_ms of 50 on a loaded machine) no claim came in time.
        let head = format!("rate limit of {TPM} tokens per minute for team shared-tpm");
        assert!(
            message.starts_with(&format!("{head} reached (all of it is admitted this minute; this call may use up to "))
                || message.starts_with(&format!("{head}: this proxy's allowance is spent and no more could be claimed from the shared pool within 50 ms")),
            "{message}"
        );
        let secs: u64 = retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "retry-after {secs}");
    }
    assert!(
        token_refusals.iter().any(|(_, a, _)| a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reached (all of it is admitted this minute")),
        "no refusal for a spent window: {token_refusals:?}"
    );
    // The pool granted at most the limit in every window, whatever the
    // proxies' number and fate: the tokens admitted per window (reserved
    // at admission out of those grants) are bounded by it.
    let windows = claimed(&proxies.base.env.pg_url, "team", "shared-tpm").await;
    eprintln!("proxy shares: tokens claimed per window {windows:?}");
    assert!(!windows.is_empty());
    for (minute, (_, tokens)) in &windows {
        assert!(
            u64::try_from(*tokens).unwrap() <= TPM,
            "window {minute}: {tokens} tokens claimed > {TPM}"
        );
    }
    let budget_refusals = refusals
        .iter()
        .filter(|(_, a, _)| a["error"]["code"] == "budget_exceeded")
        .count();
    assert!(budget_refusals > 0);
    let mut counted = 0.0;
    for &port in &proxies.ports[..2] {
        counted += metric(
            &http,
            port,
            "tollgate_proxy_rate_limit_refusals_total{scope=\"team\",limit=\"tokens\"}",
        )
        .await
        .unwrap_or(0.0);
    }
    assert!(counted >= 1.0, "no refusal counted on /metrics");
    // Refusals are recorded as rate-limited calls.
    let events = read_events(
        &proxies.base.brokers,
        &proxies.base.env.events_topic,
        usize::MAX,
        Duration::from_secs(15),
    );
    let limited = events
        .iter()
        .filter(|e| {
            e["team_id"] == "shared-tpm"
                && e["call"]["outcome"] == "rate_limited"
                && e["call"]["http_status"] == 429
        })
        .count();
    assert!(limited >= 1, "no rate_limited event among {}", events.len());

    // A proxy joins: the others' shares shrink to a third at once, and the
    // newcomer takes its third once they have seen it.
    let joined = proxies.start_one().await;
    for &port in [proxies.ports[0], proxies.ports[1], proxies.ports[joined]].iter() {
        until_share(&http, port, 1.0 / 3.0, 3.0, "after a join").await;
    }
    // A survivor already holds its half: past its new third, it refuses.
    let answer: Value = http
        .post(format!(
            "http://127.0.0.1:{}/v1/chat/completions",
            proxies.ports[0]
        ))
        .bearer_auth(&budget_key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["error"]["code"], "budget_exceeded", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("; this proxy may commit 1/3 of what remains"),
        "{answer}"
    );
    // A clean stop leaves at once: the others grow back without waiting for
    // the lease (checked by the share, not the time, on a loaded machine).
    let mut leaving = proxies.children[joined].take().unwrap();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(leaving.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    leaving.wait().unwrap();
    let log = std::fs::read_to_string(proxies.base.env.log_path(&format!("proxy{joined}")))
        .unwrap_or_default();
    assert!(log.contains("left the live proxies"), "{log}");
    for &port in &proxies.ports[..2] {
        until_share(&http, port, 0.5, 2.0, "after a clean leave").await;
    }
}

/// `tollgate ratelimits`: bad input names the flag and the reason; set,
/// replace, list and delete round-trip through PostgreSQL.
#[tokio::test]
async fn ratelimits_cli_validates_sets_lists_and_deletes() {
    let env = support::TestEnv::new("ratelimits_cli").await;
    for (args, expected) in [
        (
            vec!["--scope", "tenant", "--id", "x", "--rpm", "5"],
            "--scope: unknown scope \"tenant\"; expected key, user, team or org",
        ),
        (
            vec!["--scope", "team", "--id", "t", "--rpm", "-5"],
            "--rpm: \"-5\" is negative; give a whole number from 1 to 1000000000",
        ),
        (
            vec!["--scope", "team", "--id", "t", "--tpm", "0"],
            "--tpm: must be at least 1 (delete the limit to lift it: `tollgate ratelimits delete`)",
        ),
        (
            vec!["--scope", "team", "--id", "t", "--tpm", "1000000000001"],
            "--tpm: 1000000000001 is above the most accepted, 1000000000000",
        ),
        (
            vec!["--scope", "team", "--id", "t"],
            "--rpm: give requests_per_minute, tokens_per_minute or both",
        ),
    ] {
        let mut full = vec!["ratelimits", "set"];
        full.extend(args.iter().copied());
        let out = env.tollgate(&full).output().unwrap();
        assert!(!out.status.success(), "{full:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{full:?}: {stderr}");
    }
    let run = |args: &[&str]| env.run(args);
    let set = run(&[
        "ratelimits",
        "set",
        "--scope",
        "team",
        "--id",
        "ml",
        "--rpm",
        "600",
    ]);
    assert!(
        set.contains("team ml (in every org): 600 requests/min - tokens/min"),
        "{set}"
    );
    let replaced = run(&[
        "ratelimits",
        "set",
        "--scope",
        "team",
        "--id",
        "ml",
        "--rpm",
        "300",
        "--tpm",
        "90000",
    ]);
    assert!(
        replaced.ends_with("; replaced: requests/min 600 → 300, tokens/min none → 90000\n"),
        "{replaced}"
    );
    // `set` replaces the whole limit: one left out is dropped, and said so
    // (a trial lost a tokens limit to a later `--rpm` without a word).
    let dropped = run(&[
        "ratelimits",
        "set",
        "--scope",
        "team",
        "--id",
        "ml",
        "--tpm",
        "90000",
    ]);
    assert!(
        dropped.contains("replaced: requests/min 300 → none (set replaces the whole limit: pass both --rpm and --tpm to keep both)"),
        "{dropped}"
    );
    run(&[
        "ratelimits",
        "set",
        "--scope",
        "team",
        "--id",
        "ml",
        "--rpm",
        "300",
        "--tpm",
        "90000",
    ]);
    let listed = run(&["ratelimits", "list", "--json"]);
    let rows: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["scope_kind"], "team");
    assert_eq!(rows[0]["requests_per_minute"], 300);
    assert_eq!(rows[0]["tokens_per_minute"], 90000);
    let id = rows[0]["id"].as_i64().unwrap().to_string();
    run(&["ratelimits", "delete", "--id", &id]);
    assert_eq!(run(&["ratelimits", "list"]), "");
    let out = env
        .tollgate(&["ratelimits", "delete", "--id", &id])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("--id {id}: no such rate limit"))
    );
}

/// A key's id (the `key` scope of rate limits) from its secret.
fn key_id(env: &support::TestEnv, secret: &str) -> String {
    let out = env.run(&["keys", "list", "--json"]);
    let keys: Value = serde_json::from_str(&out).unwrap();
    let found: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| secret.starts_with(&format!("tg_{}_", k["prefix"].as_str().unwrap())))
        .collect();
    assert_eq!(found.len(), 1, "{out}");
    found[0]["id"].as_str().unwrap().to_string()
}

/// One call as its client saw it: UTC minute when sent and when answered,
/// status, answer, `retry-after`.
#[derive(Debug)]
struct Answered {
    minutes: (u128, u128),
    status: u16,
    answer: Value,
    retry_after: Option<String>,
}

/// Send one chat call to the proxy on `port`: (status, answer,
/// `retry-after`), `None` when the proxy did not answer (killed).
async fn send(
    http: &reqwest::Client,
    port: u16,
    key: &str,
    body: &Value,
) -> Option<(u16, Value, Option<String>)> {
    let response = http
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let answer = response.json::<Value>().await.ok()?;
    Some((status, answer, retry_after))
}

async fn call(http: &reqwest::Client, port: u16, key: &str) -> Answered {
    let started = now_ms() / 60_000;
    let body = json!({"model": "mock-shares", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "one of many"}]});
    let (status, answer, retry_after) = send(http, port, key, &body).await.unwrap();
    Answered {
        minutes: (started, now_ms() / 60_000),
        status,
        answer,
        retry_after,
    }
}

/// Requests per minute hold exactly across three proxies: a key limited to
/// 30 whose calls all reach one proxy gets 30 (not 30/3), and a key limited
/// to 2, below the number of proxies, gets 2 with its calls spread over
/// all three (not 2/3 = 0 each). `docs/proxy.md`, "Rate-limit tiers".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_proxies_admit_exactly_a_key_limit_whether_calls_reach_one_or_all() {
    // Generous claim wait: on a loaded machine a claim may take longer
    // than the default 50 ms, and this test counts exact admissions.
    let extra = format!(
        "shares = {{ lease_ms = {LEASE_MS}, renew_ms = {RENEW_MS} }}\ntiers = {{ refresh_ms = 300, claim_wait_ms = 5000 }}"
    );
    let base = Proxy::start("proxy_rpm", &extra, brokers().as_deref()).await;
    let hot = base.key("acme", "rpm-hot", "hal", None);
    let spread = base.key("acme", "rpm-spread", "sue", None);
    let (hot_id, spread_id) = (key_id(&base.env, &hot), key_id(&base.env, &spread));
    for (id, rpm) in [(&hot_id, "30"), (&spread_id, "2")] {
        base.env.run(&[
            "ratelimits",
            "set",
            "--scope",
            "key",
            "--id",
            id,
            "--rpm",
            rpm,
        ]);
    }
    let proxies = Proxies::three(base).await;
    let http = reqwest::Client::new();
    let ports = proxies.ports.clone();

    // One window holds every call (UTC minutes on this host's clock, which
    // the proxies share): start with at least 30 s of a minute left, in a
    // minute no call was made in; a try that crossed into the next minute
    // is discarded and the one after is used.
    let mut used_minute = 0u128;
    let (minute, hot_calls, spread_calls) = 'tries: {
        for _ in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(120);
            while now_ms() % 60_000 > 30_000 || now_ms() / 60_000 <= used_minute {
                assert!(Instant::now() < deadline, "the clock did not move");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let minute = now_ms() / 60_000;
            // 45 calls of the hot key, all to proxy 0, nine at a time.
            let mut hot_calls = Vec::new();
            for _ in 0..5 {
                let calls = (0..9).map(|_| call(&http, ports[0], &hot));
                hot_calls.extend(futures::future::join_all(calls).await);
            }
            // 12 calls of the spread key, round-robin over the three.
            let mut spread_calls = Vec::new();
            for i in 0..12 {
                spread_calls.push(call(&http, ports[i % 3], &spread).await);
            }
            used_minute = now_ms() / 60_000;
            if hot_calls
                .iter()
                .chain(&spread_calls)
                .all(|c| c.minutes == (minute, minute))
            {
                break 'tries (minute, hot_calls, spread_calls);
            }
            eprintln!("proxy rpm: a try crossed a minute; trying again");
        }
        panic!("three tries crossed a minute boundary");
    };
    let minute = i64::try_from(minute).unwrap();

    for (what, calls, id, rpm) in [
        ("one proxy", &hot_calls, &hot_id, 30),
        ("spread", &spread_calls, &spread_id, 2),
    ] {
        let admitted = calls.iter().filter(|c| c.status == 200).count();
        assert_eq!(admitted, rpm, "{what}: {calls:#?}");
        for refused in calls.iter().filter(|c| c.status != 200) {
            assert_eq!(refused.status, 429, "{what}: {refused:?}");
            assert_eq!(refused.answer["error"]["code"], "rate_limit_exceeded");
            assert_eq!(
                refused.answer["error"]["message"],
                format!(
                    "rate limit of {rpm} requests per minute for key {id} reached (all of it is admitted this minute)"
                )
            );
            let secs: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
            assert!((1..=60).contains(&secs), "retry-after {secs}");
        }
        // The pool granted the whole limit of this window, and no more.
        let windows = claimed(&proxies.base.env.pg_url, "key", id).await;
        assert_eq!(
            windows.get(&minute).map(|w| w.0),
            Some(i64::try_from(rpm).unwrap()),
            "{what}: {windows:?}"
        );
    }
    assert_eq!(hot_calls.len() - 30, 15);
    // Only the proxy the hot key reached claimed for it; every claim answered.
    let claims_total = "tollgate_proxy_rate_limit_claims_total";
    let on_hot = metric(&http, ports[0], claims_total).await.unwrap();
    assert!(on_hot >= 2.0, "{on_hot} claims on proxy 0");
    for &port in &ports {
        assert_eq!(
            metric(
                &http,
                port,
                "tollgate_proxy_rate_limit_claim_failures_total"
            )
            .await,
            Some(0.0)
        );
        assert_eq!(
            metric(
                &http,
                port,
                "tollgate_proxy_rate_limit_claim_timeouts_total"
            )
            .await,
            Some(0.0)
        );
    }
    // Each refusal is recorded as a rate-limited call of its key.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let events = read_events(
            &proxies.base.brokers,
            &proxies.base.env.events_topic,
            usize::MAX,
            Duration::from_secs(5),
        );
        let limited = |id: &str| {
            events
                .iter()
                .filter(|e| {
                    e["api_key_id"] == id
                        && e["call"]["outcome"] == "rate_limited"
                        && e["call"]["http_status"] == 429
                })
                .count()
        };
        let counts = (limited(&hot_id), limited(&spread_id));
        if counts == (15, 10) {
            break;
        }
        assert!(
            counts.0 <= 15 && counts.1 <= 10 && Instant::now() < deadline,
            "rate_limited events (hot, spread): {counts:?}, expected (15, 10)"
        );
    }
}
