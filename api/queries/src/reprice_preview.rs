//! What a proposed price version would reprice, before it is saved: the
//! stored calls of its provider and model from its `effective_from` until
//! now whose cost it changes, and the net cost difference. It reads and
//! decides through `tollgate_control::prices::repricing`, the code
//! `tollgate reprice` plans with, on the catalog as it is plus the proposed
//! version, so saving the version and running `tollgate reprice --model M
//! --from <effective_from> --to <now>` changes exactly these calls by
//! exactly this amount.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate_contract::catalog::{NewPrice, PriceCatalog, PriceVersion};
use tollgate_contract::cost::from_mantissa;
use tollgate_control::prices::repricing::{self, RepricingError};

use crate::{ReadModelError, ReadModels};

/// What saving a proposed version would change once repriced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepricePreview {
    pub provider: String,
    pub model: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Billable calls of the model in the range.
    pub calls_examined: u64,
    /// Calls that repricing would move to the proposed version (what
    /// `tollgate reprice` reports as changed).
    pub calls_changed: u64,
    /// Of those, the calls whose cost changes (a call of no tokens costs 0
    /// at every price: it moves, its cost stays).
    pub calls_cost_changed: u64,
    /// Net cost difference in USD (`None`: beyond exact decimal range).
    pub cost_delta: Option<Decimal>,
}

/// `versions` (the stored catalog) as saving `proposed` would leave it:
/// unchanged when the version in force at its `effective_from` has the
/// same prices (the store skips it), else with `proposed` added as the
/// newest version, the id after the largest, so it wins over a stored
/// version of the same `effective_from`, as a saved correction would.
pub fn with_proposed(versions: &[PriceVersion], proposed: &NewPrice) -> PriceCatalog {
    let in_force = versions
        .iter()
        .filter(|v| {
            v.provider == proposed.provider
                && v.model == proposed.model
                && v.effective_from <= proposed.effective_from
        })
        .max_by_key(|v| (v.effective_from, v.id));
    if in_force.is_some_and(|v| proposed.same_prices_any_date(v)) {
        return PriceCatalog::new(versions.iter().cloned());
    }
    let id = versions.iter().map(|v| v.id).max().unwrap_or(0) + 1;
    let version = PriceVersion {
        id,
        provider: proposed.provider.clone(),
        model: proposed.model.clone(),
        effective_from: proposed.effective_from,
        input_per_token: proposed.input_per_token,
        output_per_token: proposed.output_per_token,
        cache_read_per_token: proposed.cache_read_per_token,
        cache_write_per_token: proposed.cache_write_per_token,
        reasoning_per_token: proposed.reasoning_per_token,
        per_image: proposed.per_image,
        per_audio_second: proposed.per_audio_second,
        per_request: proposed.per_request,
        tiers: proposed.sorted_tiers(),
        source: "preview".into(),
        note: proposed.note.clone(),
    };
    PriceCatalog::new(versions.iter().cloned().chain(std::iter::once(version)))
}

/// Preview `proposed` against the stored calls in `[effective_from, now)`.
pub async fn run(
    read_models: &ReadModels,
    versions: &[PriceVersion],
    proposed: &NewPrice,
    now: DateTime<Utc>,
) -> Result<RepricePreview, ReadModelError> {
    let catalog = with_proposed(versions, proposed);
    let from = proposed.effective_from;
    let read = repricing::changes(
        &read_models.client,
        &catalog,
        &proposed.provider,
        &proposed.model,
        from,
        now,
    );
    let changes = tokio::time::timeout(crate::QUERY_TIMEOUT, read)
        .await
        .unwrap_or(Err(RepricingError::ClickHouse(
            clickhouse::error::Error::TimedOut,
        )));
    let changes = match changes {
        Ok(changes) => changes,
        Err(RepricingError::ClickHouse(source)) => {
            return Err(read_models.classify("reprice_preview", source))
        }
        Err(RepricingError::Inconsistent { event_id, reason }) => {
            return Err(ReadModelError::UnexpectedRow {
                query: "reprice_preview",
                detail: format!("call {event_id}: {reason}"),
            })
        }
    };
    Ok(RepricePreview {
        provider: proposed.provider.clone(),
        model: proposed.model.clone(),
        from,
        to: now,
        calls_examined: changes.calls_examined,
        calls_changed: u64::try_from(changes.changes.len()).unwrap_or(u64::MAX),
        calls_cost_changed: u64::try_from(
            changes
                .changes
                .iter()
                .filter(|c| c.cost_delta() != 0)
                .count(),
        )
        .unwrap_or(u64::MAX),
        cost_delta: from_mantissa(changes.cost_delta()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn proposed(input: &str, from: &str) -> NewPrice {
        serde_json::from_value(serde_json::json!({
            "provider": "testprov", "model": "tg", "effective_from": from,
            "input_per_token": input, "output_per_token": "0.000002",
        }))
        .unwrap()
    }

    fn stored(id: i64, price: &NewPrice) -> PriceVersion {
        let catalog = with_proposed(&[], price);
        let mut v = catalog
            .lookup("testprov", "tg", price.effective_from)
            .unwrap()
            .clone();
        v.id = id;
        v
    }

    #[test]
    fn a_proposed_version_is_the_newest_unless_it_changes_nothing() {
        let v1 = stored(7, &proposed("0.000001", "2026-03-01T00:00:00Z"));
        let at = v1.effective_from + chrono::Duration::days(3);
        // A correction of the same date wins over the stored version.
        let correction = with_proposed(
            std::slice::from_ref(&v1),
            &proposed("0.0000015", "2026-03-01T00:00:00Z"),
        );
        assert_eq!(correction.lookup("testprov", "tg", at).unwrap().id, 8);
        // The same prices, any date on or after it: the store would skip
        // it, so the catalog stays as it is.
        for from in ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"] {
            let same = with_proposed(std::slice::from_ref(&v1), &proposed("0.000001", from));
            assert_eq!(same.lookup("testprov", "tg", at).unwrap().id, 7, "{from}");
        }
    }
}
