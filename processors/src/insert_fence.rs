//! The fence a new owner of a partition puts up before it reads where the
//! partition resumes: every insert ClickHouse is running at that moment
//! must have ended first.
//!
//! A processor killed while an insert's body was already sent does not
//! take the insert with it: ClickHouse finishes it (or fails it) after its
//! client is gone. The resume position is the highest offset stored
//! (`crate::resume`); read before such an insert lands, it is too low and
//! the new owner stores those rows again. Every Tollgate client names its
//! database in its `User-Agent` (`tollgate_control::clickhouse::PRODUCT`),
//! so the fence waits for the inserts into this fold's database running
//! when it starts (of any Tollgate process: at most one insert's duration),
//! not for inserts started after, nor for anyone else's.
//! The same fence guards the retry of an insert whose answer was lost
//! (a timeout): the attempt may still be running when the retry asks what
//! was stored. Before that retry the fence is settled: put up again
//! [`SETTLE`] after it first found nothing running. An attempt sent while
//! ClickHouse did not answer (stopped, swamped) waits in the server's
//! socket, unread and so unlisted, until ClickHouse runs again; the first
//! fence then races it, the second lists it or reads its rows. By hand
//! (2026-12-07): an insert sent to a SIGSTOPped server by a client that
//! gave up after 2 s landed once the server ran again in 20 trials of 20,
//! and a listing of running inserts sent before the server ran again
//! missed it in 10 of them.
//!
//! On a cluster (`clickhouse.cluster` set) the previous owner may have
//! written through another replica, so the fence has two more steps
//! (`docs/processor.md`, "On a ClickHouse cluster"): it lists the inserts
//! running on every replica of the cluster (`remote()` over each replica as
//! if it were a shard; a replica that does not answer runs none), and then
//! waits until the replica this processor talks to has fetched every part
//! the others wrote (`SYSTEM SYNC REPLICA` of the fold's table), so the
//! position read next sees every stored row.

use std::time::{Duration, Instant};

use clickhouse::Client;
use tollgate_control::clickhouse::user_agent_tag;
use tollgate_control::config::ClickHouseConfig;
use tracing::{info, warn};

/// Running inserts of Tollgate clients bound to one database, the bound
/// value being `tollgate_control::clickhouse::user_agent_tag` (ClickHouse
/// 18.16 and current: `system.processes` has `query_id`, `query` and
/// `http_user_agent` in both; `startsWith` is newer than 18.16).
pub const RUNNING_INSERTS_SQL: &str = "SELECT query_id FROM system.processes \
     WHERE lower(query) LIKE 'insert into %' AND position(http_user_agent, ?) = 1";

/// How many of the given queries are still running.
pub const STILL_RUNNING_SQL: &str = "SELECT count() FROM system.processes WHERE has(?, query_id)";

/// The replicas of a cluster as `remote()` takes them, each as a shard of
/// its own (`,`), so a query over them reads every replica.
pub const CLUSTER_REPLICAS_SQL: &str = "SELECT concat(host_name, ':', toString(port)) AS address \
     FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num";

/// [`RUNNING_INSERTS_SQL`] on every replica; the first bound value is the
/// replicas' addresses.
pub const RUNNING_INSERTS_ON_REPLICAS_SQL: &str =
    "SELECT query_id FROM remote(?, system, processes) \
     WHERE lower(query) LIKE 'insert into %' AND position(http_user_agent, ?) = 1";

/// [`STILL_RUNNING_SQL`] on every replica.
pub const STILL_RUNNING_ON_REPLICAS_SQL: &str =
    "SELECT count() FROM remote(?, system, processes) WHERE has(?, query_id)";

/// Where the fence looks: this server, or every replica of a cluster.
enum Scope {
    Server,
    Replicas(String),
}

/// How often the fence looks again, and how often it says it still waits.
const POLL: Duration = Duration::from_millis(50);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The longest the fence waits. An insert whose client stopped sending
/// mid-body stays listed until ClickHouse's `receive_timeout` (300 s); a
/// batch insert takes well under a second, so a dead owner's insert still
/// running after this long is not waited for (the remaining window,
/// `docs/processor.md`).
const LIMIT: Duration = Duration::from_secs(30);

/// How long after a fence found nothing running the retry of a failed
/// insert puts it up again (see the module's text). ClickHouse reads what
/// waits in its sockets within milliseconds of running again; a second is
/// that with a margin for a loaded machine, and is paid only by a retry.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What the fence found: the inserts running when it was put up, and how
/// many of them still ran when it gave up waiting ([`LIMIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Passed {
    pub inserts: usize,
    pub still_running: u64,
}

impl Passed {
    /// Whether every insert running at the fence has ended: what a caller
    /// reads next holds each of them whole (its rows and its views' rows)
    /// or not at all.
    pub fn all_ended(&self) -> bool {
        self.still_running == 0
    }
}

/// Wait until every Tollgate insert into the configured database running
/// now has ended (stored or failed) and, on a cluster, until this replica
/// holds every part of `table` the other replicas wrote; `fold` names the
/// waiting fold in log lines. Returns how many inserts there were and how
/// many outlasted the wait. An error (ClickHouse unreachable, the replica
/// cannot catch up yet) is for the caller to retry: the fence has not been
/// passed.
pub async fn wait_for_running_inserts(
    client: &Client,
    config: &ClickHouseConfig,
    fold: &str,
    table: &str,
) -> clickhouse::error::Result<Passed> {
    let scope = if config.cluster.is_empty() {
        Scope::Server
    } else {
        let replicas: Vec<String> = client
            .query(CLUSTER_REPLICAS_SQL)
            .bind(&config.cluster)
            .fetch_all()
            .await?;
        Scope::Replicas(replicas.join(","))
    };
    // A replica that is down runs no insert (its inserts died with it).
    let lister = match scope {
        Scope::Server => client.clone(),
        Scope::Replicas(_) => client.clone().with_setting("skip_unavailable_shards", "1"),
    };
    let passed = wait_for_listed(&lister, &scope, &config.database, fold).await?;
    if !config.cluster.is_empty() {
        sync_replica(client, &config.database, table, fold).await?;
    }
    Ok(passed)
}

/// Wait until this replica has fetched every part of `table` that is in
/// the cluster's replication log (a part written through another replica
/// that is down cannot be fetched: this fails after the server's
/// `receive_timeout`, and the caller tries again).
pub async fn sync_replica(
    client: &Client,
    database: &str,
    table: &str,
    fold: &str,
) -> clickhouse::error::Result<()> {
    let started = Instant::now();
    client
        .query(&sync_replica_sql(database, table))
        .execute()
        .await?;
    let waited = started.elapsed();
    if waited >= Duration::from_secs(1) {
        info!(
            fold = %fold,
            table = %table,
            waited_ms = waited.as_millis() as u64,
            "this replica caught up with the parts the other replicas wrote"
        );
    }
    Ok(())
}

/// `SYSTEM SYNC REPLICA` of one table (18.16 and current ClickHouse).
pub fn sync_replica_sql(database: &str, table: &str) -> String {
    format!("SYSTEM SYNC REPLICA {database}.{table}")
}

async fn list_running(
    client: &Client,
    scope: &Scope,
    database: &str,
) -> clickhouse::error::Result<Vec<String>> {
    match scope {
        Scope::Server => {
            client
                .query(RUNNING_INSERTS_SQL)
                .bind(user_agent_tag(database))
                .fetch_all()
                .await
        }
        Scope::Replicas(replicas) => {
            client
                .query(RUNNING_INSERTS_ON_REPLICAS_SQL)
                .bind(replicas)
                .bind(user_agent_tag(database))
                .fetch_all()
                .await
        }
    }
}

async fn count_still_running(
    client: &Client,
    scope: &Scope,
    running: &[String],
) -> clickhouse::error::Result<u64> {
    match scope {
        Scope::Server => {
            client
                .query(STILL_RUNNING_SQL)
                .bind(running)
                .fetch_one()
                .await
        }
        Scope::Replicas(replicas) => {
            client
                .query(STILL_RUNNING_ON_REPLICAS_SQL)
                .bind(replicas)
                .bind(running)
                .fetch_one()
                .await
        }
    }
}

async fn wait_for_listed(
    client: &Client,
    scope: &Scope,
    database: &str,
    fold: &str,
) -> clickhouse::error::Result<Passed> {
    let running = list_running(client, scope, database).await?;
    if running.is_empty() {
        return Ok(Passed::default());
    }
    info!(
        fold = %fold,
        inserts = running.len(),
        "waiting for inserts running in clickhouse to end before reading resume positions"
    );
    let started = Instant::now();
    let mut warned = started;
    loop {
        let left = count_still_running(client, scope, &running).await?;
        if left == 0 {
            info!(
                fold = %fold,
                inserts = running.len(),
                waited_ms = started.elapsed().as_millis() as u64,
                "inserts running when the partitions were taken over have ended"
            );
            return Ok(Passed {
                inserts: running.len(),
                still_running: 0,
            });
        }
        if started.elapsed() >= LIMIT {
            warn!(
                fold = %fold,
                inserts = left,
                waited_secs = started.elapsed().as_secs(),
                "inserts still running after the fence's limit; reading resume positions anyway"
            );
            return Ok(Passed {
                inserts: running.len(),
                still_running: left,
            });
        }
        if warned.elapsed() >= WARN_EVERY {
            warned = Instant::now();
            warn!(
                fold = %fold,
                inserts = left,
                waited_secs = started.elapsed().as_secs(),
                "still waiting for inserts that were running when the partitions were taken over \
                 (their rows must land before the resume position is read)"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
