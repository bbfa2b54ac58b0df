//! The price catalog in PostgreSQL (`price_versions`, see
//! `migrations/postgres/*_price_catalog.sql`): loading every version for the
//! processor, adding versions (imports and admin corrections), listing.
//! Rows are never updated or deleted: a correction is a new row.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use super::prices::{NewPrice, PriceCatalog, PriceVersion};

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    provider: String,
    model: String,
    effective_from: DateTime<Utc>,
    input_per_token: Decimal,
    output_per_token: Decimal,
    cache_read_per_token: Option<Decimal>,
    cache_write_per_token: Option<Decimal>,
    reasoning_per_token: Option<Decimal>,
    per_image: Decimal,
    per_audio_second: Decimal,
    per_request: Decimal,
    source: String,
    note: String,
}

impl From<Row> for PriceVersion {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            provider: r.provider,
            model: r.model,
            effective_from: r.effective_from,
            input_per_token: r.input_per_token.normalize(),
            output_per_token: r.output_per_token.normalize(),
            cache_read_per_token: r.cache_read_per_token.map(|d| d.normalize()),
            cache_write_per_token: r.cache_write_per_token.map(|d| d.normalize()),
            reasoning_per_token: r.reasoning_per_token.map(|d| d.normalize()),
            per_image: r.per_image.normalize(),
            per_audio_second: r.per_audio_second.normalize(),
            per_request: r.per_request.normalize(),
            source: r.source,
            note: r.note,
        }
    }
}

const SELECT_VERSIONS: &str = "SELECT id, provider, model, effective_from, input_per_token, \
     output_per_token, cache_read_per_token, cache_write_per_token, reasoning_per_token, \
     per_image, per_audio_second, per_request, source, note FROM price_versions";

/// What adding a batch of prices did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AddOutcome {
    pub added: Vec<PriceVersion>,
    /// Prices already in force with identical values.
    pub unchanged: usize,
    /// The `admin.price.*` event of each added version, in the outbox
    /// (empty when stored without events).
    pub events: Vec<crate::outbox::Enqueued>,
}

/// The price catalog store.
#[derive(Clone)]
pub struct PriceStore {
    pool: PgPool,
}

impl PriceStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every version, ordered by id.
    pub async fn all(&self) -> sqlx::Result<Vec<PriceVersion>> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_VERSIONS} ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(PriceVersion::from).collect())
    }

    /// The whole catalog, for the cost fold.
    pub async fn catalog(&self) -> sqlx::Result<PriceCatalog> {
        Ok(PriceCatalog::new(self.all().await?))
    }

    /// Add `prices` (one transaction). A price whose `(provider, model,
    /// effective_from)` already has a latest version with the same values is
    /// skipped, so re-importing a file adds nothing; otherwise a new version
    /// is added (for an existing `effective_from`, it is a correction that
    /// supersedes the earlier one).
    ///
    /// With an `actor`, each added version's `admin.price.added` /
    /// `admin.price.corrected` event goes into the outbox in the same
    /// transaction; without one (seeding the default catalog) there are no
    /// events.
    pub async fn add(
        &self,
        prices: &[NewPrice],
        source: &str,
        actor: Option<&str>,
    ) -> sqlx::Result<AddOutcome> {
        let mut tx = self.pool.begin().await?;
        // One importer at a time: the "same prices?" check and the insert
        // must not interleave with another import.
        sqlx::query("LOCK TABLE price_versions IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let mut outcome = AddOutcome::default();
        for price in prices {
            let latest: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT_VERSIONS} WHERE provider = $1 AND model = $2 AND effective_from = $3 \
                 ORDER BY id DESC LIMIT 1"
            )))
            .bind(&price.provider)
            .bind(&price.model)
            .bind(price.effective_from)
            .fetch_optional(&mut *tx)
            .await?;
            let corrected = latest.is_some();
            if latest.is_some_and(|r| price.same_prices(&PriceVersion::from(r))) {
                outcome.unchanged += 1;
                continue;
            }
            let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO price_versions (provider, model, effective_from, input_per_token, \
                 output_per_token, cache_read_per_token, cache_write_per_token, reasoning_per_token, \
                 per_image, per_audio_second, per_request, source, note) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 RETURNING {}",
                SELECT_VERSIONS
                    .trim_start_matches("SELECT ")
                    .trim_end_matches(" FROM price_versions")
            )))
            .bind(&price.provider)
            .bind(&price.model)
            .bind(price.effective_from)
            .bind(price.input_per_token)
            .bind(price.output_per_token)
            .bind(price.cache_read_per_token)
            .bind(price.cache_write_per_token)
            .bind(price.reasoning_per_token)
            .bind(price.per_image)
            .bind(price.per_audio_second)
            .bind(price.per_request)
            .bind(source)
            .bind(&price.note)
            .fetch_one(&mut *tx)
            .await?;
            let version = PriceVersion::from(row);
            if let Some(actor) = actor {
                let event = super::admin::price_event(&version, corrected, actor);
                outcome
                    .events
                    .push(crate::outbox::enqueue(&mut tx, &event).await?);
            }
            outcome.added.push(version);
        }
        if !outcome.added.is_empty() {
            // Processors reload at once (delivered on commit).
            sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {PRICES_CHANNEL}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// How often the processor reloads the catalog: a price added through the
/// admin API prices new calls at most this long after it was stored.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// PostgreSQL notification channel announcing a catalog change.
pub const PRICES_CHANNEL: &str = "tollgate_prices";

/// Reload the catalog into `shared` whenever a change is announced on
/// [`PRICES_CHANNEL`], and every [`REFRESH_EVERY`] in any case (a missed
/// notification, a listener that cannot connect), until `shutdown`. A failed
/// reload keeps the previous catalog (and says so).
pub async fn keep_fresh(
    store: PriceStore,
    shared: super::SharedCatalog,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(&store.pool).await {
        Ok(mut l) => match l.listen(PRICES_CHANNEL).await {
            Ok(()) => Some(l),
            Err(err) => {
                tracing::warn!(%err, "cannot listen for price changes; reloading every 5 s only");
                None
            }
        },
        Err(err) => {
            tracing::warn!(%err, "cannot listen for price changes; reloading every 5 s only");
            None
        }
    };
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.tick().await;
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            result = notified => {
                if let Err(err) = result {
                    tracing::warn!(%err, "price change listener failed; it reconnects");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        match store.catalog().await {
            Ok(catalog) => {
                if catalog.len() != shared.current().len() {
                    tracing::info!(versions = catalog.len(), "price catalog reloaded");
                }
                shared.replace(catalog);
            }
            Err(err) => {
                tracing::warn!(%err, "cannot reload the price catalog; pricing with the previous one")
            }
        }
    }
}
