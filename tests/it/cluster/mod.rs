//! Tests in the cluster stack (`dev/stack up --cluster`: three Kafka
//! brokers from `dev/cluster/kafka.sh`, and ClickHouse replicas where
//! `dev/cluster/clickhouse.sh` exists). They find it through
//! `TOLLGATE_TEST_CLUSTER_KAFKA` (set by `dev/test`) and fail, never skip,
//! when it is missing. A test that kills a server of the cluster holds
//! [`CLUSTER_FAULTS`] from before the kill until the server is back and
//! caught up, so two fault tests never overlap; a test that needs every
//! broker up holds it too.

mod clickhouse;
mod kafka;

use std::path::Path;
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

/// Run `dev/cluster/kafka.sh <args>` of this checkout (it blocks: call it
/// from `spawn_blocking`); panics with its output when it fails.
pub fn cluster_kafka_script(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dev/cluster/kafka.sh");
    let out = Command::new(&script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
