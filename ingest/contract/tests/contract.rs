//! The event contract from a client's point of view: what is accepted, what is
//! rejected and with which field named, and that the published JSON Schema
//! agrees with the code (and does not change without a visible diff).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use tollgate_contract::{
    event_schema, parse_event, parse_event_json, split_body, BatchItem, BodyFormat, Event,
    JsonEventError, Limits, Rejection,
};
use uuid::Uuid;

fn good_call() -> Value {
    json!({
        "schema_version": 1,
        "event_id": Uuid::now_v7(),
        "kind": "ai.call.completed",
        "occurred_at": (Utc::now() - Duration::seconds(3)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "org_id": "acme",
        "team_id": "search",
        "user_id": "u-17",
        "api_key_id": "key-3",
        "call": {
            "call_id": "call-1",
            "trace_id": "trace-1",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "requested_model": "gpt-4o-mini",
            "attempt": 1,
            "operation": "chat",
            "stream": true,
            "duration_ms": 812,
            "ttft_ms": 95,
            "usage": {
                "input_tokens": 1200,
                "output_tokens": 310,
                "cached_input_tokens": 1000,
                "cache_write_tokens": 0,
                "reasoning_tokens": 0,
                "images": 0,
                "audio_seconds": 0.0
            },
            "outcome": "success",
            "http_status": 200,
            "cache_hit": false,
            "prompt_sha256": "a".repeat(64)
        },
        "tags": {"feature": "autocomplete", "experiment": "exp-7"},
        "reported_cost": "0.000412500000"
    })
}

fn good_failed_call() -> Value {
    let mut v = good_call();
    v["kind"] = json!("ai.call.failed");
    v["call"]["outcome"] = json!("rate_limited");
    v["call"]["http_status"] = json!(429);
    v["call"]["usage"] = json!({});
    v["call"]["error"] = json!({"type": "rate_limit_error", "message": "slow down"});
    v
}

fn good_admin() -> Value {
    json!({
        "schema_version": 1,
        "event_id": Uuid::now_v7(),
        "kind": "admin.price.updated",
        "occurred_at": Utc::now().to_rfc3339(),
        "org_id": "acme",
        "team_id": "platform",
        "admin": {"model": "gpt-4o", "input_per_mtok": "2.50"}
    })
}

/// A good call event with `edit` applied.
fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = good_call();
    edit(&mut v);
    v
}

/// Parse `value` as ingest does (`parse_event`), checking on the way that
/// the processors' path from the JSON text (`parse_event_json`: typed
/// first, the `Value` path only for what typed decoding refuses) gives the
/// same event or the same rejection, compact and pretty-printed.
#[track_caller]
fn parse(value: Value) -> Result<Event, Rejection> {
    let now = Utc::now();
    let texts = [
        serde_json::to_vec(&value).unwrap(),
        serde_json::to_vec_pretty(&value).unwrap(),
    ];
    let parsed = parse_event(value, now, &Limits::default());
    for text in texts {
        match parse_event_json(&text, now, &Limits::default()) {
            Err(JsonEventError::NotJson(err)) => {
                panic!("a JSON value read back as not JSON: {err}")
            }
            Err(JsonEventError::Invalid(rejection)) => assert_eq!(Err(&rejection), parsed.as_ref()),
            Ok(event) => assert_eq!(Ok(&event), parsed.as_ref()),
        }
    }
    parsed
}

/// Assert `value` is rejected and the rejection names `field`.
#[track_caller]
fn rejected_at(value: Value, field: &str) -> Rejection {
    match parse(value) {
        Ok(event) => {
            panic!("expected a rejection at {field}, but the event was accepted: {event:?}")
        }
        Err(rejection) => {
            assert_eq!(rejection.field, field, "wrong field named: {rejection}");
            assert!(!rejection.reason.is_empty());
            rejection
        }
    }
}

#[test]
fn valid_events_round_trip() {
    for value in [good_call(), good_failed_call(), good_admin()] {
        let event = parse(value.clone()).unwrap();
        let encoded = serde_json::to_value(&event).unwrap();
        let again = parse(encoded).unwrap();
        assert_eq!(event, again);
        assert_eq!(
            event.event_id.to_string(),
            value["event_id"].as_str().unwrap()
        );
    }
    let event = parse(good_call()).unwrap();
    assert_eq!(event.partition_key(), "search");
    assert!(event.is_call());
    let call = event.call.unwrap();
    assert_eq!(call.usage.cached_input_tokens, 1000);
    assert_eq!(event.reported_cost.as_deref(), Some("0.000412500000"));
}

#[test]
fn optional_fields_take_defaults() {
    let event = parse(with(|v| {
        let call = v["call"].as_object_mut().unwrap();
        for key in [
            "trace_id",
            "requested_model",
            "attempt",
            "stream",
            "ttft_ms",
            "usage",
            "http_status",
            "cache_hit",
            "prompt_sha256",
        ] {
            call.remove(key);
        }
        let top = v.as_object_mut().unwrap();
        for key in ["user_id", "api_key_id", "tags", "reported_cost"] {
            top.remove(key);
        }
    }))
    .unwrap();
    let call = event.call.unwrap();
    assert_eq!(call.attempt, 1);
    assert_eq!(call.usage.input_tokens, 0);
    assert!(event.tags.is_empty());
}

#[test]
fn malformed_json_body_is_rejected_as_a_whole() {
    let err = split_body(br#"[{"schema_version": 1,"#, BodyFormat::JsonArray, 100).unwrap_err();
    assert_eq!(err.field, "body");
    assert!(err.reason.contains("malformed JSON"), "{err}");
    let err = split_body(b"   ", BodyFormat::JsonArray, 100).unwrap_err();
    assert_eq!(err.field, "body");
    let err = split_body(b"[]", BodyFormat::JsonArray, 100).unwrap_err();
    assert_eq!(err.field, "body");
    assert!(err.reason.contains("no events"), "{err}");
    let err = split_body(b"42", BodyFormat::JsonArray, 100).unwrap_err();
    assert_eq!(err.field, "body");
    let err = split_body(b"[{},{},{}]", BodyFormat::JsonArray, 2).unwrap_err();
    assert!(err.reason.contains("at most 2"), "{err}");
}

#[test]
fn an_item_nested_past_the_parser_s_limit_is_refused_alone() {
    // Hostile nesting inside one item of an array: the body still splits
    // (items are kept as their text), the other item is accepted, and the
    // deep one is refused by name, without exhausting the stack.
    let good = good_call();
    let depth = 200_000;
    let deep = format!(
        r#"{{"schema_version": 1, "call": {}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let body = format!("[{good}, {deep}]");
    let items = split_body(body.as_bytes(), BodyFormat::JsonArray, 10).unwrap();
    assert_eq!(items.len(), 2);
    let now = Utc::now();
    let accepted = items[0].event(now, &Limits::default()).unwrap();
    assert_eq!(
        accepted.event_id.to_string(),
        good["event_id"].as_str().unwrap()
    );
    let refused = items[1].event(now, &Limits::default()).unwrap_err();
    assert_eq!(refused.field, "event");
    assert!(refused.reason.contains("recursion limit"), "{refused}");
    assert_eq!(items[1].echoable_event_id(), None);
    // The same item on an NDJSON line.
    let body = format!("{good}\n{deep}\n");
    let items = split_body(body.as_bytes(), BodyFormat::Ndjson, 10).unwrap();
    assert!(items[0].event(now, &Limits::default()).is_ok());
    assert_eq!(
        items[1].event(now, &Limits::default()).unwrap_err().field,
        "event"
    );
}

#[test]
fn a_refused_item_echoes_its_event_id_as_sent() {
    let mut event = good_call();
    event["event_id"] = json!("0190B2D4-NOT-A-V7");
    let body = serde_json::to_vec(&json!([event])).unwrap();
    let items = split_body(&body, BodyFormat::JsonArray, 10).unwrap();
    assert_eq!(
        items[0]
            .event(Utc::now(), &Limits::default())
            .unwrap_err()
            .field,
        "event_id"
    );
    assert_eq!(
        items[0].echoable_event_id().as_deref(),
        Some("0190B2D4-NOT-A-V7")
    );
}

#[test]
fn single_object_body_is_one_event() {
    let body = serde_json::to_vec(&good_call()).unwrap();
    let items = split_body(&body, BodyFormat::JsonArray, 10).unwrap();
    assert_eq!(items.len(), 1);
}

#[test]
fn wrong_type_names_the_field() {
    let r = rejected_at(
        with(|v| v["call"]["duration_ms"] = json!("812")),
        "call.duration_ms",
    );
    assert!(r.reason.contains("invalid type"), "{r}");
    rejected_at(with(|v| v["call"]["stream"] = json!("yes")), "call.stream");
    rejected_at(with(|v| v["org_id"] = json!(42)), "org_id");
    rejected_at(
        with(|v| v["call"]["operation"] = json!("dance")),
        "call.operation",
    );
    let r = rejected_at(json!([1, 2]), "event");
    assert!(r.reason.contains("an array"), "{r}");
}

#[test]
fn missing_required_fields_are_named() {
    rejected_at(
        with(|v| drop(v["call"].as_object_mut().unwrap().remove("model"))),
        "call.model",
    );
    rejected_at(
        with(|v| drop(v.as_object_mut().unwrap().remove("org_id"))),
        "org_id",
    );
    rejected_at(
        with(|v| drop(v.as_object_mut().unwrap().remove("event_id"))),
        "event_id",
    );
    rejected_at(
        with(|v| drop(v.as_object_mut().unwrap().remove("schema_version"))),
        "schema_version",
    );
    rejected_at(
        with(|v| drop(v.as_object_mut().unwrap().remove("call"))),
        "call",
    );
    rejected_at(
        with(|v| v["call"]["error"] = json!({"message": "x"})),
        "call.error.type",
    );
    for field in ["org_id", "team_id"] {
        let r = rejected_at(with(|v| v[field] = json!("   ")), field);
        assert!(r.reason.contains("blank"), "{r:?}");
    }
    rejected_at(with(|v| v["call"]["model"] = json!(" ")), "call.model");
    let r = rejected_at(
        with(|v| v["admin"] = json!({"actor": "cli", "change": "budget"})),
        "admin",
    );
    assert!(
        r.reason.contains("not allowed for kind ai.call.completed"),
        "{r:?}"
    );
}

#[test]
fn an_estimated_input_is_marked_and_must_be_an_estimate() {
    let event = parse(with(|v| {
        v["call"]["usage"]["input_tokens"] = json!(1200);
        v["call"]["usage"]["input_tokens_estimated"] = json!(true);
    }))
    .unwrap();
    assert!(event.call.as_ref().unwrap().usage.input_tokens_estimated);
    let again = serde_json::to_value(&event).unwrap();
    assert_eq!(again["call"]["usage"]["input_tokens_estimated"], true);
    // Not estimated is the default, and is not written out.
    let plain = parse(with(|_| {})).unwrap();
    assert!(!plain.call.as_ref().unwrap().usage.input_tokens_estimated);
    let plain = serde_json::to_value(&plain).unwrap();
    assert!(plain["call"]["usage"]
        .get("input_tokens_estimated")
        .is_none());
    rejected_at(
        with(|v| v["call"]["usage"]["input_tokens_estimated"] = json!("yes")),
        "call.usage.input_tokens_estimated",
    );
    rejected_at(
        with(|v| {
            v["call"]["usage"]["input_tokens"] = json!(0);
            v["call"]["usage"]["cached_input_tokens"] = json!(0);
            v["call"]["usage"]["input_tokens_estimated"] = json!(true);
        }),
        "call.usage.input_tokens_estimated",
    );
}

#[test]
fn negative_token_counts_are_rejected() {
    let r = rejected_at(
        with(|v| v["call"]["usage"]["input_tokens"] = json!(-5)),
        "call.usage.input_tokens",
    );
    assert!(r.reason.contains("-5"), "{r}");
    rejected_at(
        with(|v| v["call"]["usage"]["output_tokens"] = json!(-1)),
        "call.usage.output_tokens",
    );
    rejected_at(
        with(|v| v["call"]["duration_ms"] = json!(-1)),
        "call.duration_ms",
    );
}

#[test]
fn occurred_at_far_in_the_future_or_past_is_rejected() {
    let future = (Utc::now() + Duration::days(2)).to_rfc3339();
    let r = rejected_at(with(|v| v["occurred_at"] = json!(future)), "occurred_at");
    assert!(r.reason.contains("future"), "{r}");
    let old = (Utc::now() - Duration::days(2000)).to_rfc3339();
    rejected_at(with(|v| v["occurred_at"] = json!(old)), "occurred_at");
    rejected_at(
        with(|v| v["occurred_at"] = json!("yesterday")),
        "occurred_at",
    );
    // Small clock skew is fine.
    let skewed = (Utc::now() + Duration::seconds(30)).to_rfc3339();
    parse(with(|v| v["occurred_at"] = json!(skewed))).unwrap();
}

#[test]
fn unknown_schema_version_is_rejected() {
    let r = rejected_at(with(|v| v["schema_version"] = json!(2)), "schema_version");
    assert!(r.reason.contains("unsupported schema version 2"), "{r}");
    rejected_at(with(|v| v["schema_version"] = json!("1")), "schema_version");
}

#[test]
fn event_id_must_be_uuid_v7() {
    let r = rejected_at(with(|v| v["event_id"] = json!(Uuid::new_v4())), "event_id");
    assert!(r.reason.contains("UUIDv7"), "{r}");
    rejected_at(with(|v| v["event_id"] = json!("not-a-uuid")), "event_id");
}

#[test]
fn unknown_kind_is_rejected() {
    let r = rejected_at(with(|v| v["kind"] = json!("ai.call.exploded")), "kind");
    assert!(r.reason.contains("unknown kind"), "{r}");
    rejected_at(with(|v| v["kind"] = json!("admin.")), "kind");
    rejected_at(with(|v| v["kind"] = json!("admin.Price")), "kind");
    // An admin event must not carry a call, and needs its admin payload.
    let mut admin_with_call = good_admin();
    admin_with_call["call"] = good_call()["call"].clone();
    rejected_at(admin_with_call, "call");
    let mut admin_without_payload = good_admin();
    admin_without_payload
        .as_object_mut()
        .unwrap()
        .remove("admin");
    rejected_at(admin_without_payload, "admin");
}

#[test]
fn cached_tokens_may_not_exceed_input_tokens() {
    let r = rejected_at(
        with(|v| {
            v["call"]["usage"]["input_tokens"] = json!(10);
            v["call"]["usage"]["cached_input_tokens"] = json!(11);
        }),
        "call.usage.cached_input_tokens",
    );
    assert!(r.reason.contains("input_tokens"), "{r}");
    rejected_at(with(|v| v["call"]["ttft_ms"] = json!(5000)), "call.ttft_ms");
    rejected_at(with(|v| v["call"]["attempt"] = json!(0)), "call.attempt");
}

/// The token convention (`docs/ingest-api.md`, "The numbers in an event"):
/// cache reads and writes are disjoint parts of the input, reasoning part of
/// the output, and no count exceeds what one call can use.
#[test]
fn token_counts_follow_the_one_convention() {
    // Anthropic's shape converted by the rule: 284 plain + 1251 written + 2884 read.
    let ok = parse(with(|v| {
        v["call"]["usage"]["input_tokens"] = json!(284 + 1251 + 2884);
        v["call"]["usage"]["cached_input_tokens"] = json!(2884);
        v["call"]["usage"]["cache_write_tokens"] = json!(1251);
    }))
    .unwrap();
    assert_eq!(ok.call.unwrap().usage.cache_write_tokens, 1251);
    // Writes counted outside the input (the old reading) are refused.
    let r = rejected_at(
        with(|v| {
            v["call"]["usage"]["input_tokens"] = json!(2884 + 284);
            v["call"]["usage"]["cached_input_tokens"] = json!(2884);
            v["call"]["usage"]["cache_write_tokens"] = json!(1251);
        }),
        "call.usage.cache_write_tokens",
    );
    assert!(r.reason.contains("part of the input"), "{r}");
    // Reasoning beyond the output is refused, not clamped.
    let r = rejected_at(
        with(|v| {
            v["call"]["usage"]["output_tokens"] = json!(10);
            v["call"]["usage"]["reasoning_tokens"] = json!(11);
        }),
        "call.usage.reasoning_tokens",
    );
    assert!(r.reason.contains("part of the output"), "{r}");
    // More tokens than one call can use: each count names its field.
    for field in [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ] {
        // Bounds are checked before the relations between counts.
        let r = rejected_at(
            with(|v| v["call"]["usage"][field] = json!(1u64 << 62)),
            &format!("call.usage.{field}"),
        );
        assert!(r.reason.contains("more than one call can use"), "{r}");
    }
    let r = rejected_at(
        with(|v| v["call"]["usage"]["input_tokens"] = json!(1_000_000_001u64)),
        "call.usage.input_tokens",
    );
    assert!(r.reason.contains("at most 1000000000"), "{r}");
    parse(with(|v| {
        v["call"]["usage"]["input_tokens"] = json!(1_000_000_000u64);
        v["call"]["usage"]["output_tokens"] = json!(1_000_000_000u64);
    }))
    .unwrap();
}

#[test]
fn oversized_strings_are_rejected() {
    let r = rejected_at(
        with(|v| v["call"]["model"] = json!("m".repeat(257))),
        "call.model",
    );
    assert!(r.reason.contains("at most 256"), "{r}");
    rejected_at(with(|v| v["team_id"] = json!("t".repeat(129))), "team_id");
    rejected_at(with(|v| v["team_id"] = json!("")), "team_id");
    rejected_at(
        with(|v| v["call"]["error"] = json!({"type": "x", "message": "e".repeat(2049)})),
        "call.error.message",
    );
    rejected_at(
        with(|v| v["tags"]["feature"] = json!("f".repeat(257))),
        "tags.feature",
    );
    let too_many_tags: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("k{i}"), json!("v"))).collect();
    rejected_at(with(|v| v["tags"] = Value::Object(too_many_tags)), "tags");
    // Length counts characters, not bytes.
    parse(with(|v| v["call"]["model"] = json!("é".repeat(256)))).unwrap();
}

/// A provider's multi-line error message is read with spaces (as the
/// proxy records one), and a call that was not streamed has no time to
/// first token: neither is a reason to lose the call.
#[test]
fn an_error_message_is_one_line_and_only_streams_have_a_ttft() {
    let mut failed = good_failed_call();
    failed["call"]["error"]["message"] = json!("line one\nline two\r\n\tthree");
    let event = parse(failed).unwrap();
    assert_eq!(
        event.call.unwrap().error.unwrap().message,
        "line one line two   three"
    );
    let unstreamed = parse(with(|v| v["call"]["stream"] = json!(false))).unwrap();
    assert_eq!(unstreamed.call.unwrap().ttft_ms, None);
    let streamed = parse(good_call()).unwrap();
    assert_eq!(streamed.call.unwrap().ttft_ms, Some(95));
    // Past the duration, a non-streamed TTFT is dropped, not refused.
    let late = with(|v| {
        v["call"]["stream"] = json!(false);
        v["call"]["ttft_ms"] = json!(5000);
    });
    assert_eq!(parse(late).unwrap().call.unwrap().ttft_ms, None);
}

#[test]
fn control_characters_are_rejected() {
    let r = rejected_at(with(|v| v["user_id"] = json!("u\u{7}17")), "user_id");
    assert!(r.reason.contains("control characters"), "{r}");
    rejected_at(
        with(|v| v["call"]["model"] = json!("gpt\n4o")),
        "call.model",
    );
    rejected_at(
        with(|v| v["tags"]["feature"] = json!("a\u{0}b")),
        "tags.feature",
    );
}

#[test]
fn a_span_id_is_empty_or_a_w3c_span_id() {
    let event = parse(with(|v| v["call"]["span_id"] = json!("00f067aa0ba902b7"))).unwrap();
    assert_eq!(event.call.unwrap().span_id, "00f067aa0ba902b7");
    assert_eq!(parse(good_call()).unwrap().call.unwrap().span_id, "");
    for bad in [
        "00F067AA0BA902B7",
        "00f067aa0ba902",
        "0000000000000000",
        "zzf067aa0ba902b7",
    ] {
        let r = rejected_at(with(|v| v["call"]["span_id"] = json!(bad)), "call.span_id");
        assert!(r.reason.contains("16 lowercase hex"), "{bad}: {r}");
    }
}

#[test]
fn other_semantic_checks_name_the_field() {
    rejected_at(
        with(|v| v["reported_cost"] = json!("-1.0")),
        "reported_cost",
    );
    rejected_at(
        with(|v| v["reported_cost"] = json!("0.0000000000001")),
        "reported_cost",
    );
    // The reason names both limits (a trial sent 27 integer digits and was
    // told only of the fractional one).
    let r = rejected_at(
        with(|v| v["reported_cost"] = json!("1".repeat(27))),
        "reported_cost",
    );
    assert!(r.reason.contains("at most 26 integer"), "{r}");
    // A time that is not RFC 3339 with an offset says what it must be.
    for bad in ["yesterday", "2026-12-07T04:00:00", "2026-12-07"] {
        let r = rejected_at(with(|v| v["occurred_at"] = json!(bad)), "occurred_at");
        assert!(
            r.reason
                .contains("expected an RFC 3339 time with a UTC offset"),
            "{bad}: {r}"
        );
    }
    rejected_at(
        with(|v| v["call"]["prompt_sha256"] = json!("ABC")),
        "call.prompt_sha256",
    );
    rejected_at(
        with(|v| v["call"]["usage"]["audio_seconds"] = json!(1e9)),
        "call.usage.audio_seconds",
    );
    let r = rejected_at(with(|v| v["surprise"] = json!(1)), "surprise");
    assert!(r.reason.contains("unknown field"), "{r}");
    rejected_at(
        with(|v| v["call"]["usage"]["surprise"] = json!(1)),
        "call.usage.surprise",
    );
}

#[test]
fn ndjson_with_a_bad_line_keeps_the_good_lines() {
    let good1 = good_call();
    let good2 = good_admin();
    let invalid = with(|v| v["call"]["usage"]["input_tokens"] = json!(-5));
    let body = format!(
        "{}\n{{\"schema_version\": 1, oops\n\n{}\n{}\n",
        good1, invalid, good2
    );
    let items = split_body(body.as_bytes(), BodyFormat::Ndjson, 100).unwrap();
    assert_eq!(items.len(), 4, "blank lines do not count as events");
    let results: Vec<Result<Event, Rejection>> = items
        .iter()
        .map(|item| match item {
            BatchItem::Json(text) => {
                let parsed = item.event(Utc::now(), &Limits::default());
                // The item's own path answers as `parse_event` on its value.
                assert_eq!(parsed, parse(serde_json::from_str(text.get()).unwrap()));
                parsed
            }
            BatchItem::Malformed(rejection) => Err(rejection.clone()),
        })
        .collect();
    assert_eq!(
        results[0].as_ref().unwrap().event_id.to_string(),
        good1["event_id"].as_str().unwrap()
    );
    let malformed = results[1].as_ref().unwrap_err();
    assert_eq!(malformed.field, "event");
    assert!(malformed.reason.contains("line 2"), "{malformed}");
    assert_eq!(
        results[2].as_ref().unwrap_err().field,
        "call.usage.input_tokens"
    );
    assert_eq!(
        results[3].as_ref().unwrap().event_id.to_string(),
        good2["event_id"].as_str().unwrap()
    );
    assert_eq!(
        BodyFormat::from_content_type(Some("application/x-ndjson")),
        BodyFormat::Ndjson
    );
    assert_eq!(
        BodyFormat::from_content_type(Some("application/json; charset=utf-8")),
        BodyFormat::JsonArray
    );
    assert_eq!(BodyFormat::from_content_type(None), BodyFormat::JsonArray);
}

// ---- the published JSON Schema agrees with the code ----

fn schema_validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&event_schema())
        .expect("event_schema() is a valid JSON Schema")
}

#[test]
fn schema_accepts_the_good_examples() {
    let validator = schema_validator();
    for value in [good_call(), good_failed_call(), good_admin()] {
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "schema rejects a good event: {errors:?}\n{value:#}"
        );
        // And the code accepts them too.
        parse(value).unwrap();
    }
}

#[test]
fn schema_rejects_what_the_code_rejects() {
    let validator = schema_validator();
    let bad = [
        (
            "string duration",
            with(|v| v["call"]["duration_ms"] = json!("812")),
        ),
        (
            "negative tokens",
            with(|v| v["call"]["usage"]["input_tokens"] = json!(-5)),
        ),
        (
            "missing call.model",
            with(|v| drop(v["call"].as_object_mut().unwrap().remove("model"))),
        ),
        (
            "missing org_id",
            with(|v| drop(v.as_object_mut().unwrap().remove("org_id"))),
        ),
        ("schema_version 2", with(|v| v["schema_version"] = json!(2))),
        (
            "unknown kind",
            with(|v| v["kind"] = json!("ai.call.exploded")),
        ),
        (
            "oversized model",
            with(|v| v["call"]["model"] = json!("m".repeat(257))),
        ),
        ("unknown field", with(|v| v["surprise"] = json!(true))),
        ("not a uuid", with(|v| v["event_id"] = json!("not-a-uuid"))),
        (
            "not a date-time",
            with(|v| v["occurred_at"] = json!("yesterday")),
        ),
        ("bad outcome", with(|v| v["call"]["outcome"] = json!("meh"))),
        (
            "bad digest",
            with(|v| v["call"]["prompt_sha256"] = json!("ABC")),
        ),
        ("bad cost", with(|v| v["reported_cost"] = json!("-1"))),
        ("empty team", with(|v| v["team_id"] = json!(""))),
        ("attempt 0", with(|v| v["call"]["attempt"] = json!(0))),
        (
            "more tokens than a call can use",
            with(|v| v["call"]["usage"]["input_tokens"] = json!(1u64 << 62)),
        ),
    ];
    for (what, value) in bad {
        assert!(
            !validator.is_valid(&value),
            "schema accepts an event with {what}"
        );
        assert!(parse(value).is_err(), "code accepts an event with {what}");
    }
}

#[test]
fn schema_names_the_required_fields() {
    let schema = event_schema();
    let required = |v: &Value| -> Vec<String> {
        let mut r: Vec<String> = v["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        required(&schema),
        [
            "event_id",
            "kind",
            "occurred_at",
            "org_id",
            "schema_version",
            "team_id"
        ]
    );
    assert_eq!(
        required(&schema["$defs"]["Call"]),
        [
            "call_id",
            "duration_ms",
            "model",
            "operation",
            "outcome",
            "provider"
        ]
    );
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(schema["properties"]["event_id"]["format"], json!("uuid"));
    assert_eq!(
        schema["properties"]["occurred_at"]["format"],
        json!("date-time")
    );
    for field in [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ] {
        assert_eq!(
            schema["$defs"]["Usage"]["properties"][field]["minimum"],
            json!(0),
            "{field}"
        );
    }
}

/// The whole schema, compared with `ingest/contract/tests/snapshots/event_schema.json`,
/// so any change to the published contract shows up as a diff in review.
/// Regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p tollgate-contract --test contract`.
#[test]
fn schema_snapshot() {
    // The crate's directory as cargo gives it to the running test (a
    // binary reused from a shared build cache keeps the compile-time path
    // of the checkout that built it).
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let path = dir.join("tests/snapshots/event_schema.json");
    let current = format!(
        "{}\n",
        serde_json::to_string_pretty(&event_schema()).unwrap()
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &current).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {} ({err}); create it with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert!(
        stored == current,
        "the event schema changed; if intended, run with UPDATE_SNAPSHOTS=1 and commit {}\n--- stored\n{stored}\n--- current\n{current}",
        path.display()
    );
}

fn failed_with_recovery(recovery: Value) -> Value {
    let mut v = good_failed_call();
    v["call"]["recovery"] = recovery;
    v
}

#[test]
fn recovery_facts_round_trip_and_follow_their_rules() {
    let first = failed_with_recovery(json!({"sequence": 1, "strategy": "first"}));
    let event = parse(first).unwrap();
    let recovery = event.call.unwrap().recovery.unwrap();
    assert_eq!(
        (recovery.sequence, recovery.wait_ms, recovery.last),
        (1, 0, false)
    );

    let later = json!({"sequence": 2, "wait_ms": 400, "strategy": "fallback_provider",
        "from_signature": "00000000000000ab", "from_provider": "openai", "from_model": "gpt-4o",
        "last": true});
    let event = parse(failed_with_recovery(later.clone())).unwrap();
    let recovery = event.call.unwrap().recovery.unwrap();
    assert_eq!(recovery.from_signature.map(|s| s.0), Some(0xab));
    assert_eq!(
        recovery.strategy,
        tollgate_contract::Strategy::FallbackProvider
    );

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"sequence": 0, "strategy": "first"}),
            "call.recovery.sequence",
        ),
        (
            json!({"sequence": 1, "strategy": "retry"}),
            "call.recovery.strategy",
        ),
        (
            json!({"sequence": 2, "strategy": "first"}),
            "call.recovery.strategy",
        ),
        (
            json!({"sequence": 1, "strategy": "first", "from_signature": "00000000000000ab",
                "from_provider": "openai", "from_model": "m"}),
            "call.recovery.from_signature",
        ),
        (
            json!({"sequence": 2, "strategy": "retry"}),
            "call.recovery.from_signature",
        ),
        (
            json!({"sequence": 2, "strategy": "retry", "from_signature": "00000000000000ab",
                "from_model": "m"}),
            "call.recovery.from_provider",
        ),
        (
            json!({"sequence": 1, "strategy": "first", "from_model": "m"}),
            "call.recovery.from_provider",
        ),
        (
            json!({"sequence": 2, "strategy": "retry", "from_signature": "xyz",
                "from_provider": "p", "from_model": "m"}),
            "call.recovery.from_signature",
        ),
        (
            json!({"sequence": 1, "strategy": "guess"}),
            "call.recovery.strategy",
        ),
        (
            json!({"sequence": 1, "strategy": "first", "wait_ms": 86_400_001}),
            "call.recovery.wait_ms",
        ),
        (
            json!({"sequence": 1, "strategy": "first", "extra": 1}),
            "call.recovery.extra",
        ),
    ];
    for (recovery, field) in cases {
        let rejection = rejected_at(failed_with_recovery(recovery.clone()), field);
        assert!(!rejection.reason.is_empty(), "{recovery}");
    }
}

#[test]
fn an_error_signature_must_be_the_errors_own() {
    use tollgate_contract::signature::{signature, ErrorInput};
    let v = good_failed_call();
    let expected = signature(&ErrorInput {
        provider: "openai",
        http_status: 429,
        error_type: "rate_limit_error",
        message: "slow down",
    })
    .id;
    let mut right = v.clone();
    right["call"]["error"]["signature"] = json!(expected.to_string());
    let event = parse(right).unwrap();
    assert_eq!(event.call.unwrap().error.unwrap().signature, Some(expected));

    let mut wrong = v;
    wrong["call"]["error"]["signature"] = json!("0000000000000001");
    let rejection = rejected_at(wrong, "call.error.signature");
    assert!(
        rejection.reason.contains(&expected.to_string()),
        "{rejection}"
    );
}

/// The texts where typed decoding and the `Value` path part ways:
/// `parse_event_json` must still answer exactly as `parse_event` on the
/// decoded `Value` (ingest's path), naming the same field and reason.
#[test]
fn the_processors_typed_path_answers_as_the_value_path_where_they_differ() {
    let now = Utc::now();
    let value_path = |text: &[u8]| match serde_json::from_slice::<Value>(text) {
        Ok(value) => Some(parse_event(value, now, &Limits::default())),
        Err(_) => None,
    };
    let typed_path = |text: &[u8]| match parse_event_json(text, now, &Limits::default()) {
        Ok(event) => Some(Ok(event)),
        Err(JsonEventError::Invalid(rejection)) => Some(Err(rejection)),
        Err(JsonEventError::NotJson(_)) => None,
    };
    let admin = good_admin();
    // serde reads a struct from a sequence of its fields in order; an
    // event is an object.
    let array = json!([
        1,
        admin["event_id"],
        admin["kind"],
        admin["occurred_at"],
        "acme",
        "platform",
        "",
        "",
        null,
        admin["admin"]
    ]);
    let good = serde_json::to_string(&good_call()).unwrap();
    let twice = good.replacen("{", r#"{"org_id":"first","#, 1);
    let version_2 = good.replacen(r#""schema_version":1"#, r#""schema_version":2"#, 1);
    // The answer expected: `None` not JSON, else accepted or the field named.
    type Expected = Option<Result<(), &'static str>>;
    let cases: Vec<(Vec<u8>, Expected)> = vec![
        (array.to_string().into_bytes(), Some(Err("event"))),
        // A key given twice: the Value keeps the last; the text is refused
        // naming it (below, apart: the Value path cannot see it).
        (version_2.into_bytes(), Some(Err("schema_version"))),
        (format!(" \n\t{good}\n").into_bytes(), Some(Ok(()))),
        (format!("{good} trailing").into_bytes(), None),
        (b"not json".to_vec(), None),
        (b"\"a string\"".to_vec(), Some(Err("event"))),
        (Vec::new(), None),
    ];
    for (text, expected) in cases {
        let shown = String::from_utf8_lossy(&text).into_owned();
        let typed = typed_path(&text);
        assert_eq!(typed, value_path(&text), "{shown}");
        match (typed, expected) {
            (None, None) => {}
            (Some(Ok(_)), Some(Ok(()))) => {}
            (Some(Err(rejection)), Some(Err(field))) => {
                assert_eq!(rejection.field, field, "{shown}: {rejection}")
            }
            (typed, expected) => panic!("{shown}: {typed:?}, expected {expected:?}"),
        }
    }
    let refused = typed_path(twice.as_bytes()).unwrap().unwrap_err();
    assert_eq!(refused.field, "org_id", "{refused}");
    assert!(refused.reason.contains("more than once"), "{refused}");
}
