//! Read-side test fixture: a ClickHouse database of its own with the
//! migrations applied, known AI calls written straight into `calls` (Kafka and
//! the processor are bypassed, so the report is tested on its own), a
//! `tollgate api` serving them, and the exact statistics to check a report
//! against (numpy's percentile definition, written out in [`type7`]).
//! Shared by `latency_api.rs` and `dashboard_chromium.rs`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{clickhouse_url, free_port, tollgate_bin, unique, wait_http};

/// One call as the test states it.
#[derive(Debug, Clone)]
pub struct Call {
    pub provider: &'static str,
    pub model: &'static str,
    pub team: &'static str,
    pub org: &'static str,
    /// Epoch seconds.
    pub at: i64,
    pub duration_ms: u32,
    pub ttft_ms: Option<u32>,
    pub error: bool,
    pub kind: &'static str,
}

/// `(provider, model, calls, fastest ms, spread ms, error every nth call)`.
const MODELS: [(&str, &str, usize, f64, f64, usize); 4] = [
    ("openai", "gpt-4o", 300, 350.0, 2_500.0, 31),
    ("openai", "gpt-4o-mini", 200, 120.0, 900.0, 50),
    ("anthropic", "claude-sonnet-4", 250, 700.0, 4_500.0, 25),
    ("mistral", "mistral-large", 60, 250.0, 1_500.0, 20),
];

/// `(team, org)`.
const TEAMS: [(&str, &str); 3] = [
    ("team-a", "org-1"),
    ("team-b", "org-1"),
    ("team-c", "org-2"),
];

/// A small deterministic generator, so expected values never change.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// 810 terminal calls spread over the hour starting at `base` (epoch
/// seconds, a whole minute): four provider/model pairs with different
/// latency profiles, three teams in two orgs, some errors; `gpt-4o` streams
/// two calls in three, `gpt-4o-mini` always, `claude-sonnet-4` every other
/// call and `mistral-large` never (its TTFT must come back as null).
/// Claude slows down between minutes 30 and 40, so the charts have a shape.
pub fn dataset(base: i64) -> Vec<Call> {
    let mut rng = Lcg(7);
    let mut calls = Vec::new();
    for (m, (provider, model, n, fastest, spread, error_every)) in MODELS.into_iter().enumerate() {
        for i in 0..n {
            let at = base + (rng.next() * 3_600.0) as i64;
            let u = rng.next();
            let mut duration = fastest + spread * u * u;
            if provider == "anthropic" && (1_800..2_400).contains(&(at - base)) {
                duration *= 1.6;
            }
            let streamed = match m {
                0 => i % 3 != 0,
                1 => true,
                2 => i % 2 == 0,
                _ => false,
            };
            let ttft =
                streamed.then(|| (30.0 + 0.12 * (duration - fastest) + rng.next() * 80.0) as u32);
            let error = i % error_every == 0;
            let (team, org) = TEAMS[(i * 7 + m) % TEAMS.len()];
            calls.push(Call {
                provider,
                model,
                team,
                org,
                at,
                duration_ms: duration as u32,
                ttft_ms: ttft,
                error,
                kind: if error {
                    "ai.call.failed"
                } else {
                    "ai.call.completed"
                },
            });
        }
    }
    calls
}

/// Rows the report must ignore: blocked and lifecycle events inside the
/// window, and completed calls just outside it.
pub fn noise(base: i64) -> Vec<Call> {
    let call = |kind, at| Call {
        provider: "openai",
        model: "gpt-4o",
        team: "team-a",
        org: "org-1",
        at,
        duration_ms: 99_999,
        ttft_ms: Some(99_999),
        error: true,
        kind,
    };
    let mut rows = Vec::new();
    for i in 0..20 {
        rows.push(call("ai.call.blocked", base + 60 * i));
        rows.push(call("ai.call.started", base + 60 * i + 7));
    }
    rows.push(call("ai.call.completed", base - 1));
    rows.push(call("ai.call.completed", base + 3_600));
    rows
}

fn row(index: usize, call: &Call) -> Value {
    json!({
        "event_id": format!("ev-{index}"),
        "schema_version": 1,
        "kind": call.kind,
        // JSON numbers are epoch seconds on every ClickHouse version, so the
        // server's time zone cannot shift the test data.
        "occurred_at": call.at,
        "occurred_at_ms": call.at * 1_000,
        "org_id": call.org,
        "team_id": call.team,
        "user_id": "user-1",
        "api_key_id": "key-1",
        "call_id": format!("call-{index}"),
        "trace_id": format!("trace-{index}"),
        "provider": call.provider,
        "model": call.model,
        "requested_model": call.model,
        "operation": "chat",
        "stream": u8::from(call.ttft_ms.is_some()),
        "duration_ms": call.duration_ms,
        "has_ttft": u8::from(call.ttft_ms.is_some()),
        "ttft_ms": call.ttft_ms.unwrap_or(0),
        "outcome": if call.error { "error" } else { "success" },
        "http_status": if call.error { 500 } else { 200 },
        "ingested_at": call.at,
        "kafka_partition": 0,
        "kafka_offset": index,
    })
}

/// Insert `calls` into `database`'s `calls` table (its views fill the
/// rollups), after the rows already there.
pub async fn insert_calls(database: &str, calls: &[Call]) {
    let offset: usize = ch(database, "SELECT count() FROM calls")
        .await
        .trim()
        .parse()
        .unwrap();
    let body: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(i, call)| row(offset + i, call).to_string())
        .collect();
    ch(
        database,
        &format!("INSERT INTO calls FORMAT JSONEachRow\n{}", body.join("\n")),
    )
    .await;
}

/// A ClickHouse query in `database`; panics with the server's message.
pub async fn ch(database: &str, sql: &str) -> String {
    let response = reqwest::Client::new()
        .post(clickhouse_url())
        .query(&[("database", database)])
        .body(sql.to_string())
        .send()
        .await
        .expect("clickhouse reachable");
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "clickhouse ({status}): {body}\n{sql}");
    body
}

/// The statements of a migration file (comment lines dropped, split on `;`).
fn statements(text: &str) -> Vec<String> {
    let code: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `migrations/clickhouse/*.sql`, in order.
pub fn migration_files() -> Vec<PathBuf> {
    let dir = crate::support::repo_root().join("migrations/clickhouse");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    files
}

/// Run every statement of one migration file in `database`.
pub async fn apply_migration(database: &str, file: &std::path::Path) {
    for statement in statements(&std::fs::read_to_string(file).unwrap()) {
        ch(database, &statement).await;
    }
}

/// A `latency_count_min_calls` no test window reaches: the totals are
/// sorted (a TOML integer is an i64, so not `u64::MAX`).
pub const NEVER_COUNTED: u64 = 1_000_000_000;

/// A database with the schema, a config file, and (once started) the API.
pub struct ReportEnv {
    pub database: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub api_port: u16,
    api: Option<Child>,
    /// An admin key of every org (the API needs an identity), once the
    /// API is started.
    key: Option<String>,
    /// The signed-in forwarder with that key (`support::signed_in`).
    forward: Option<String>,
    /// The ClickHouse database was made here ([`ReportEnv::migrated_before`],
    /// on the dev stack's server): dropped when the environment ends. An
    /// environment over a database it did not make (`with_database`,
    /// `with_clickhouse`) leaves it alone.
    owns_database: bool,
    /// [`ReportEnv::start_api`] made a PostgreSQL database of this name.
    owns_pg_database: bool,
}

impl ReportEnv {
    /// Create the database and apply `migrations/clickhouse/*.sql` in order.
    pub async fn new(label: &str) -> Self {
        Self::migrated_before(label, "9999").await
    }

    /// Create the database and apply the migrations whose file names sort
    /// before `version` (e.g. `"0026"`): the schema of an older release.
    pub async fn migrated_before(label: &str, version: &str) -> Self {
        let database = unique(label);
        ch("default", &format!("CREATE DATABASE {database}")).await;
        for file in migration_files() {
            if file.file_name().unwrap().to_str().unwrap() < version {
                apply_migration(&database, &file).await;
            }
        }
        let mut env = Self::with_database(database);
        env.owns_database = true;
        env
    }

    /// Read latency from the minute rollups only (`[clickhouse]
    /// latency_sort_max_calls = 0`): the reports and signals of a test
    /// about the rollups, their histogram or their backfills must not be
    /// answered from the calls. Before [`ReportEnv::start_api`].
    pub fn read_rollups_only(&self) {
        self.sort_at_most(0);
    }

    /// Read latency from the calls while a window holds at most `calls`
    /// of them (`[clickhouse] latency_sort_max_calls`). Before
    /// [`ReportEnv::start_api`].
    pub fn sort_at_most(&self, calls: u64) {
        self.set_clickhouse("latency_sort_max_calls", calls);
    }

    /// Count the totals per value, rather than sort them, from `calls`
    /// calls in a window read from the calls (`[clickhouse]
    /// latency_count_min_calls`; 0: always). Before
    /// [`ReportEnv::start_api`].
    pub fn count_from(&self, calls: u64) {
        self.set_clickhouse("latency_count_min_calls", calls);
    }

    /// Let one read take at most `bytes` in ClickHouse (`[clickhouse]
    /// read_max_memory_bytes`). Before [`ReportEnv::start_api`].
    pub fn limit_read_memory(&self, bytes: u64) {
        self.set_clickhouse("read_max_memory_bytes", bytes);
    }

    fn set_clickhouse(&self, key: &str, value: u64) {
        let config = std::fs::read_to_string(&self.config_path).unwrap();
        let config = config.replacen(
            "[clickhouse]\n",
            &format!("[clickhouse]\n{key} = {value}\n"),
            1,
        );
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// A config pointing at `database` (which may not exist) without
    /// creating anything.
    pub fn with_database(database: String) -> Self {
        Self::with_clickhouse(&clickhouse_url(), database)
    }

    pub fn with_clickhouse(url: &str, database: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api_port = free_port();
        let config_path = dir.path().join("tollgate.toml");
        std::fs::write(
            &config_path,
            format!(
                "[clickhouse]\nurl = \"{url}\"\ndatabase = \"{database}\"\n\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\n"
            ),
        )
        .unwrap();
        Self {
            database,
            dir,
            config_path,
            api_port,
            api: None,
            key: None,
            forward: None,
            owns_database: false,
            owns_pg_database: false,
        }
    }

    pub async fn insert(&self, calls: &[Call]) {
        insert_calls(&self.database, calls).await;
    }

    /// A `tollgate` command with this config.
    pub fn tollgate(&self, args: &[&str]) -> Command {
        let mut command = Command::new(tollgate_bin());
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("TOLLGATE_CONFIG");
        command
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("api.log")
    }

    /// Start `tollgate api` (with a PostgreSQL database of its own for
    /// keys, and an admin key to call it with) and wait until it answers.
    pub async fn start_api(&mut self) {
        let pg_url = crate::support::create_pg_database(&self.database).await;
        self.owns_pg_database = true;
        let mut config = std::fs::read_to_string(&self.config_path).unwrap();
        config.push_str(&format!("\n[postgres]\nurl = \"{pg_url}\"\n"));
        std::fs::write(&self.config_path, config).unwrap();
        let run = |args: &[&str]| {
            let out = self.tollgate(args).output().unwrap();
            assert!(
                out.status.success(),
                "tollgate {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        run(&["migrate", "--postgres-only"]);
        let key = run(&["keys", "create", "--name", "test", "--role", "admin"]);
        let key = key.lines().last().unwrap().trim().to_string();
        self.forward = Some(crate::support::signed_in::forward_with_key(
            format!("http://127.0.0.1:{}", self.api_port),
            key.clone(),
        ));
        self.key = Some(key);
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = self
            .tollgate(&["api"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.api = Some(child);
        wait_http(
            &format!("{}/healthz", self.api_url()),
            Duration::from_secs(30),
            &self.log_path(),
        )
        .await;
    }

    /// The API as an admin of every org sees it, once started.
    pub fn api_url(&self) -> String {
        self.forward
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", self.api_port))
    }

    /// `GET` a path of the API as an admin; returns the status and body.
    pub async fn get_text(&self, path_and_query: &str) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("{}{path_and_query}", self.api_url()));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// `GET` a path of the API; returns the status and the JSON body.
    pub async fn get_json(&self, path_and_query: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path_and_query).await;
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{path_and_query}: not JSON ({err}): {text}"));
        (status, body)
    }
}

impl Drop for ReportEnv {
    fn drop(&mut self) {
        if let Some(mut child) = self.api.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if self.owns_database {
                eprintln!("test failed: keeping ClickHouse database {}", self.database);
            }
            return;
        }
        let (database, ch_owned, pg_owned) = (
            self.database.clone(),
            self.owns_database,
            self.owns_pg_database,
        );
        if !ch_owned && !pg_owned {
            return;
        }
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // clean up from a thread with a runtime of its own.
        let cleanup = crate::support::on_a_runtime_of_its_own(async move {
            if ch_owned {
                ch("default", &format!("DROP DATABASE IF EXISTS {database}")).await;
            }
            if pg_owned {
                crate::support::drop_pg_database(&database).await;
            }
        });
        if !cleanup {
            eprintln!(
                "dropping the report environment's database {} failed",
                self.database
            );
        }
    }
}

/// The report's quantile definition, written out as numpy's
/// `percentile(values, 100 q)` (method "linear", Hyndman & Fan type 7):
/// h = (n - 1) q, then linear interpolation between the values at ranks
/// floor(h) and floor(h) + 1 of the sorted data. Rounded to the
/// microsecond, as the report is.
pub fn type7(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let value = sorted[lo] + (h - h.floor()) * (sorted[hi] - sorted[lo]);
    (value * 1_000.0).round() / 1_000.0
}

/// Groups of at most this many values are reported exactly.
pub const EXACT_MAX_CALLS: usize = 1_000;
/// The stated bound on a histogram estimate, relative to the exact value.
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / 256.0;

/// Check one `Percentiles` object: a group of at most 1000 values must be
/// exactly numpy's answer and say `"method": "exact"`; a larger one must say
/// `"method": "histogram"`, state the bound, and keep to it.
pub fn assert_percentiles(label: &str, got: &Value, values: &[f64]) {
    // Up to the threshold every source is exact; above it the rollups
    // estimate (`histogram`) and the calls stay exact: whichever the report
    // says, its numbers must be that.
    let exact = values.len() <= EXACT_MAX_CALLS || got["method"] == "exact";
    let (method, bound) = if exact {
        ("exact", 0.0)
    } else {
        ("histogram", MAX_RELATIVE_ERROR)
    };
    assert_eq!(
        got["method"],
        method,
        "{label} over {} values: {got}",
        values.len()
    );
    assert_eq!(
        got["max_relative_error"].as_f64(),
        Some(bound),
        "{label}: the bound is stated: {got}"
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
        let value = got[name].as_f64().unwrap();
        let want = type7(values, q);
        if exact {
            assert_eq!(value, want, "{label} {name} over {} values", values.len());
        } else {
            // Plus half a microsecond: the report is rounded to one.
            let slack = want * bound + 0.000_5;
            assert!(
                (value - want).abs() <= slack,
                "{label} {name} = {value}, exact {want}, bound ±{slack} over {} values",
                values.len()
            );
        }
    }
}

/// Check one `Stats` object of a report against the calls it covers.
pub fn assert_stats(label: &str, stats: &Value, calls: &[&Call]) {
    let count = calls.len() as u64;
    let errors = calls.iter().filter(|c| c.error).count() as u64;
    assert_eq!(
        stats["count"].as_u64(),
        Some(count),
        "{label} count: {stats}"
    );
    assert_eq!(
        stats["errors"].as_u64(),
        Some(errors),
        "{label} errors: {stats}"
    );
    let rate = stats["error_rate"].as_f64().unwrap();
    assert!(
        (rate - errors as f64 / count as f64).abs() < 1e-12,
        "{label} error rate {rate}"
    );
    let durations: Vec<f64> = calls.iter().map(|c| f64::from(c.duration_ms)).collect();
    let ttfts: Vec<f64> = calls
        .iter()
        .filter_map(|c| c.ttft_ms)
        .map(f64::from)
        .collect();
    assert_eq!(
        stats["ttft_count"].as_u64(),
        Some(ttfts.len() as u64),
        "{label} ttft_count"
    );
    assert_percentiles(
        &format!("{label} duration"),
        &stats["duration_ms"],
        &durations,
    );
    if ttfts.is_empty() {
        assert!(
            stats["ttft_ms"].is_null(),
            "{label}: ttft_ms must be null: {stats}"
        );
    } else {
        assert_percentiles(&format!("{label} ttft"), &stats["ttft_ms"], &ttfts);
    }
}

/// A completed call of `provider`/`model` in team-a at `at`.
pub fn call(
    provider: &'static str,
    model: &'static str,
    at: i64,
    duration_ms: u32,
    ttft_ms: Option<u32>,
) -> Call {
    Call {
        provider,
        model,
        team: "team-a",
        org: "org-1",
        at,
        duration_ms,
        ttft_ms,
        error: false,
        kind: "ai.call.completed",
    }
}
