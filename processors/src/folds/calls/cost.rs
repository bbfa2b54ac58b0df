//! The cost step of the calls fold's pure part: stamp a `calls` row with
//! its cost (the formula is [`tollgate_contract::cost`]), `priced`,
//! `price_version` and `priced_as` before it is batched, so the cost is part
//! of the same effectively-once insert.

pub use tollgate_contract::cost::{
    call_cost, from_mantissa, round, to_mantissa, BillableUsage, CostOverflow, COST_SCALE,
};
pub use tollgate_contract::is_billable;
use tollgate_contract::KIND_CALL_COMPLETED;

use tollgate_contract::catalog::PriceCatalog;

use super::rows::CallRow;

/// The billable usage of a stored row (the per-request fee only for a
/// completed call).
pub fn usage_of_row(row: &CallRow) -> BillableUsage {
    BillableUsage {
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        cached_input_tokens: row.cached_input_tokens,
        cache_write_tokens: row.cache_write_tokens,
        reasoning_tokens: row.reasoning_tokens,
        images: u64::from(row.images),
        audio_ms: row.audio_ms,
        requests: u64::from(row.kind == KIND_CALL_COMPLETED),
    }
}

/// Stamp `row` with its cost from `catalog`: the version in force at
/// `occurred_at_ms` (found through aliases when the catalog lacks the
/// call's own provider/model; `priced_as` names the entry). Unbillable and unpriced rows get cost 0, `priced` 0
/// and version 0; an overflowing cost is stored as unpriced too (and
/// logged), never as a wrong number.
pub fn price_row(row: &mut CallRow, catalog: &PriceCatalog) {
    row.cost = 0;
    row.priced = 0;
    row.price_version = 0;
    row.priced_as.clear();
    if !is_billable(&row.kind) {
        return;
    }
    let Some(at) = i64::try_from(row.occurred_at_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
    else {
        return;
    };
    let Some(price) = catalog.lookup(&row.provider, &row.model, at) else {
        return;
    };
    match call_cost(&usage_of_row(row), price) {
        Ok(cost) => {
            row.cost = to_mantissa(cost);
            row.priced = 1;
            row.price_version = u64::try_from(price.id).unwrap_or(0);
            row.priced_as = format!("{}/{}", price.provider, price.model);
        }
        Err(err) => {
            tracing::warn!(event_id = %row.event_id, %err, "call left unpriced");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn mantissa_round_trip() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let c = d("1.000000000001");
        assert_eq!(to_mantissa(c), 1_000_000_000_001);
        assert_eq!(from_mantissa(1_000_000_000_001).unwrap(), c);
        assert_eq!(to_mantissa(d("2")), 2_000_000_000_000);
        assert_eq!(to_mantissa(d("-0.5")), -500_000_000_000);
    }
}
