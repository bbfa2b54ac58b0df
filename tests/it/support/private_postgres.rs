//! A PostgreSQL server of the test's own (the binaries `dev/stack`
//! installed, under `/usr/lib/postgresql/<version>/bin`), on a free port with
//! its cluster in a temporary directory, which a fault test may SIGKILL and
//! start again without touching the shared server. It runs as the
//! `postgres` OS user when the tests run as root (PostgreSQL refuses root),
//! in a process group of its own so that a kill takes every backend with
//! the postmaster, as a crash of the machine's server would. Killed when
//! dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

const USER: &str = "tollgate";
const PASSWORD: &str = "tollgate";

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_root: bool,
    server: Option<Child>,
}

impl PrivatePostgres {
    /// `initdb`, start, and create the superuser role `tollgate`; returns
    /// once it accepts connections.
    pub async fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let as_root = is_root();
        if as_root {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_root {
            run(Command::new("chown").arg("postgres").arg(&pwfile));
        }
        let mut initdb = pg_command(as_root, &bin.join("initdb"));
        initdb
            .current_dir(dir.path())
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb);
        let mut pg = Self {
            dir,
            bin,
            port: free_port(),
            as_root,
            server: None,
        };
        pg.restart().await;
        pg
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Start the server again on the same port and cluster (after
    /// [`PrivatePostgres::kill`]: crash recovery runs first); returns once
    /// it accepts connections, with how long that took.
    pub async fn restart(&mut self) -> Duration {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let mut server = pg_command(self.as_root, &self.bin.join("postgres"));
        server
            .current_dir(self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0);
        self.server = Some(server.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            use sqlx::Connection;
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return started.elapsed();
                }
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "private postgres did not accept connections within 120 s ({err}); log:\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL the postmaster and every backend at once (a crash).
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let group = format!("-{}", server.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = server.wait();
        }
    }

    /// Create database `name` and return its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap();
        // The name comes from `unique()`: letters, digits and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        self.url(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (as `dev/stack` finds it).
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("no PostgreSQL under /usr/lib/postgresql: run dev/stack up")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program`, as the `postgres` OS user when the tests run as root.
fn pg_command(as_root: bool, program: &Path) -> Command {
    if as_root {
        // `setpriv` execs (no process in between, unlike `runuser`), so the
        // child is the server itself.
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
