//! Waking up when PostgreSQL announces a change: `LISTEN` on a channel,
//! with an interval as the fallback for a missed notification or a
//! listener that cannot connect (it listens again on the next tick, never
//! in a tight loop while PostgreSQL is away). The outbox relay, the price
//! catalog's refresher and the proxy's provider credentials wait on one.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub struct ChangeFeed {
    pool: PgPool,
    channel: &'static str,
    listener: Option<PgListener>,
    tick: Interval,
}

impl ChangeFeed {
    /// Listen on `channel`, and tick every `every` (the first tick is
    /// `every` from now).
    pub async fn new(pool: &PgPool, channel: &'static str, every: Duration) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        let mut feed = Self {
            pool: pool.clone(),
            channel,
            listener: None,
            tick,
        };
        feed.listen().await;
        feed
    }

    async fn listen(&mut self) {
        let result = async {
            let mut l = PgListener::connect_with(&self.pool).await?;
            l.listen(self.channel).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        self.listener = match result {
            Ok(l) => Some(l),
            Err(err) => {
                tracing::warn!(%err, channel = self.channel, every_secs = self.tick.period().as_secs(), "cannot listen for changes; waking on the interval only");
                None
            }
        };
    }

    /// Wait for a notification or the next tick; `false` once `shutdown`
    /// is cancelled.
    pub async fn changed(&mut self, shutdown: &CancellationToken) -> bool {
        let notified = async {
            match self.listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        let lost = tokio::select! {
            () = shutdown.cancelled() => return false,
            _ = self.tick.tick() => self.listener.is_none(),
            result = notified => match result {
                Ok(()) => false,
                Err(err) => {
                    tracing::warn!(%err, channel = self.channel, "change listener failed; listening again on the next tick");
                    self.listener = None;
                    false
                }
            },
        };
        if lost {
            self.listen().await;
        }
        true
    }
}
