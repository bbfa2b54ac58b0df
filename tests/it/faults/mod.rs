//! The fault suite: an SRE's bad day, tried by the project's own tests.
//! Each test breaks a real dependency or kills a real process under load
//! and asserts that nothing acknowledged is lost or duplicated, and how
//! long recovery took (figures in `docs/reliability.md`). Servers a test
//! kills are private instances started by the test, never the shared ones.

mod clickhouse_and_processors;
pub(crate) mod kafka_outage;
mod proxy_crashes;
mod stalled_breakers;
mod stalled_consumer;
