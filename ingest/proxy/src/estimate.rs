//! The most a call can cost, estimated before it is forwarded, for budget
//! reservations (see [`super::budget`]) — and the exact cost of an emitted
//! event, to settle them.
//!
//! The estimate is an upper bound for text calls that set a maximum output:
//!
//! - input tokens ≤ the request body's bytes (every token covers at least one
//!   byte of the prompt text, and the JSON around the text only adds bytes)
//!   plus [`TEMPLATE_TOKENS`] per message (or Responses API input item) and
//!   per call for the chat template
//!   the provider wraps around it;
//! - output tokens ≤ `max_completion_tokens` / `max_tokens` /
//!   `max_output_tokens` × `n` (choices), or `proxy.budget_default_max_tokens`
//!   when the request sets none (then it is an estimate, not a bound);
//! - each token at the dearest price that can apply to it (input, cache
//!   read or cache write; output or reasoning), plus the per-request fee,
//!   for the dearest of the route's model and its fallbacks.
//!
//! Images and audio in a request are not bounded by its bytes; their
//! per-image and per-second prices are not in the estimate (`docs/cost.md`).
//! Nor is input the provider holds for a Responses API request
//! (`previous_response_id`, `conversation`, a stored `prompt`, what a
//! built-in tool reads): such a request's estimate is not a bound.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_contract::{PriceCatalog, PriceVersion};

use super::budget::round_up;
use tollgate_contract::{Event, KIND_CALL_COMPLETED};

/// Chat-template tokens allowed per message and per call.
pub const TEMPLATE_TOKENS: u64 = 16;

/// Token bounds of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBound {
    pub input: u64,
    pub output: u64,
}

/// The token bounds of `request` (`body_len` bytes); `embeddings` produce
/// no output.
pub fn token_bound(
    request: &Value,
    body_len: usize,
    embeddings: bool,
    default_max_tokens: u64,
) -> TokenBound {
    // Chat's `messages`, or the Responses API's `input` items (embeddings'
    // `input` are texts to embed, wrapped in no template).
    let items = if embeddings { "messages" } else { "input" };
    let messages = ["messages", items]
        .iter()
        .find_map(|f| request.get(*f).and_then(Value::as_array))
        .map_or(0, |m| m.len() as u64);
    let input = (body_len as u64)
        .saturating_add(TEMPLATE_TOKENS.saturating_mul(messages.saturating_add(1)));
    if embeddings {
        return TokenBound { input, output: 0 };
    }
    let max = asked_max_output(request).unwrap_or(default_max_tokens);
    let choices = request.get("n").and_then(count).unwrap_or(1).clamp(1, 128);
    TokenBound {
        input,
        output: max.saturating_mul(choices),
    }
}

/// The maximum output a request asks for, if it sets one.
pub fn asked_max_output(request: &Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|f| request.get(*f).and_then(count))
}

/// A count as a client may spell it: an integer, or (read as the provider
/// might) a non-negative number or numeric text rounded up, so `"n": 1e3`,
/// `500.0` or `"500"` bound the call as 1000 or 500 choices, not as one.
fn count(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    // `as` saturates: a huge count bounds at u64::MAX, which saturates on.
    (n.is_finite() && n >= 0.0).then(|| n.ceil() as u64)
}

/// The most `bound` can cost at `price`.
pub fn bound_cost(bound: TokenBound, price: &PriceVersion) -> Decimal {
    let dearest = |base: Decimal, others: &[Option<Decimal>]| {
        others.iter().flatten().fold(base, |m, p| m.max(*p))
    };
    let input = dearest(
        price.input_per_token,
        &[price.cache_read_per_token, price.cache_write_per_token],
    );
    let output = dearest(price.output_per_token, &[price.reasoning_per_token]);
    let total = Decimal::from(bound.input)
        .checked_mul(input)
        .and_then(|i| {
            Decimal::from(bound.output)
                .checked_mul(output)
                .and_then(|o| i.checked_add(o))
        })
        .and_then(|t| t.checked_add(price.per_request))
        .unwrap_or(Decimal::MAX);
    round_up(total)
}

/// The estimate for a call that may be served by any of `candidates`
/// (provider, model): the dearest. Models without a price estimate zero
/// (their calls are stored unpriced, so they spend nothing).
pub fn estimate(
    bound: TokenBound,
    candidates: &[(&str, &str)],
    catalog: &PriceCatalog,
    now: DateTime<Utc>,
) -> Decimal {
    candidates
        .iter()
        .filter_map(|(provider, model)| catalog.lookup(provider, model, now))
        .map(|price| bound_cost(bound, price))
        .max()
        .unwrap_or(Decimal::ZERO)
}

/// The exact cost of an emitted event, as the processors' cost fold will
/// compute it: terminal calls only, the version in force at `occurred_at`.
/// `None` for unbilled or unpriced events.
pub fn event_cost(event: &Event, catalog: &PriceCatalog) -> Option<Decimal> {
    if !event.kind.is_billable() {
        return None;
    }
    let call = event.call.as_ref()?;
    let usage = call.usage.billable(event.kind == KIND_CALL_COMPLETED);
    // Priced at millisecond precision, like the stored `occurred_at_ms`.
    let at = DateTime::from_timestamp_millis(event.occurred_at.timestamp_millis())?;
    catalog
        .cost_of(&call.provider, &call.model, at, &usage)
        .ok()
        .flatten()
        .map(|(_, cost)| cost)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn price() -> PriceVersion {
        PriceVersion {
            id: 1,
            provider: "openai".into(),
            model: "m".into(),
            effective_from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            input_per_token: d("0.000001"),
            output_per_token: d("0.000002"),
            cache_read_per_token: Some(d("0.0000005")),
            cache_write_per_token: Some(d("0.00000125")),
            reasoning_per_token: None,
            per_image: Decimal::ZERO,
            per_audio_second: Decimal::ZERO,
            per_request: d("0.0001"),
            tiers: Vec::new(),
            source: "t".into(),
            note: String::new(),
        }
    }

    #[test]
    fn bounds_from_the_request() {
        let r = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "n": 2});
        assert_eq!(
            token_bound(&r, 100, false, 4096),
            TokenBound {
                input: 100 + 32,
                output: 100
            }
        );
        // A count spelt as a float or text bounds as the count it reads
        // as (a trial's `"n": 1e3` with `max_tokens: 1` was bounded as one
        // token and passed a 300-token limit).
        for n in [json!(1e3), json!(1000.0), json!("1000"), json!(999.2)] {
            let r = json!({"model": "m", "messages": [], "max_tokens": 1, "n": n});
            assert_eq!(token_bound(&r, 10, false, 4096).output, 128, "{n}");
        }
        for max in [json!(1000.0), json!("1000"), json!(999.5)] {
            let r = json!({"model": "m", "messages": [], "max_completion_tokens": max});
            assert_eq!(token_bound(&r, 10, false, 4096).output, 1000, "{max}");
        }
        for junk in [json!(-5), json!("many"), json!(null), json!(f64::MAX)] {
            let r = json!({"model": "m", "messages": [], "max_tokens": 7, "n": junk});
            assert!(token_bound(&r, 10, false, 4096).output >= 7, "{junk}");
        }
        let r = json!({"model": "m", "messages": [], "max_completion_tokens": 7});
        assert_eq!(token_bound(&r, 10, false, 4096).output, 7);
        let r = json!({"model": "m", "input": "x"});
        assert_eq!(token_bound(&r, 10, false, 4096).output, 4096);
        assert_eq!(token_bound(&r, 10, true, 4096).output, 0);
        // The Responses API: template tokens per input item, its own maximum.
        let r = json!({"model": "m", "max_output_tokens": 9,
                       "input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
        assert_eq!(
            token_bound(&r, 90, false, 4096),
            TokenBound {
                input: 90 + 48,
                output: 9
            }
        );
        // Texts to embed carry no template.
        let r = json!({"model": "m", "input": ["a", "b", "c"]});
        assert_eq!(token_bound(&r, 20, true, 4096).input, 20 + 16);
    }

    #[test]
    fn dearest_prices_and_fee() {
        let b = TokenBound {
            input: 1000,
            output: 100,
        };
        // 1000 × 0.00000125 (cache write is dearest) + 100 × 0.000002 + 0.0001
        assert_eq!(bound_cost(b, &price()), d("0.00155"));
        let catalog = PriceCatalog::new([price()]);
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert_eq!(
            estimate(b, &[("openai", "unknown"), ("openai", "m")], &catalog, now),
            d("0.00155")
        );
        assert_eq!(
            estimate(b, &[("openai", "unknown")], &catalog, now),
            Decimal::ZERO
        );
    }
}
