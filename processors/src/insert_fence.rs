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
//! was stored.

use std::time::{Duration, Instant};

use clickhouse::Client;
use tollgate_control::clickhouse::user_agent_tag;
use tracing::{info, warn};

/// Running inserts of Tollgate clients bound to one database, the bound
/// value being `tollgate_control::clickhouse::user_agent_tag` (ClickHouse
/// 18.16 and current: `system.processes` has `query_id`, `query` and
/// `http_user_agent` in both; `startsWith` is newer than 18.16).
pub const RUNNING_INSERTS_SQL: &str = "SELECT query_id FROM system.processes \
     WHERE lower(query) LIKE 'insert into %' AND position(http_user_agent, ?) = 1";

/// How many of the given queries are still running.
pub const STILL_RUNNING_SQL: &str = "SELECT count() FROM system.processes WHERE has(?, query_id)";

/// How often the fence looks again, and how often it says it still waits.
const POLL: Duration = Duration::from_millis(50);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The longest the fence waits. An insert whose client stopped sending
/// mid-body stays listed until ClickHouse's `receive_timeout` (300 s); a
/// batch insert takes well under a second, so a dead owner's insert still
/// running after this long is not waited for (the remaining window,
/// `docs/processor.md`).
const LIMIT: Duration = Duration::from_secs(30);

/// Wait until every Tollgate insert into `database` running now has ended
/// (stored or failed); `fold` names the waiting fold in log lines. Returns
/// how many there were. An error (ClickHouse unreachable) is for the
/// caller to retry: the fence has not been passed.
pub async fn wait_for_running_inserts(
    client: &Client,
    database: &str,
    fold: &str,
) -> clickhouse::error::Result<usize> {
    let running: Vec<String> = client
        .query(RUNNING_INSERTS_SQL)
        .bind(user_agent_tag(database))
        .fetch_all()
        .await?;
    if running.is_empty() {
        return Ok(0);
    }
    info!(
        fold = %fold,
        inserts = running.len(),
        "waiting for inserts running in clickhouse to end before reading resume positions"
    );
    let started = Instant::now();
    let mut warned = started;
    loop {
        let left: u64 = client
            .query(STILL_RUNNING_SQL)
            .bind(&running)
            .fetch_one()
            .await?;
        if left == 0 {
            info!(
                fold = %fold,
                inserts = running.len(),
                waited_ms = started.elapsed().as_millis() as u64,
                "inserts running when the partitions were taken over have ended"
            );
            return Ok(running.len());
        }
        if started.elapsed() >= LIMIT {
            warn!(
                fold = %fold,
                inserts = left,
                waited_secs = started.elapsed().as_secs(),
                "inserts still running after the fence's limit; reading resume positions anyway"
            );
            return Ok(running.len());
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
