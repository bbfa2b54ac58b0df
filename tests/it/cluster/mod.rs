//! Tests against the cluster stack (`dev/stack up --cluster`): the engines'
//! own clustering. They read the cluster's addresses from
//! `TOLLGATE_TEST_CLUSTER_*` and fail, naming the variable, when it is not
//! set (`dev/test` sets them when the cluster stack runs).

mod clickhouse;

/// Held by every test that kills or stops a cluster process, so two such
/// tests never break the cluster under each other.
pub static CLUSTER_FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
