//! The event contract's parser (`tollgate_contract::{split_body,
//! parse_event}`), as ingest runs it on a request body.
//!
//! Input: byte 0 chooses the body format (bit 0: NDJSON, else a JSON array
//! or one object), the rest is the body. Properties:
//!
//! - every refusal names a field and a reason;
//! - an accepted event survives the trip to the processors: serialized as
//!   the producer does, read back as the processors do, it is accepted
//!   again and equal (parse → serialize → parse);
//! - an accepted call's usage keeps the token convention (parts within
//!   their whole, every count within bounds), and pricing it (the cost
//!   fold's `call_cost` at any price) is a cost or a `CostOverflow`, never
//!   a panic.

use chrono::Duration;
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate_contract::duplicate_keys::first_repeated_key;
use tollgate_contract::event::MAX_TOKENS_PER_CALL;
use tollgate_contract::{
    call_cost, parse_event, split_body, BatchItem, BodyFormat, Event, Limits, PriceVersion,
    Rejection, KIND_CALL_COMPLETED,
};

/// Ingest's default limit of events per request.
const MAX_ITEMS: usize = 1000;

/// Wide windows, like the processors' (`processor_limits`): the fuzzer's
/// timestamps are not pinned to the fixed "now".
fn limits() -> Limits {
    Limits {
        max_future_skew: Duration::days(366),
        max_age: Duration::days(366 * 100),
        ..Limits::default()
    }
}

fn named(rejection: &Rejection) {
    assert!(
        !rejection.field.is_empty() && !rejection.reason.is_empty(),
        "a refusal must name the field and the reason: {rejection:?}"
    );
}

/// Check every property on one fuzz input.
pub fn check(data: &[u8]) {
    let [flags, body @ ..] = data else {
        return;
    };
    let format = if flags & 1 == 1 {
        BodyFormat::Ndjson
    } else {
        BodyFormat::JsonArray
    };
    let items = match split_body(body, format, MAX_ITEMS) {
        Ok(items) => items,
        Err(rejection) => return named(&rejection),
    };
    for item in items {
        let value = match &item {
            BatchItem::Json(text) => serde_json::from_str::<serde_json::Value>(text.get()).ok(),
            BatchItem::Malformed(_) => None,
        };
        let answer = item.event(crate::now(), &limits());
        // The item's typed path answers as the `Value` path does, but for
        // a key given twice: a `Value` keeps the last, so only the typed
        // path can see it (it refuses a repeat in the event's own fields
        // and tags; the free-form `admin` object keeps the last, as the
        // `Value` does; tests/hostile_input.rs holds the refusals).
        let repeated = match &item {
            BatchItem::Json(text) => first_repeated_key(text.get().as_bytes()).is_some(),
            BatchItem::Malformed(_) => false,
        };
        if let Some(value) = value.filter(|_| !repeated) {
            let by_value = parse_event(value, crate::now(), &limits());
            assert_eq!(answer, by_value, "an item's typed and value paths disagree");
        }
        match answer {
            Ok(event) => accepted(&event),
            Err(rejection) => named(&rejection),
        }
    }
}

fn accepted(event: &Event) {
    // The producer's encoding (tollgate_control::kafka) and the
    // processors' decoding (processors::consumer::decode).
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => payload,
        Err(err) => panic!("an accepted event does not serialize: {err}"),
    };
    let value: Value = match serde_json::from_slice(&payload) {
        Ok(value) => value,
        Err(err) => panic!("an accepted event's JSON does not read back: {err}"),
    };
    match parse_event(value, crate::now(), &limits()) {
        Ok(again) => assert_eq!(&again, event, "parse → serialize → parse changed the event"),
        Err(rejection) => panic!(
            "an accepted event is refused after the trip to the processors: {rejection}; {}",
            String::from_utf8_lossy(&payload)
        ),
    }
    let Some(call) = &event.call else {
        return;
    };
    let usage = &call.usage;
    for count in [
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    ] {
        assert!(count <= MAX_TOKENS_PER_CALL, "{usage:?}");
    }
    assert!(usage.cached_input_tokens + usage.cache_write_tokens <= usage.input_tokens);
    assert!(usage.reasoning_tokens <= usage.output_tokens);
    let billable = usage.billable(event.kind == KIND_CALL_COMPLETED);
    for price in [
        Decimal::ZERO,
        Decimal::new(25, 7),
        Decimal::new(1, 28),
        Decimal::MAX,
    ] {
        // A cost or CostOverflow; a panic here would stop the cost fold.
        let cost = call_cost(&billable, &version(price));
        if let Ok(cost) = cost {
            assert!(!cost.is_sign_negative() || cost.is_zero(), "{cost}");
        }
    }
}

/// A price version charging `price` for everything.
fn version(price: Decimal) -> PriceVersion {
    PriceVersion {
        id: 1,
        provider: "openai".into(),
        model: "gpt-4o".into(),
        effective_from: crate::now(),
        input_per_token: price,
        output_per_token: price,
        cache_read_per_token: Some(price),
        cache_write_per_token: None,
        reasoning_per_token: Some(price),
        per_image: price,
        per_audio_second: price,
        per_request: price,
        tiers: Vec::new(),
        source: "fuzz".into(),
        note: String::new(),
    }
}
