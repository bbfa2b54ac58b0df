//! A Kafka broker of the test's own (single-node KRaft, the jars
//! `dev/stack` fetched, started by `dev/kafka-scratch` on free ports with its
//! data in a temporary directory), which a fault test may SIGKILL and start
//! again without touching the shared broker. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::free_port;

pub struct PrivateKafka {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
}

impl PrivateKafka {
    /// Format and start a broker; returns once it answers metadata requests.
    pub fn start() -> Self {
        let kafka = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            controller_port: free_port(),
        };
        kafka.restart();
        kafka
    }

    /// [`PrivateKafka::start`] off the async runtime's threads, shared so
    /// that [`PrivateKafka::restart_shared`] can run there too.
    pub async fn start_shared() -> Arc<Self> {
        Arc::new(tokio::task::spawn_blocking(Self::start).await.unwrap())
    }

    /// [`PrivateKafka::restart`] off the async runtime's threads (the
    /// clients of a test keep running meanwhile).
    pub async fn restart_shared(self: &Arc<Self>) -> Duration {
        let kafka = self.clone();
        tokio::task::spawn_blocking(move || kafka.restart())
            .await
            .unwrap()
    }

    /// `bootstrap.servers` of this broker.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the broker again on the same ports and data (after
    /// [`PrivateKafka::kill`]); returns once it answers, with how long that took.
    pub fn restart(&self) -> Duration {
        let started = Instant::now();
        let controller = self.controller_port.to_string();
        self.scratch("start", &[&controller], "private kafka did not start");
        started.elapsed()
    }

    /// `dev/kafka-scratch <action> <dir> <port> <rest>`, asserting that it
    /// succeeded (`failed` says what did not happen).
    fn scratch(&self, action: &str, rest: &[&str], failed: &str) {
        let out = Command::new(script())
            .arg(action)
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .args(rest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{failed}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILL the broker (no shutdown of any kind: a crash).
    pub fn kill(&self) {
        let pid_file = self.dir.path().join("kafka.pid");
        let Ok(pid) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        // Wait until the process is gone, so the port is free for a restart.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{}", pid.trim())).exists() && Instant::now() < deadline {
            if std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|stat| stat.contains(") Z "))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(pid_file);
    }

    /// Set (`consumer_byte_rate=1`) or, given a bare name, delete a quota
    /// every client of this broker gets (Kafka's `kafka-configs`).
    pub fn client_quota(&self, setting: &str) {
        self.scratch(
            "client-quota",
            &[setting],
            &format!("client quota {setting} not set"),
        );
    }

    /// The broker's log (for a failing assertion).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kafka.log")).unwrap_or_default()
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.kill();
    }
}

fn script() -> PathBuf {
    crate::support::repo_root().join("dev/kafka-scratch")
}
