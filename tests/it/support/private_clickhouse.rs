//! A private ClickHouse server for the tests that break ClickHouse: the
//! same `clickhouse-server` binary `dev/stack up` installed, with its own
//! config, ports and data directory in a temp dir (the config is
//! `dev/stack`'s, loopback only; the users are the cluster replicas',
//! `dev/clickhouse-users.xml`), so a test can SIGKILL, restart, SIGSTOP
//! and SIGCONT it without touching the shared server other tests use. It
//! is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{clickhouse_query_at, free_port, signal};

pub struct PrivateClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
    /// The running server; `None` between a kill and a restart.
    child: Mutex<Option<Child>>,
}

impl PrivateClickHouse {
    /// Write the config and start the server; returns once it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Self {
            http_port: free_port(),
            tcp_port: free_port(),
            dir,
            child: Mutex::new(None),
        };
        server.write_config();
        server.spawn().await;
        server
    }

    /// `http://127.0.0.1:<port>`, for `clickhouse.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's process id (changes with every restart).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("server running")
            .id()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self) {
        let root = self.dir.path().display().to_string();
        for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
            std::fs::create_dir_all(self.path(sub)).unwrap();
        }
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{root}/log/clickhouse-server.log</log>
        <errorlog>{root}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>67108864</mark_cache_size>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
        );
        std::fs::write(self.path("config.xml"), config).unwrap();
        // The users of the cluster stack's replicas too (one file).
        let users = include_str!("../../../dev/clickhouse-users.xml");
        std::fs::write(self.path("users.xml"), users).unwrap();
    }

    /// Start the server on its data directory and wait until it answers.
    async fn spawn(&self) {
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("log/stdout.log"))
            .unwrap();
        let stderr = stdout.try_clone().unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.path("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("clickhouse-server (installed by `dev/stack up`) on PATH");
        *self.child.lock().unwrap() = Some(child);
        let start = Instant::now();
        while !self.answers().await {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap();
            if let Some(status) = exited {
                panic!(
                    "private clickhouse exited during startup ({status}):\n{}",
                    self.log_tail()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "private clickhouse did not answer within 120 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `SELECT 1` answers now.
    pub async fn answers(&self) -> bool {
        let response = reqwest::Client::new()
            .post(self.url())
            .body("SELECT 1")
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        matches!(response, Ok(r) if r.status().is_success())
    }

    /// SIGKILL the server (no shutdown of any kind) and reap it.
    pub fn kill(&self) {
        let child = self.child.lock().unwrap().take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same data directory and ports; returns once
    /// it answers.
    pub async fn restart(&self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGSTOP: the server keeps its sockets (connections are accepted by
    /// the kernel) but answers nothing until [`PrivateClickHouse::resume`].
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`PrivateClickHouse::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Run `sql` and return the body; panics on an error status.
    pub async fn query(&self, sql: &str) -> String {
        clickhouse_query_at(&self.url(), sql).await
    }

    /// A query answering one number.
    pub async fn query_u64(&self, sql: &str) -> u64 {
        let body = self.query(sql).await;
        body.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {body:?} for {sql}"))
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["log/stdout.log", "log/clickhouse-server.err.log"] {
            let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}
