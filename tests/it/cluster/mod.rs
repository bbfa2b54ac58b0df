//! Tests in the cluster stack (`dev/stack up --cluster`: three Kafka
//! brokers from `dev/cluster/kafka.sh`, and ClickHouse replicas where
//! `dev/cluster/clickhouse.sh` exists). They find it through
//! `TOLLGATE_TEST_CLUSTER_KAFKA` (set by `dev/test`) and fail, never skip,
//! when it is missing. A test that kills a server of the cluster holds
//! [`CLUSTER_FAULTS`] from before the kill until the server is back and
//! caught up, so two fault tests never overlap; a test that needs every
//! broker up holds it too. Servers are killed and started through the
//! scripts of the checkout that started the cluster stack (their pids are in
//! its `.state/`): this one, or `TOLLGATE_TEST_CLUSTER_ROOT` when another
//! checkout (a git worktree) started it.
//!
//! - `kafka`: topics replicated as configured, and HTTP ingest while a
//!   broker is SIGKILLed and restarted (ClickHouse single-node);
//! - `clickhouse`: cluster mode on the two replicas, a replica SIGKILLed
//!   under the processor, and two processors sharing the partitions of
//!   topics replicated on the cluster Kafka;
//! - `full_stack`: both at once, a broker and then the processor's replica
//!   SIGKILLed under steady HTTP ingest.

mod clickhouse;
mod full_stack;
mod kafka;

use std::path::PathBuf;
use std::process::Command;

/// Held by every test that takes a server of the cluster stack down (or
/// needs all of them up), for as long as that matters.
pub static CLUSTER_FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's Kafka bootstrap list, from `TOLLGATE_TEST_CLUSTER_KAFKA`.
pub fn cluster_kafka() -> String {
    std::env::var("TOLLGATE_TEST_CLUSTER_KAFKA").unwrap_or_else(|_| {
        panic!(
            "TOLLGATE_TEST_CLUSTER_KAFKA is not set: the cluster tests need the cluster stack. \
             Start it with `dev/stack up --cluster` and set \
             TOLLGATE_TEST_CLUSTER_KAFKA=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 \
             (dev/test does both)"
        )
    })
}

/// Run `dev/cluster/<script> <args>` of the checkout that started the
/// cluster stack (it blocks: call it from `spawn_blocking`); panics with
/// its output when it fails.
pub fn cluster_script(script: &str, args: &[&str]) {
    if let Err(failure) = try_cluster_script(script, args) {
        panic!("{failure}");
    }
}

/// [`cluster_script`], its failure returned (for drop guards, which must
/// not panic).
pub fn try_cluster_script(script: &str, args: &[&str]) -> Result<(), String> {
    let root = std::env::var("TOLLGATE_TEST_CLUSTER_ROOT")
        .ok()
        .filter(|root| !root.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(crate::support::repo_root);
    let script = root.join("dev/cluster").join(script);
    let out = Command::new(&script)
        .args(args)
        .output()
        .map_err(|err| format!("{}: {err}", script.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} {args:?} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A server of the cluster stack SIGKILLed by a test: started again by
/// [`Killed::restart`] or, when the test fails before that, when dropped
/// (another test, or another helper, needs it back).
pub struct Killed {
    /// `kafka.sh` or `clickhouse.sh`, and the server's number.
    server: Option<(&'static str, String)>,
}

impl Killed {
    /// `dev/cluster/<script> kill <n>`.
    pub async fn kill(script: &'static str, n: impl ToString) -> Self {
        let n = n.to_string();
        let arg = n.clone();
        tokio::task::spawn_blocking(move || cluster_script(script, &["kill", &arg]))
            .await
            .unwrap();
        Self {
            server: Some((script, n)),
        }
    }

    /// `dev/cluster/<script> start <n>`, which returns once it answers.
    pub async fn restart(mut self) {
        let (script, n) = self.server.take().unwrap();
        tokio::task::spawn_blocking(move || cluster_script(script, &["start", &n]))
            .await
            .unwrap();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some((script, n)) = self.server.take() {
            eprintln!("the test stopped with {script} server {n} down: starting it again");
            if let Err(failure) = try_cluster_script(script, &["start", &n]) {
                eprintln!("{failure}");
            }
        }
    }
}
