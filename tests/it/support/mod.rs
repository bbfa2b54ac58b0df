//! Shared test harness: real Kafka, ClickHouse and PostgreSQL (started by
//! `dev/stack up`), isolated per test by topic names, a ClickHouse database and
//! a PostgreSQL database of its own. Addresses come from the environment:
//! `TOLLGATE_TEST_KAFKA`, `TOLLGATE_TEST_CLICKHOUSE`, `TOLLGATE_TEST_POSTGRES`
//! (an admin URL whose database part is replaced per test), and default to
//! the dev stack's in `dev/tollgate.toml`. When a [`TestEnv`] ends without
//! a failure, its topics and databases are dropped; after a failure they are
//! kept (and named on stderr) for a look.

pub mod browser;
pub mod chromium;
pub mod errors;
pub mod events;
pub mod kafka;
pub mod page_widths;
pub mod private_clickhouse;
pub mod private_kafka;
pub mod private_postgres;
pub mod signed_in;
pub mod tcp_proxy;
pub mod webhook;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a condition before calling it a hang. Tests
/// never assume speed (CI shares two cores with Kafka, ClickHouse and
/// PostgreSQL, and `./dev/test --stress` loads both): a wait polls its
/// condition and returns as soon as it holds, so this bounds a hang, never
/// the time a passing test takes.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The repository's root, as cargo gives it to the running test. Not the
/// compile-time `env!("CARGO_MANIFEST_DIR")`: a test binary reused from a
/// shared build cache keeps the path of the checkout that built it.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A setting of `dev/tollgate.toml`, where the dev stack's addresses are
/// written once (`dev/stack`, `dev/demo` and `dev/test` read them there too).
fn dev_setting(section: &str, key: &str) -> String {
    let path = crate::support::repo_root().join("dev/tollgate.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let config: toml::Table = text.parse().unwrap();
    config[section][key].as_str().unwrap().to_string()
}

/// The environment's address, else the dev stack's.
fn address(variable: &str, section: &str, key: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| dev_setting(section, key))
}

pub fn kafka_brokers() -> String {
    address("TOLLGATE_TEST_KAFKA", "kafka", "brokers")
}

/// The Alertmanager `dev/stack up` started.
pub fn alertmanager_url() -> String {
    std::env::var("TOLLGATE_TEST_ALERTMANAGER").unwrap_or_else(|_| "http://127.0.0.1:9095".into())
}

pub fn clickhouse_url() -> String {
    address("TOLLGATE_TEST_CLICKHOUSE", "clickhouse", "url")
}

pub fn postgres_admin_url() -> String {
    address("TOLLGATE_TEST_POSTGRES", "postgres", "url")
}

/// A name no other test (or earlier run) uses: `t_<label>_<random hex>`.
pub fn unique(label: &str) -> String {
    format!("t_{}_{:08x}", label, rand::random::<u32>())
}

/// The ports [`free_port`] hands out: below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999 by default), from which
/// every outgoing connection and every `bind` to port 0 takes its port,
/// and clear of the dev stack's and the demo's fixed ports.
const TEST_PORTS: std::ops::Range<u16> = 24_000..32_000;

/// A TCP port on loopback that nothing listens on, and that no other test
/// of this run was given. A port the kernel picks (`bind` to port 0) is
/// free only until the test's server binds it, and the kernel may hand it
/// out again meanwhile: two tests were once given one port, and the
/// second's calls reached the first's server. So ports come from
/// [`TEST_PORTS`], in turn from a random start, each checked free once.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % span));
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + u16::try_from(offset).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// Path of the `tollgate` binary under test.
pub fn tollgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}

/// Send one ClickHouse query over HTTP and return the body.
pub async fn clickhouse_query(sql: &str) -> String {
    clickhouse_query_at(&clickhouse_url(), sql).await
}

/// [`clickhouse_query`] to the server at `url` (a private one).
pub async fn clickhouse_query_at(url: &str, sql: &str) -> String {
    let response = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .expect("clickhouse reachable");
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "clickhouse query failed ({status}): {body}\n{sql}"
    );
    body
}

/// One isolated environment: its own topics, ClickHouse database and
/// PostgreSQL database, and a config file pointing at them.
pub struct TestEnv {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub events_topic: String,
    pub dlq_topic: String,
    pub decisions_topic: String,
    pub ch_database: String,
    pub pg_url: String,
    pub ingest_port: u16,
    pub api_port: u16,
    /// The signed-in forwarder in front of `tollgate api` (an admin of
    /// every org), once the api is started.
    api_forward: Option<String>,
    /// That admin's API key.
    pub admin_key: Option<String>,
    children: Vec<Child>,
    /// Other Kafka clusters this environment's topics were made on (the
    /// cluster stack's), cleaned up with the single-node broker's.
    other_brokers: Vec<String>,
}

impl TestEnv {
    /// Create databases and the config file, then run `tollgate migrate`.
    pub async fn new(label: &str) -> Self {
        Self::with_extra_config(label, "").await
    }

    /// Like [`TestEnv::new`], with extra TOML appended to the config (for
    /// example a `[processor]` section).
    pub async fn with_extra_config(label: &str, extra_toml: &str) -> Self {
        let name = unique(label);
        let pg_url = create_pg_database(&name).await;
        let dir = tempfile::tempdir().unwrap();
        let ingest_port = free_port();
        let api_port = free_port();
        let config_path = dir.path().join("tollgate.toml");
        // Each environment has its own consumer group, so processors of
        // concurrent tests never rebalance each other.
        let mut processor_section = String::new();
        if !extra_toml.contains("[processor]") {
            processor_section.push_str(&format!("\n[processor]\ngroup_id = \"{name}\"\n"));
        }
        if !extra_toml.contains("[audit]") {
            processor_section.push_str(&format!("\n[audit]\ngroup_id = \"{name}-audit\"\n"));
        }
        // Tests' receivers (webhooks, the stack's Alertmanager) listen on
        // loopback, which receivers reach only on listed hosts.
        if !extra_toml.contains("[alerting]") {
            processor_section.push_str(
                "\n[alerting]\nreceiver_private_hosts = [\"127.0.0.1\", \"localhost\"]\n",
            );
        }
        // Tests talk plain HTTP: session cookies without `Secure`.
        let auth_section = if extra_toml.contains("[auth]") {
            ""
        } else {
            "\n[auth]\nsecure_cookies = false\n"
        };
        let events_topic = format!("{name}.events");
        let dlq_topic = format!("{name}.events.dlq");
        let decisions_topic = format!("{name}.decisions");
        let config = format!(
            r#"[kafka]
brokers = "{brokers}"
events_topic = "{events_topic}"
dlq_topic = "{dlq_topic}"
decisions_topic = "{decisions_topic}"
audit_checkpoints_topic = "{name}.audit.checkpoints"

[postgres]
url = "{pg_url}"

[clickhouse]
url = "{ch}"
database = "{name}"

[ingest]
listen = "127.0.0.1:{ingest_port}"
# Tests run side by side: the OTLP/gRPC receiver takes a port the system
# picks and says which in its log (`otlp_ingest.rs`).
otlp_grpc_listen = "127.0.0.1:0"

[api]
listen = "127.0.0.1:{api_port}"
{auth_section}{processor_section}{extra_toml}
"#,
            brokers = kafka_brokers(),
            ch = clickhouse_url(),
        );
        std::fs::write(&config_path, config).unwrap();
        let env = Self {
            name: name.clone(),
            dir,
            config_path,
            events_topic,
            dlq_topic,
            decisions_topic,
            ch_database: name,
            pg_url,
            ingest_port,
            api_port,
            api_forward: None,
            admin_key: None,
            children: Vec::new(),
            other_brokers: Vec::new(),
        };
        let out = env.tollgate(&["migrate"]).output().unwrap();
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// A `tollgate` command with this environment's config.
    pub fn tollgate(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tollgate_bin());
        cmd.arg("--config").arg(&self.config_path).args(args);
        cmd.env_remove("TOLLGATE_CONFIG");
        cmd
    }

    /// Start a long-running `tollgate` subcommand; it is killed when the
    /// environment is dropped. Its stderr goes to `<dir>/<label>.log`.
    ///
    /// `tollgate api` listens on a port the system picks (a port chosen in
    /// advance can be taken by another test's server in between); its log
    /// says which, and [`TestEnv::api_url`] follows. It gets the signed-in
    /// forwarder in front ([`signed_in`]).
    pub fn spawn(&mut self, label: &str, args: &[&str]) -> u32 {
        let is_api = args.first() == Some(&"api") && !args.contains(&"--listen");
        let child = if is_api {
            let _ = std::fs::remove_file(self.log_path(label));
            let mut with_port = args.to_vec();
            with_port.extend(["--listen", "127.0.0.1:0"]);
            let child = self.spawn_child(label, &with_port);
            self.api_port = listening_port(&self.log_path(label), Duration::from_secs(60));
            child
        } else {
            self.spawn_child(label, args)
        };
        if is_api {
            self.sign_in_forwarder();
        }
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Start a `tollgate` subcommand and hand the child to the caller.
    pub fn spawn_child(&self, label: &str, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(label))
            .unwrap();
        self.tollgate(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    pub fn log_path(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("{label}.log"))
    }

    pub fn ingest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingest_port)
    }

    /// `tollgate api` as an admin of every org sees it (requests without
    /// their own `Authorization` get the admin key: [`signed_in`]); the
    /// server itself before it is started.
    pub fn api_url(&self) -> String {
        self.api_forward
            .clone()
            .unwrap_or_else(|| self.direct_api_url())
    }

    /// `tollgate api` itself: no identity unless the request brings one.
    pub fn direct_api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Create an ingest API key and return its secret.
    pub fn create_key(&self, org: &str) -> String {
        let out = self
            .tollgate(&["keys", "create", "--name", "test", "--org", org])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string()
    }

    /// Run a query in this environment's ClickHouse database.
    pub async fn ch(&self, sql: &str) -> String {
        clickhouse_query(&sql.replace("{db}", &self.ch_database)).await
    }

    /// Poll `sql` (a single number) until it reaches `want`, or until it
    /// has not moved for `timeout`: a count that keeps rising is slow, not
    /// stuck (a loaded machine stores a few hundred events a second in a
    /// debug build). Returns the last value seen.
    pub async fn wait_for_count(&self, sql: &str, want: u64, timeout: Duration) -> u64 {
        let mut stall = Stall::new(timeout);
        loop {
            let got: u64 = self.ch(sql).await.trim().parse().unwrap_or(0);
            if got >= want || stall.stuck(got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl TestEnv {
    /// `GET /api/v1/reports/latency` with `query`, read until its groups
    /// count at least `calls` calls and each group's series adds up to its
    /// total (the views write a moment after the `calls` part of an insert
    /// is visible) or `PATIENCE` passed; the last report.
    pub async fn latency_report_counting(
        &self,
        query: &[(&str, &str)],
        calls: u64,
    ) -> serde_json::Value {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let report: serde_json::Value = client
                .get(format!("{}/api/v1/reports/latency", self.api_url()))
                .query(query)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let groups = report["groups"].as_array().map_or(&[][..], Vec::as_slice);
            let count = |stats: &serde_json::Value| stats["count"].as_u64().unwrap_or(0);
            let counted: u64 = groups.iter().map(|g| count(&g["total"])).sum();
            // The series and the totals are read by separate statements: a
            // view still writing between them makes them disagree.
            let settled = groups.iter().all(|g| {
                let series = g["series"].as_array().map_or(&[][..], Vec::as_slice);
                series.iter().map(|p| count(&p["stats"])).sum::<u64>() == count(&g["total"])
            });
            if (counted >= calls && settled) || Instant::now() > deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl TestEnv {
    /// Wait until every untagged cost rollup (`cost_daily`, `_by_team`,
    /// `_by_user`, `_by_key`) holds every billable call of `calls` (the
    /// views write a moment after the `calls` part of the same insert is
    /// visible), before any repricing.
    pub async fn wait_for_cost_rollup(&self) {
        let billable: u64 = self
            .ch("SELECT count() FROM {db}.calls WHERE kind IN ('ai.call.completed', 'ai.call.failed')")
            .await
            .trim()
            .parse()
            .unwrap();
        for table in [
            "cost_daily",
            "cost_daily_by_team",
            "cost_daily_by_user",
            "cost_daily_by_key",
        ] {
            let got = self
                .wait_for_count(
                    &format!("SELECT sum(calls) FROM {{db}}.{table}"),
                    billable,
                    PATIENCE,
                )
                .await;
            assert_eq!(got, billable, "{table} never caught up with calls");
        }
    }
}

impl TestEnv {
    /// Start `tollgate api` (killed with the environment) and wait until it
    /// answers.
    /// Also delete this environment's topics on `brokers` at the end (its
    /// topics were made there too).
    pub fn topics_also_on(&mut self, brokers: &str) {
        if brokers != kafka_brokers() && !self.other_brokers.iter().any(|b| b == brokers) {
            self.other_brokers.push(brokers.to_string());
        }
    }

    pub async fn start_api(&mut self) {
        self.spawn("api", &["api"]);
        self.wait_api().await;
    }

    /// Start `tollgate api` on the port chosen when the environment was
    /// made (`direct_api_url` is known before it starts, e.g. for a
    /// callback URL registered in advance).
    pub async fn start_api_on_its_port(&mut self) {
        let listen = format!("127.0.0.1:{}", self.api_port);
        self.spawn("api", &["api", "--listen", &listen]);
        self.sign_in_forwarder();
        self.wait_api().await;
    }

    /// The signed-in forwarder in front of the api, with an admin key of
    /// every org (once per environment).
    fn sign_in_forwarder(&mut self) {
        if self.api_forward.is_some() {
            return;
        }
        let key = self.create_key_with_role("admin", None);
        self.api_forward = Some(signed_in::forward_with_key(
            self.direct_api_url(),
            key.clone(),
        ));
        self.admin_key = Some(key);
    }

    async fn wait_api(&self) {
        wait_http(
            &format!("{}/healthz", self.api_url()),
            PATIENCE,
            &self.log_path("api"),
        )
        .await;
    }

    /// Create an API key with `role` (scoped to `org` when given) and return
    /// its secret.
    pub fn create_key_with_role(&self, role: &str, org: Option<&str>) -> String {
        let mut args = vec!["keys", "create", "--name", "test", "--role", role];
        if let Some(org) = org {
            args.extend(["--org", org]);
        }
        let out = self.tollgate(&args).output().unwrap();
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string()
    }

    /// Run a `tollgate` subcommand to completion; panics with its stderr
    /// unless it succeeds, returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.tollgate(args).output().unwrap();
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `tollgate budgets set` with `args` (after `set`): the budget's id,
    /// from its line `budget <id>: …`.
    pub fn set_budget(&self, args: &[&str]) -> i64 {
        let mut all = vec!["budgets", "set"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        out.split_whitespace()
            .nth(1)
            .and_then(|w| w.trim_end_matches(':').parse().ok())
            .unwrap_or_else(|| panic!("budget id in {out:?}"))
    }

    /// Produce `events` (keyed by team) to the events topic, start
    /// `tollgate process` and wait until `calls` holds every one of them.
    pub async fn process_events(&mut self, events: &[tollgate_contract::Event]) {
        let messages: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|e| (e.team_id.clone(), serde_json::to_vec(e).unwrap()))
            .collect();
        kafka::produce_all(&self.events_topic, &messages).await;
        self.spawn("process", &["process"]);
        let want = events.len() as u64;
        let got = self
            .wait_for_count(
                "SELECT count() FROM {db}.calls",
                want,
                Duration::from_secs(90),
            )
            .await;
        assert_eq!(
            got,
            want,
            "calls never caught up; log:\n{}",
            std::fs::read_to_string(self.log_path("process")).unwrap_or_default()
        );
    }

    /// A query answering one number.
    pub async fn ch_u64(&self, sql: &str) -> u64 {
        let body = self.ch(sql).await;
        body.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {body:?} for {sql}"))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The processes' logs and config too: a failure seen once in a
            // full run is read from them afterwards.
            self.dir.disable_cleanup(true);
            eprintln!(
                "test failed: keeping topics {}.*, ClickHouse database {}, PostgreSQL database {} \
                 and the logs and config in {}",
                self.name,
                self.ch_database,
                self.name,
                self.dir.path().display()
            );
            return;
        }
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // clean up from a thread with a runtime of its own.
        let name = self.name.clone();
        let ch_database = self.ch_database.clone();
        let mut brokers = vec![kafka_brokers()];
        brokers.extend(self.other_brokers.iter().cloned());
        let cleanup = on_a_runtime_of_its_own(async move {
            drop_resources(&name, &ch_database, &brokers).await;
        });
        if !cleanup {
            eprintln!("cleaning up test environment {} failed", self.name);
        }
    }
}

/// Run `work` to its end on a thread with a runtime of its own: a `Drop`
/// runs inside the test's runtime, which cannot be blocked on. `false`
/// when it panicked.
pub fn on_a_runtime_of_its_own(
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> bool {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work);
    })
    .join()
    .is_ok()
}

/// Delete every topic named `<name>.*` on `brokers`.
async fn delete_topics_of(name: &str, brokers: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let admin: Result<AdminClient<DefaultClientContext>, _> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    let Ok(admin) = admin else { return };
    let prefix = format!("{name}.");
    let topics: Vec<String> = admin
        .inner()
        .fetch_metadata(None, PATIENCE)
        .map(|m| {
            m.topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|t| t.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    if topics.is_empty() {
        return;
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    match admin.delete_topics(&names, &AdminOptions::new()).await {
        Ok(results) => {
            for failed in results.iter().filter_map(|r| r.as_ref().err()) {
                eprintln!("deleting topic {} on {brokers}: {:?}", failed.0, failed.1);
            }
        }
        Err(err) => eprintln!("deleting topics {names:?} on {brokers}: {err}"),
    }
}

/// Drop what a [`TestEnv`] created: every topic named `<name>.*` on each
/// of `brokers`, its ClickHouse database and its PostgreSQL database.
/// Failures are reported, not raised: a leftover never fails a test that
/// passed.
async fn drop_resources(name: &str, ch_database: &str, brokers: &[String]) {
    for brokers in brokers {
        delete_topics_of(name, brokers).await;
    }
    let response = reqwest::Client::new()
        .post(clickhouse_url())
        .body(format!("DROP DATABASE IF EXISTS {ch_database}"))
        .send()
        .await;
    if let Err(err) = response {
        eprintln!("dropping ClickHouse database {ch_database}: {err}");
    }
    drop_pg_database(name).await;
}

/// Drop the PostgreSQL database `name` (made by [`create_pg_database`]);
/// a failure is reported, not raised: this runs when a test ends.
pub async fn drop_pg_database(name: &str) {
    use sqlx::Connection;
    match sqlx::PgConnection::connect(&postgres_admin_url()).await {
        Ok(mut conn) => {
            // The name comes from `unique()`: letters, digits and underscores only.
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await
            {
                eprintln!("dropping PostgreSQL database {name}: {err}");
            }
        }
        Err(err) => eprintln!("dropping PostgreSQL database {name}: {err}"),
    }
}

/// Send `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A decimal from its exact text.
pub fn d(s: &str) -> rust_decimal::Decimal {
    s.parse().unwrap()
}

/// Wait until `url` answers HTTP (any status) or panic after `timeout`.
/// One sample `name` (with its labels, if any) from `GET {base}/metrics`.
pub async fn metric(base: &str, name: &str) -> f64 {
    metric_if_present(base, name)
        .await
        .unwrap_or_else(|| panic!("{name} not in {base}/metrics"))
}

/// [`metric`], or `None` while the series is not exposed yet.
pub async fn metric_if_present(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().unwrap())
}

/// The port a server's log says it listens on (`address=127.0.0.1:<port>`
/// on its "listening" line), polled until `timeout`.
pub fn listening_port(log: &Path, timeout: Duration) -> u16 {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Colours, if any, are escape sequences around the field names.
        let plain: String = text
            .split('\u{1b}')
            .enumerate()
            .map(|(i, part)| match part.split_once('m') {
                Some((_, rest)) if i > 0 => rest,
                _ => part,
            })
            .collect();
        if let Some(port) = plain
            .lines()
            .filter(|l| l.contains("listening"))
            .find_map(|l| l.split("address=127.0.0.1:").nth(1))
            .and_then(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
        {
            return port;
        }
        assert!(
            start.elapsed() < timeout,
            "{} never said where it listens:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn wait_http(url: &str, timeout: Duration, log: &Path) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        // A 502 is the signed-in forwarder saying the server is not up yet.
        match reqwest::get(url).await {
            Ok(r) if r.status() != reqwest::StatusCode::BAD_GATEWAY => return,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{url} did not come up within {timeout:?}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

pub async fn create_pg_database(name: &str) -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("postgres reachable");
    // The name comes from `unique()`: letters, digits and underscores only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("postgres admin url has no database part: {admin}"),
    }
}

pub async fn alertmanager_alerts(am: &str, alertname: &str) -> Vec<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!("{am}/api/v2/alerts"))
        .query(&[("filter", format!("alertname=\"{alertname}\""))])
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!("alertmanager at {am} unreachable ({err}); start it with dev/stack up")
        });
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// Write a rule's state as the alert evaluator does (its phase as JSON,
/// the rule's spec beside it).
pub async fn write_alert_state(
    pool: &sqlx::PgPool,
    rule_id: i64,
    phase: tollgate_contract::alert_lifecycle::Phase,
    evaluated_at: chrono::DateTime<chrono::Utc>,
    value: &str,
) {
    sqlx::query(
        "INSERT INTO alert_state \
         (rule_id, fingerprint, phase, evaluated_at, value, fence_token, rule_spec) \
         SELECT $1, 'fp', $2, $3, $4, 1, spec FROM alert_rules WHERE id = $1",
    )
    .bind(rule_id)
    .bind(serde_json::to_value(phase).unwrap())
    .bind(evaluated_at)
    .bind(value)
    .execute(pool)
    .await
    .unwrap();
}

/// When a polled count has stopped moving: a wait on a count gives up only
/// once it has stayed the same for `timeout` (slow is not stuck).
pub struct Stall {
    timeout: Duration,
    last: Option<u64>,
    moved: Instant,
}

impl Stall {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last: None,
            moved: Instant::now(),
        }
    }

    /// Record the count just read: true once it has not changed for the
    /// timeout.
    pub fn stuck(&mut self, value: u64) -> bool {
        if self.last != Some(value) {
            self.last = Some(value);
            self.moved = Instant::now();
            return false;
        }
        self.moved.elapsed() > self.timeout
    }
}

/// `valid` (a JSON object) with `field` set to `value`, as a request body.
pub fn json_with(valid: &serde_json::Value, field: &str, value: serde_json::Value) -> String {
    let mut v = valid.clone();
    v[field] = value;
    v.to_string()
}

/// `valid` (a JSON object) without `field`, as a request body.
pub fn json_without(valid: &serde_json::Value, field: &str) -> String {
    let mut v = valid.clone();
    v.as_object_mut().map(|o| o.remove(field));
    v.to_string()
}
