//! The LiteLLM price-file import (`tollgate_control::prices::litellm`),
//! as `tollgate prices import` and the admin pages run it.
//!
//! Input: the file's text. Properties:
//!
//! - a refusal says why (a field refusal names the entry and the field);
//! - every imported price can be stored (`NewPrice::problem` is clear) and
//!   read back exactly: each decimal survives its text form (PostgreSQL
//!   NUMERIC, the admin API's decimal strings) unchanged;
//! - pricing a call at an imported price (the cost fold's `call_cost`, the
//!   proxy's budget bound) is a cost or an overflow, never a panic, at
//!   any usage up to the contract's bounds, around every tier threshold.

use rust_decimal::Decimal;
use tollgate_contract::catalog::decimal_str;
use tollgate_contract::event::MAX_TOKENS_PER_CALL;
use tollgate_contract::{call_cost, BillableUsage, NewPrice, PriceVersion};
use tollgate_control::prices::litellm::{self, PriceFileError};
use tollgate_proxy::estimate::{bound_cost, TokenBound};

/// Check every property on one fuzz input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match litellm::parse(text, crate::now()) {
        Ok(parsed) => parsed,
        Err(err) => {
            if let PriceFileError::Field { field, reason, .. } = &err {
                assert!(!field.is_empty() && !reason.is_empty(), "{err}");
            }
            assert!(!err.to_string().is_empty());
            return;
        }
    };
    for price in &parsed.prices {
        assert_eq!(price.problem(), None, "{price:?}");
        for value in decimals(price) {
            let text = value.to_string();
            assert_eq!(
                decimal_str::parse(&text).ok(),
                Some(value),
                "{value:?} does not survive its text form {text}"
            );
        }
        priced(price);
    }
}

fn decimals(price: &NewPrice) -> Vec<Decimal> {
    let mut all = vec![
        price.input_per_token,
        price.output_per_token,
        price.per_image,
        price.per_audio_second,
        price.per_request,
    ];
    all.extend(
        [
            price.cache_read_per_token,
            price.cache_write_per_token,
            price.reasoning_per_token,
        ]
        .into_iter()
        .flatten(),
    );
    for tier in &price.tiers {
        all.push(tier.input_per_token);
        all.extend(
            [
                tier.output_per_token,
                tier.cache_read_per_token,
                tier.cache_write_per_token,
            ]
            .into_iter()
            .flatten(),
        );
    }
    all
}

fn priced(price: &NewPrice) {
    let version = PriceVersion {
        id: 1,
        provider: price.provider.clone(),
        model: price.model.clone(),
        effective_from: price.effective_from,
        input_per_token: price.input_per_token,
        output_per_token: price.output_per_token,
        cache_read_per_token: price.cache_read_per_token,
        cache_write_per_token: price.cache_write_per_token,
        reasoning_per_token: price.reasoning_per_token,
        per_image: price.per_image,
        per_audio_second: price.per_audio_second,
        per_request: price.per_request,
        tiers: price.sorted_tiers(),
        source: "litellm".into(),
        note: String::new(),
    };
    let mut inputs = vec![0, 1, 1000, MAX_TOKENS_PER_CALL];
    for tier in &version.tiers {
        inputs.extend([tier.above_tokens.saturating_sub(1), tier.above_tokens]);
        inputs.push(tier.above_tokens.saturating_add(1));
    }
    for input in inputs {
        let usage = BillableUsage {
            input_tokens: input,
            output_tokens: input,
            cached_input_tokens: input / 2,
            cache_write_tokens: input / 4,
            reasoning_tokens: input / 3,
            images: u64::from(u32::MAX),
            audio_ms: 86_400_000,
            requests: 1,
        };
        if let Ok(cost) = call_cost(&usage, &version) {
            assert!(!cost.is_sign_negative() || cost.is_zero(), "{cost}");
        }
        let bound = bound_cost(
            TokenBound {
                input,
                output: input,
            },
            &version,
        );
        assert!(!bound.is_sign_negative() || bound.is_zero(), "{bound}");
    }
}
