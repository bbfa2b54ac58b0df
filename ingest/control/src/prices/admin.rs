//! Price-catalog administration: [`PriceAdmin`] validates and stores a
//! change with its `admin.price.*` event (built by
//! `tollgate_contract::admin`) in the outbox, in the change's transaction
//! (`crate::outbox`), so the audit chain records who changed which price
//! and when.

use super::store::{AddOutcome, PriceStore};
use tollgate_contract::catalog::NewPrice;
use tollgate_contract::Rejection;

/// Why a price change failed.
#[derive(Debug, thiserror::Error)]
pub enum PriceAdminError {
    #[error("invalid price: `{}` {}", .0.field, .0.reason)]
    Invalid(Rejection),
    /// Nothing was stored.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// Validates and stores price versions, each with its admin event in the
/// outbox (same transaction); an outbox relay puts the events on Kafka.
#[derive(Clone)]
pub struct PriceAdmin {
    pub store: PriceStore,
}

impl PriceAdmin {
    /// Validate, then store (unchanged prices are skipped) with an event
    /// per added version naming `actor`; without an actor, no events
    /// (`tollgate migrate` seeding the default catalog: not a change, and
    /// the rows record their source).
    pub async fn add(
        &self,
        prices: &[NewPrice],
        source: &str,
        actor: Option<&str>,
    ) -> Result<AddOutcome, PriceAdminError> {
        let mut seen: std::collections::HashMap<_, &NewPrice> = std::collections::HashMap::new();
        for p in prices {
            if let Some((field, reason)) = p.problem() {
                return Err(PriceAdminError::Invalid(Rejection::new(field, reason)));
            }
            // Two different prices for one version in one request would be
            // stored as a version and its correction, and the next identical
            // request would flip them again: refuse.
            let key = (&p.provider, &p.model, p.effective_from);
            if let Some(first) = seen.insert(key, p) {
                if first != p {
                    return Err(PriceAdminError::Invalid(Rejection::new(
                        "model",
                        format!(
                            "{}/{} from {} is given twice with different prices",
                            p.provider,
                            p.model,
                            p.effective_from.to_rfc3339()
                        ),
                    )));
                }
            }
        }
        Ok(self.store.add(prices, source, actor).await?)
    }
}
