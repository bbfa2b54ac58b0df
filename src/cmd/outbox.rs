//! `tollgate outbox`: what is in the admin-event outbox and not on Kafka yet
//! (`status`), and publishing it now (`drain`); plus [`publish_now`], which
//! every CLI command that changes prices or budgets runs after its
//! transaction committed, so the event reaches Kafka at once even when no
//! `tollgate process` (whose relay would publish it) is running.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tollgate_control::kafka::EventProducer;
use tollgate_control::outbox::{self, Enqueued, OutboxRelay};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// List admin events not on Kafka yet (pending, or set aside as invalid).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish every pending admin event now.
    Drain,
}

pub async fn run(command: OutboxCommand, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    match command {
        OutboxCommand::Status { json } => {
            let rows = outbox::unpublished(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            for r in &rows {
                println!(
                    "{:>6}  {:<24} {}  {}  attempts {}{}{}",
                    r.id,
                    r.kind,
                    r.event_id,
                    r.created_at.to_rfc3339(),
                    r.attempts,
                    if r.abandoned_at.is_some() {
                        "  SET ASIDE"
                    } else {
                        ""
                    },
                    r.last_error
                        .as_deref()
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
            println!("outbox: {} admin event(s) not on Kafka", rows.len());
        }
        OutboxCommand::Drain => {
            let relay = OutboxRelay::new(pool, EventProducer::new(&config.kafka)?);
            let drained = relay.drain().await?;
            println!(
                "outbox: {} admin event(s) published to {}{}{}",
                drained.published,
                config.kafka.events_topic,
                if drained.abandoned > 0 {
                    format!(", {} invalid row(s) set aside", drained.abandoned)
                } else {
                    String::new()
                },
                if drained.busy {
                    "; another relay is publishing the rest"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// Publish the outbox now and wait (up to the Kafka message timeout plus a
/// little) until the rows of `enqueued` are on Kafka. Never an error: the
/// change is committed either way, and a relay publishes the rows later; a
/// warning on stderr says so.
pub async fn publish_now(config: &Config, pool: &PgPool, enqueued: &[Enqueued]) {
    if enqueued.is_empty() {
        return;
    }
    let ids: Vec<i64> = enqueued.iter().map(|e| e.outbox_id).collect();
    let not_yet = |reason: &str| {
        eprintln!(
            "warning: the change is committed, but its admin event(s) (outbox id(s) {}) are not on Kafka yet: {reason}\n\
             hint: `tollgate process` publishes them once Kafka accepts them; `tollgate outbox drain` does it now",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        );
    };
    let producer = match EventProducer::new(&config.kafka) {
        Ok(p) => p,
        Err(err) => return not_yet(&err.to_string()),
    };
    // A cluster that refuses every connection is known within a moment
    // (librdkafka reports every broker down): say so then, not after the
    // message timeout (a trial waited for it with the broker down).
    let reachable_by = Instant::now() + Duration::from_secs(5);
    loop {
        match producer.check_connected(Duration::from_millis(500)).await {
            Ok(_) => break,
            Err(err) if producer.ensure_reachable().is_err() || Instant::now() >= reachable_by => {
                return not_yet(&err.to_string())
            }
            Err(_) => {}
        }
    }
    let relay = OutboxRelay::new(pool.clone(), producer);
    let deadline = Instant::now()
        + Duration::from_millis(config.kafka.message_timeout_ms)
        + Duration::from_secs(5);
    loop {
        if let Err(err) = relay.drain().await {
            return not_yet(&err.to_string());
        }
        match outbox::all_published(pool, &ids).await {
            Ok(true) => {
                for e in enqueued {
                    eprintln!(
                        "admin event {} published to {}",
                        e.event_id, config.kafka.events_topic
                    );
                }
                return;
            }
            // Another relay (a running processor) holds earlier rows.
            Ok(false) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(false) => return not_yet("another relay is still publishing earlier events"),
            Err(err) => return not_yet(&format!("postgres: {err}")),
        }
    }
}
