//! The cost fold: a pure function from a call's usage and the price version
//! in force to its exact cost, and the step that stamps a `calls` row with
//! cost, `priced` and `price_version` before it is inserted.
//!
//! Formula (also in `docs/cost.md`): with `cached ⊆ input` and
//! `reasoning ⊆ output` (the event contract),
//!
//! ```text
//! cost = (input - cached)        * input_per_token
//!      + cached                  * (cache_read_per_token  or input_per_token)
//!      + cache_write             * (cache_write_per_token or input_per_token)
//!      + (output - reasoning)    * output_per_token      -- when the model has a reasoning price
//!      + reasoning               * reasoning_per_token
//!        (or output * output_per_token                   -- when it has none)
//!      + images                  * per_image
//!      + audio_ms / 1000         * per_audio_second
//!      + requests                * per_request           -- 1 for a completed call, 0 for a failed one
//! ```
//!
//! computed exactly and rounded once, per call, to 12 decimal places
//! (banker's rounding); totals are sums of the rounded per-call costs.

use rust_decimal::{Decimal, RoundingStrategy};
use tollgate_ingest::contract::{KIND_CALL_COMPLETED, KIND_CALL_FAILED};

use super::prices::{PriceCatalog, PriceVersion};
use crate::calls_sink::CallRow;

/// Decimal places of every stored cost (`Decimal(38, 12)`).
pub const COST_SCALE: u32 = 12;

/// The usage a cost is computed from, in integers (audio in milliseconds,
/// as stored), so no float reaches the arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillableUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub images: u64,
    pub audio_ms: u64,
    /// Requests charged the per-request fee (1 for a completed call).
    pub requests: u64,
}

impl BillableUsage {
    pub fn of_row(row: &CallRow) -> Self {
        Self {
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
}

/// Why a cost could not be computed (only absurd magnitudes: the result
/// does not fit 28 significant digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cost overflows the decimal range")]
pub struct CostOverflow;

/// The exact cost of one call at `price`, rounded to [`COST_SCALE`] places.
pub fn call_cost(usage: &BillableUsage, price: &PriceVersion) -> Result<Decimal, CostOverflow> {
    let uncached = usage.input_tokens.saturating_sub(usage.cached_input_tokens);
    let cached = usage.cached_input_tokens.min(usage.input_tokens);
    let mut terms: Vec<(Decimal, Decimal)> = vec![
        (Decimal::from(uncached), price.input_per_token),
        (
            Decimal::from(cached),
            price.cache_read_per_token.unwrap_or(price.input_per_token),
        ),
        (
            Decimal::from(usage.cache_write_tokens),
            price.cache_write_per_token.unwrap_or(price.input_per_token),
        ),
        (Decimal::from(usage.images), price.per_image),
        (Decimal::from(usage.requests), price.per_request),
    ];
    match price.reasoning_per_token {
        Some(reasoning_price) => {
            let reasoning = usage.reasoning_tokens.min(usage.output_tokens);
            terms.push((
                Decimal::from(usage.output_tokens - reasoning),
                price.output_per_token,
            ));
            terms.push((Decimal::from(reasoning), reasoning_price));
        }
        None => terms.push((Decimal::from(usage.output_tokens), price.output_per_token)),
    }
    let mut total = Decimal::ZERO;
    for (quantity, unit) in terms {
        total = quantity
            .checked_mul(unit)
            .and_then(|t| total.checked_add(t))
            .ok_or(CostOverflow)?;
    }
    let audio = Decimal::from(usage.audio_ms)
        .checked_mul(price.per_audio_second)
        .and_then(|t| t.checked_div(Decimal::ONE_THOUSAND))
        .ok_or(CostOverflow)?;
    total = total.checked_add(audio).ok_or(CostOverflow)?;
    Ok(round(total))
}

/// Round to [`COST_SCALE`] places, banker's rounding.
pub fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointNearestEven)
}

/// A cost as the `i128` mantissa of ClickHouse `Decimal(38, 12)`.
pub fn to_mantissa(d: Decimal) -> i128 {
    let mut d = round(d);
    d.rescale(COST_SCALE);
    d.mantissa()
}

/// A ClickHouse `Decimal(38, 12)` mantissa as a decimal. `None` when it
/// exceeds rust_decimal's 96-bit range (about 7.9e16 USD).
pub fn from_mantissa(m: i128) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(m, COST_SCALE).ok()
}

/// Whether a row of this kind is billed (and so priced): terminal calls
/// only; blocked calls never reached a provider, lifecycle events would
/// count a call twice.
pub fn is_billable(kind: &str) -> bool {
    kind == KIND_CALL_COMPLETED || kind == KIND_CALL_FAILED
}

/// Stamp `row` with its cost from `catalog`: the version in force at
/// `occurred_at_ms`. Unbillable and unpriced rows get cost 0, `priced` 0
/// and version 0; an overflowing cost is stored as unpriced too (and
/// logged), never as a wrong number.
pub fn price_row(row: &mut CallRow, catalog: &PriceCatalog) {
    row.cost = 0;
    row.priced = 0;
    row.price_version = 0;
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
    match call_cost(&BillableUsage::of_row(row), price) {
        Ok(cost) => {
            row.cost = to_mantissa(cost);
            row.priced = 1;
            row.price_version = u64::try_from(price.id).unwrap_or(0);
        }
        Err(err) => {
            tracing::warn!(event_id = %row.event_id, %err, "call left unpriced");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn price() -> PriceVersion {
        PriceVersion {
            id: 7,
            provider: "openai".into(),
            model: "m".into(),
            effective_from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            input_per_token: d("0.0000025"),
            output_per_token: d("0.00001"),
            cache_read_per_token: Some(d("0.00000125")),
            cache_write_per_token: Some(d("0.000003125")),
            reasoning_per_token: None,
            per_image: d("0.001"),
            per_audio_second: d("0.0001"),
            per_request: d("0.0005"),
            source: "t".into(),
            note: String::new(),
        }
    }

    #[test]
    fn formula_by_hand() {
        let usage = BillableUsage {
            input_tokens: 1000,
            output_tokens: 200,
            cached_input_tokens: 400,
            cache_write_tokens: 100,
            reasoning_tokens: 50,
            images: 2,
            audio_ms: 1500,
            requests: 1,
        };
        // 600*0.0000025 + 400*0.00000125 + 100*0.000003125 + 200*0.00001
        // + 2*0.001 + 1.5*0.0001 + 0.0005
        // = 0.0015 + 0.0005 + 0.0003125 + 0.002 + 0.002 + 0.00015 + 0.0005
        assert_eq!(call_cost(&usage, &price()).unwrap(), d("0.0069625"));
        let mut p = price();
        p.reasoning_per_token = Some(d("0.00002"));
        // output: 150*0.00001 + 50*0.00002 = 0.0015 + 0.001 (was 0.002)
        assert_eq!(call_cost(&usage, &p).unwrap(), d("0.0074625"));
        // No cache prices: cached and written tokens cost plain input.
        p.cache_read_per_token = None;
        p.cache_write_per_token = None;
        // input: 1100 * 0.0000025 = 0.00275 (was 0.0023125)
        assert_eq!(call_cost(&usage, &p).unwrap(), d("0.0079"));
    }

    #[test]
    fn rounds_once_to_twelve_places() {
        let mut p = price();
        p.input_per_token = d("0.0000000000015"); // 1.5e-12
        p.per_request = Decimal::ZERO;
        let usage = BillableUsage {
            input_tokens: 1,
            ..BillableUsage::default()
        };
        assert_eq!(call_cost(&usage, &p).unwrap(), d("0.000000000002"));
        let usage = BillableUsage {
            input_tokens: 3,
            ..BillableUsage::default()
        };
        assert_eq!(
            call_cost(&usage, &p).unwrap(),
            d("0.0000000000045").round_dp_with_strategy(12, RoundingStrategy::MidpointNearestEven)
        );
    }

    #[test]
    fn mantissa_round_trip() {
        let c = d("1.000000000001");
        assert_eq!(to_mantissa(c), 1_000_000_000_001);
        assert_eq!(from_mantissa(1_000_000_000_001).unwrap(), c);
        assert_eq!(to_mantissa(d("2")), 2_000_000_000_000);
        assert_eq!(to_mantissa(d("-0.5")), -500_000_000_000);
    }

    #[test]
    fn absurd_usage_does_not_panic() {
        let mut p = price();
        p.input_per_token = Decimal::MAX;
        let usage = BillableUsage {
            input_tokens: u64::MAX,
            ..BillableUsage::default()
        };
        assert_eq!(call_cost(&usage, &p), Err(CostOverflow));
    }
}
