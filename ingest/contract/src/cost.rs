//! The exact cost of one call: a pure function from its usage and the price
//! version in force to a decimal USD amount. The processors' cost fold
//! stores it on each call; the proxy uses it to settle budget reservations.
//!
//! Formula (also in `docs/cost.md`): with `cached + cache_write ⊆ input`
//! and `reasoning ⊆ output` (the event contract's token convention, OpenAI's:
//! prompt-cache reads and writes are part of the input, reasoning is part of
//! the output),
//!
//! ```text
//! cost = (input - cached - cache_write) * input_per_token
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
//! A cost of [`MAX_CALL_COST`] or more is refused ([`CostOverflow`]): the call
//! is stored unpriced rather than as a number that `Decimal(38, 12)` and the
//! 96-bit decimals of the read side could not carry with all 12 places.
//!
//! A version with long-context tiers is first reduced to the prices of the
//! tier the call's input tokens select ([`PriceVersion::tier_for`]): the
//! whole call is billed at that tier, as the providers (and LiteLLM) do,
//! not only the tokens past the threshold.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::catalog::{PriceTier, PriceVersion};

/// Decimal places of every stored cost (`Decimal(38, 12)`).
pub const COST_SCALE: u32 = 12;

/// The first per-call cost that is not stored (10^16 USD): with 12 places a
/// larger amount needs more than the 28 significant digits of the decimals
/// every reader uses, so it could not be read back exactly.
pub const MAX_CALL_COST: Decimal = Decimal::from_parts(0x6FC1_0000, 0x0023_86F2, 0, false, 0);

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

/// Why a cost could not be computed (only absurd magnitudes: the result
/// reaches [`MAX_CALL_COST`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cost reaches 10^16 USD, beyond what is stored exactly")]
pub struct CostOverflow;

/// The exact cost of one call at `price`, rounded to [`COST_SCALE`] places.
pub fn call_cost(usage: &BillableUsage, price: &PriceVersion) -> Result<Decimal, CostOverflow> {
    let tiered;
    let price = match price.tier_for(usage.input_tokens) {
        Some(tier) => {
            tiered = at_tier(price, tier);
            &tiered
        }
        None => price,
    };
    // Reads and writes are parts of the input (validated at ingest); should
    // a producer outside validation exceed it, the parts are clamped to the
    // input rather than billed on top of it.
    let cached = usage.cached_input_tokens.min(usage.input_tokens);
    let written = usage
        .cache_write_tokens
        .min(usage.input_tokens.saturating_sub(cached));
    let uncached = usage.input_tokens - cached - written;
    let mut terms: Vec<(Decimal, Decimal)> = vec![
        (Decimal::from(uncached), price.input_per_token),
        (
            Decimal::from(cached),
            price.cache_read_per_token.unwrap_or(price.input_per_token),
        ),
        (
            Decimal::from(written),
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
    let cost = round(total);
    if cost.abs() >= MAX_CALL_COST {
        return Err(CostOverflow);
    }
    Ok(cost)
}

/// `price` with its token prices replaced by `tier`'s (a price the tier
/// leaves out stays the version's own).
fn at_tier(price: &PriceVersion, tier: &PriceTier) -> PriceVersion {
    PriceVersion {
        input_per_token: tier.input_per_token,
        output_per_token: tier.output_per_token.unwrap_or(price.output_per_token),
        cache_read_per_token: tier.cache_read_per_token.or(price.cache_read_per_token),
        cache_write_per_token: tier.cache_write_per_token.or(price.cache_write_per_token),
        tiers: Vec::new(),
        ..price.clone()
    }
}

/// Spend at the end of a period at the burn rate so far: the one forecast
/// of budgets, the statement and the cost overview (so a month's forecast
/// is one number wherever it is shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurnRateForecast {
    /// Seconds of the period up to now, counted as at least one hour and
    /// at most the period.
    pub elapsed_seconds: i64,
    /// The period's length in seconds (at least 1).
    pub period_seconds: i64,
    /// `spend × period_seconds / elapsed_seconds`, rounded once to
    /// [`COST_SCALE`] places.
    pub forecast: Decimal,
}

/// The forecast of a period `[start, end)` with `spend` spent by `now`
/// ([`BurnRateForecast`]).
pub fn forecast_at_burn_rate(
    spend: Decimal,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> BurnRateForecast {
    let period_seconds = (end - start).num_seconds().max(1);
    let elapsed_seconds = (now - start)
        .num_seconds()
        .clamp(3_600.min(period_seconds), period_seconds);
    BurnRateForecast {
        elapsed_seconds,
        period_seconds,
        // Past Decimal's range (spend near 10^22 USD): the largest amount.
        forecast: spend
            .checked_mul(Decimal::from(period_seconds))
            .and_then(|x| x.checked_div(Decimal::from(elapsed_seconds)))
            .map_or(Decimal::MAX, round),
    }
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
            tiers: Vec::new(),
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
        // Reads and writes are inside the 1000 input tokens: 500 are plain.
        // 500*0.0000025 + 400*0.00000125 + 100*0.000003125 + 200*0.00001
        // + 2*0.001 + 1.5*0.0001 + 0.0005
        // = 0.00125 + 0.0005 + 0.0003125 + 0.002 + 0.002 + 0.00015 + 0.0005
        assert_eq!(call_cost(&usage, &price()).unwrap(), d("0.0067125"));
        let mut p = price();
        p.reasoning_per_token = Some(d("0.00002"));
        // output: 150*0.00001 + 50*0.00002 = 0.0015 + 0.001 (was 0.002)
        assert_eq!(call_cost(&usage, &p).unwrap(), d("0.0072125"));
        // No cache prices: read and written tokens cost plain input, so the
        // input costs 1000 * 0.0000025 = 0.0025 (was 0.0020625).
        p.cache_read_per_token = None;
        p.cache_write_per_token = None;
        assert_eq!(call_cost(&usage, &p).unwrap(), d("0.00765"));
    }

    /// The issue's call, as Anthropic bills it: 284 uncached, 1251 written
    /// and 2884 read input tokens and 171 output tokens on
    /// claude-sonnet-4-5 ($3 / $15 per million, writes $3.75, reads $0.30).
    /// The proxy records `input_tokens = 284 + 1251 + 2884`.
    #[test]
    fn cache_writes_are_part_of_the_input_not_on_top_of_it() {
        let sonnet = PriceVersion {
            input_per_token: d("0.000003"),
            output_per_token: d("0.000015"),
            cache_read_per_token: Some(d("0.0000003")),
            cache_write_per_token: Some(d("0.00000375")),
            reasoning_per_token: None,
            per_image: Decimal::ZERO,
            per_audio_second: Decimal::ZERO,
            per_request: Decimal::ZERO,
            ..price()
        };
        let usage = BillableUsage {
            input_tokens: 284 + 1251 + 2884,
            output_tokens: 171,
            cached_input_tokens: 2884,
            cache_write_tokens: 1251,
            requests: 1,
            ..BillableUsage::default()
        };
        // 284*3e-6 + 1251*3.75e-6 + 2884*0.3e-6 + 171*15e-6; the old formula
        // charged the 1251 written tokens at the input price too (0.01272645).
        assert_eq!(call_cost(&usage, &sonnet).unwrap(), d("0.00897345"));
    }

    #[test]
    fn parts_beyond_the_input_are_clamped_not_billed_on_top() {
        let p = price();
        let usage = BillableUsage {
            input_tokens: 100,
            cached_input_tokens: 80,
            cache_write_tokens: 50,
            ..BillableUsage::default()
        };
        // 80 read, 20 written (all that is left of the input), 0 plain.
        // 80*0.00000125 + 20*0.000003125 + request 0
        assert_eq!(call_cost(&usage, &p).unwrap(), d("0.0001625"));
    }

    #[test]
    fn costs_from_ten_to_the_sixteen_usd_are_refused() {
        assert_eq!(MAX_CALL_COST, d("10000000000000000"));
        let mut p = price();
        p.per_request = Decimal::ZERO;
        p.input_per_token = d("1");
        let just_below = BillableUsage {
            input_tokens: 9_999_999_999_999_999,
            ..BillableUsage::default()
        };
        assert_eq!(call_cost(&just_below, &p).unwrap(), d("9999999999999999"));
        let at = BillableUsage {
            input_tokens: 10_000_000_000_000_000,
            ..BillableUsage::default()
        };
        assert_eq!(call_cost(&at, &p), Err(CostOverflow));
        p.input_per_token = d("20000000");
        let issue = BillableUsage {
            input_tokens: 1_000_000_000,
            ..BillableUsage::default()
        };
        assert_eq!(call_cost(&issue, &p), Err(CostOverflow));
    }

    /// gemini-2.5-pro: 0.00000125 / 0.00001 up to 200k prompt tokens,
    /// 0.0000025 / 0.000015 above, for the whole call (LiteLLM's file).
    #[test]
    fn long_context_tier_prices_the_whole_call() {
        let mut p = price();
        p.input_per_token = d("0.00000125");
        p.output_per_token = d("0.00001");
        p.cache_read_per_token = Some(d("0.000000125"));
        p.cache_write_per_token = None;
        p.per_image = Decimal::ZERO;
        p.per_audio_second = Decimal::ZERO;
        p.per_request = Decimal::ZERO;
        p.tiers = vec![PriceTier {
            above_tokens: 200_000,
            inclusive: false,
            input_per_token: d("0.0000025"),
            output_per_token: Some(d("0.000015")),
            cache_read_per_token: Some(d("0.00000025")),
            cache_write_per_token: None,
        }];
        let usage = |input| BillableUsage {
            input_tokens: input,
            output_tokens: 1000,
            ..BillableUsage::default()
        };
        // At the threshold: base prices.
        assert_eq!(call_cost(&usage(200_000), &p).unwrap(), d("0.26"));
        // One token past it: every token at the tier.
        // 200001 * 0.0000025 + 1000 * 0.000015
        assert_eq!(call_cost(&usage(200_001), &p).unwrap(), d("0.5150025"));
        // Cached tokens count toward the threshold and take the tier's
        // cache price.
        let cached = BillableUsage {
            cached_input_tokens: 100_001,
            ..usage(200_001)
        };
        // 100000 * 0.0000025 + 100001 * 0.00000025 + 1000 * 0.000015
        assert_eq!(call_cost(&cached, &p).unwrap(), d("0.29000025"));
        // xAI's threshold is inclusive.
        p.tiers[0].inclusive = true;
        assert_eq!(call_cost(&usage(200_000), &p).unwrap(), d("0.515"));
        // A tier without an output price keeps the version's.
        p.tiers[0].output_per_token = None;
        assert_eq!(call_cost(&usage(200_000), &p).unwrap(), d("0.51"));
        // The highest applicable tier wins.
        p.tiers.push(PriceTier {
            above_tokens: 128_000,
            inclusive: false,
            input_per_token: d("0.000002"),
            output_per_token: None,
            cache_read_per_token: None,
            cache_write_per_token: None,
        });
        assert_eq!(call_cost(&usage(150_000), &p).unwrap(), d("0.31"));
        assert_eq!(call_cost(&usage(200_000), &p).unwrap(), d("0.51"));
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
