//! The price catalog in PostgreSQL (`price_versions`, see
//! `migrations/postgres/*_price_catalog.sql`): adding versions (imports and
//! admin corrections), listing. Reading and refreshing the catalog is
//! [`super::read`], shared with the proxy.
//! Rows are never updated or deleted: a correction is a new row.

use sqlx::PgPool;
use tollgate_contract::admin::price_event;
use tollgate_contract::catalog::{NewPrice, PriceCatalog, PriceVersion};

use super::read::{
    attach_tiers, load_catalog, load_versions, PriceRow as Row, PRICES_CHANNEL, SELECT_VERSIONS,
};

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
        load_versions(&self.pool).await
    }

    /// The whole catalog, for the cost fold.
    pub async fn catalog(&self) -> sqlx::Result<PriceCatalog> {
        load_catalog(&self.pool).await
    }

    /// The pool, for [`keep_fresh`].
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Add `prices` (one transaction). A price equal to the version already
    /// in force at its `effective_from` (the latest at or before it) is
    /// skipped, so re-importing a file adds nothing, with or without an
    /// explicit date (an import without one dates its entries "now", and the
    /// version in force now is the one from the first import); otherwise a
    /// new version is added (for an existing `effective_from`, it is a
    /// correction that supersedes the earlier one).
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
            let in_force: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT_VERSIONS} WHERE provider = $1 AND model = $2 AND effective_from <= $3 \
                 ORDER BY effective_from DESC, id DESC LIMIT 1"
            )))
            .bind(&price.provider)
            .bind(&price.model)
            .bind(price.effective_from)
            .fetch_optional(&mut *tx)
            .await?;
            let mut in_force: Vec<PriceVersion> =
                in_force.into_iter().map(PriceVersion::from).collect();
            attach_tiers(&mut *tx, &mut in_force).await?;
            let corrected = in_force
                .first()
                .is_some_and(|v| v.effective_from == price.effective_from);
            if in_force
                .first()
                .is_some_and(|v| price.same_prices_any_date(v))
            {
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
            let mut version = PriceVersion::from(row);
            version.tiers = price.sorted_tiers();
            for t in &version.tiers {
                sqlx::query(
                    "INSERT INTO price_tiers (version_id, above_tokens, inclusive, input_per_token, \
                     output_per_token, cache_read_per_token, cache_write_per_token) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(version.id)
                .bind(i64::try_from(t.above_tokens).unwrap_or(i64::MAX))
                .bind(t.inclusive)
                .bind(t.input_per_token)
                .bind(t.output_per_token)
                .bind(t.cache_read_per_token)
                .bind(t.cache_write_per_token)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(actor) = actor {
                let event = price_event(&version, corrected, actor);
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
