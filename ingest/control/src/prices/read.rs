//! Reading the price catalog from PostgreSQL (`price_versions`, see
//! `migrations/postgres/*_price_catalog.sql`) and keeping an in-memory copy
//! fresh. Writing versions (imports, admin corrections) is [`super::store`].

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use tollgate_contract::catalog::{PriceCatalog, PriceTier, PriceVersion, SharedCatalog};

/// One row of `price_versions`.
#[derive(sqlx::FromRow)]
pub struct PriceRow {
    pub id: i64,
    pub provider: String,
    pub model: String,
    pub effective_from: DateTime<Utc>,
    pub input_per_token: Decimal,
    pub output_per_token: Decimal,
    pub cache_read_per_token: Option<Decimal>,
    pub cache_write_per_token: Option<Decimal>,
    pub reasoning_per_token: Option<Decimal>,
    pub per_image: Decimal,
    pub per_audio_second: Decimal,
    pub per_request: Decimal,
    pub source: String,
    pub note: String,
}

impl From<PriceRow> for PriceVersion {
    fn from(r: PriceRow) -> Self {
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
            tiers: Vec::new(),
            source: r.source,
            note: r.note,
        }
    }
}

/// Every column of `price_versions`, in [`PriceRow`] order.
pub const SELECT_VERSIONS: &str = "SELECT id, provider, model, effective_from, input_per_token, \
     output_per_token, cache_read_per_token, cache_write_per_token, reasoning_per_token, \
     per_image, per_audio_second, per_request, source, note FROM price_versions";

/// One row of `price_tiers`.
#[derive(sqlx::FromRow)]
struct TierRow {
    version_id: i64,
    above_tokens: i64,
    inclusive: bool,
    input_per_token: Decimal,
    output_per_token: Option<Decimal>,
    cache_read_per_token: Option<Decimal>,
    cache_write_per_token: Option<Decimal>,
}

/// Every column of `price_tiers`, in [`TierRow`] order.
const SELECT_TIERS: &str = "SELECT version_id, above_tokens, inclusive, input_per_token, \
     output_per_token, cache_read_per_token, cache_write_per_token FROM price_tiers";

/// Give each of `versions` its tiers (ascending by threshold), read with
/// `executor` (a pool, or the transaction an import compares in).
pub async fn attach_tiers<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    versions: &mut [PriceVersion],
) -> sqlx::Result<()> {
    if versions.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = versions.iter().map(|v| v.id).collect();
    let rows: Vec<TierRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_TIERS} WHERE version_id = ANY($1) ORDER BY version_id, above_tokens"
    )))
    .bind(&ids)
    .fetch_all(executor)
    .await?;
    let mut by_version: std::collections::HashMap<i64, Vec<PriceTier>> =
        std::collections::HashMap::new();
    for r in rows {
        by_version.entry(r.version_id).or_default().push(PriceTier {
            above_tokens: u64::try_from(r.above_tokens).unwrap_or(0),
            inclusive: r.inclusive,
            input_per_token: r.input_per_token.normalize(),
            output_per_token: r.output_per_token.map(|d| d.normalize()),
            cache_read_per_token: r.cache_read_per_token.map(|d| d.normalize()),
            cache_write_per_token: r.cache_write_per_token.map(|d| d.normalize()),
        });
    }
    for v in versions {
        v.tiers = by_version.remove(&v.id).unwrap_or_default();
    }
    Ok(())
}

/// Every version with its tiers, ordered by id.
pub async fn load_versions(pool: &PgPool) -> sqlx::Result<Vec<PriceVersion>> {
    let rows: Vec<PriceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_VERSIONS} ORDER BY id"
    )))
    .fetch_all(pool)
    .await?;
    let mut versions: Vec<PriceVersion> = rows.into_iter().map(PriceVersion::from).collect();
    attach_tiers(pool, &mut versions).await?;
    Ok(versions)
}

/// The whole catalog.
pub async fn load_catalog(pool: &PgPool) -> sqlx::Result<PriceCatalog> {
    Ok(PriceCatalog::new(load_versions(pool).await?))
}

/// How often processors and proxies reload the catalog: a price added
/// through the admin API prices new calls at most this long after it was
/// stored (normally at once: see [`PRICES_CHANNEL`]).
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// PostgreSQL notification channel announcing a catalog change.
pub const PRICES_CHANNEL: &str = "tollgate_prices";

/// Reload the catalog into `shared` whenever a change is announced on
/// [`PRICES_CHANNEL`], and every [`REFRESH_EVERY`] in any case (a missed
/// notification, a listener that cannot connect), until `shutdown`. A failed
/// reload keeps the previous catalog (and says so). `reloaded` hears the
/// size of each catalog put in place (for a metric).
pub async fn keep_fresh(
    pool: PgPool,
    shared: SharedCatalog,
    shutdown: tokio_util::sync::CancellationToken,
    reloaded: impl Fn(usize) + Send + 'static,
) {
    let mut feed = crate::change_feed::ChangeFeed::new(&pool, PRICES_CHANNEL, REFRESH_EVERY).await;
    while feed.changed(&shutdown).await {
        match load_catalog(&pool).await {
            Ok(catalog) => {
                if catalog.len() != shared.current().len() {
                    tracing::info!(versions = catalog.len(), "price catalog reloaded");
                }
                let versions = catalog.len();
                shared.replace(catalog);
                reloaded(versions);
            }
            Err(err) => {
                tracing::warn!(%err, "cannot reload the price catalog; pricing with the previous one")
            }
        }
    }
}
