//! The proxy's reading of provider responses (`tollgate_proxy::observe`),
//! OpenAI's and Anthropic's: SSE streams and whole JSON bodies.
//!
//! Input: byte 0 holds flags (bit 0: strip the usage chunk the proxy asked
//! for, bit 1: a whole JSON body rather than a stream, bit 2: OpenAI's
//! Responses API body and events), bytes 1–2 seed the chunking, the rest is
//! the body upstream sent. Properties:
//!
//! - the body cut at arbitrary byte boundaries reads exactly as the body in
//!   one piece (same bytes to the client, same usage, error, flags, digest);
//! - every byte reaches the client unless the proxy strips its own usage
//!   chunk (then the output is never longer than the input);
//! - the event the proxy records from what it read passes the contract's
//!   validation (the processors dead-letter what does not: a call billed
//!   and not recorded), so token counts are within bounds and consistent,
//!   and an error's type and message are text the contract accepts.

use std::time::Duration;

use axum::http::HeaderMap;
use tollgate_contract::{parse_event, Limits, Operation, Outcome, ProviderError, Usage};
use tollgate_proxy::auth::VirtualKey;
use tollgate_proxy::observe::{Dialect, Observer};
use tollgate_proxy::record::CallContext;
use uuid::Uuid;

/// The input estimate forward.rs uses when no usage was reported: any
/// non-zero value (an estimated input of 0 is refused by the contract, and
/// the proxy's estimate of a request is never 0).
const INPUT_ESTIMATE: u64 = 7;

/// Everything the proxy takes from an observed body.
#[derive(Debug, PartialEq)]
struct Reading {
    to_client: Vec<u8>,
    usage: Usage,
    usage_so_far: (Usage, bool),
    usage_reported: bool,
    content_chunks: u64,
    saw_content: bool,
    complete: bool,
    error: Option<ProviderError>,
    malformed: bool,
    response_model: Option<String>,
    response_sha256: String,
}

fn read(dialect: Dialect, flags: Flags, chunks: &[&[u8]]) -> Reading {
    let Flags {
        stream,
        strip,
        responses,
    } = flags;
    let mut observer = Observer::new(dialect, stream, strip).reading_responses(responses);
    let mut to_client = Vec::new();
    for chunk in chunks {
        to_client.extend_from_slice(&observer.feed(chunk));
    }
    to_client.extend_from_slice(&observer.finish());
    Reading {
        to_client,
        usage: observer.usage.clone(),
        usage_so_far: observer.usage_so_far(),
        usage_reported: observer.usage_reported,
        content_chunks: observer.content_chunks,
        saw_content: observer.saw_content,
        complete: observer.complete,
        error: observer.error.clone(),
        malformed: observer.malformed,
        response_model: observer.response_model.clone(),
        response_sha256: observer.response_sha256(),
    }
}

/// Cut `body` into chunks of pseudo-random lengths (some empty, many of
/// one to three bytes, so every SSE delimiter gets split somewhere).
fn cut(body: &[u8], seed: u16) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x1_0000;
    let mut next = move || {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let r = next();
        let len = match r % 4 {
            0 => 0,
            1 => 1 + (r >> 8) as usize % 3,
            2 => 1 + (r >> 8) as usize % 16,
            _ => 1 + (r >> 8) as usize % 256,
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        chunks.push(head);
        rest = tail;
    }
    chunks
}

/// How a body is read.
#[derive(Debug, Clone, Copy)]
struct Flags {
    stream: bool,
    strip: bool,
    responses: bool,
}

/// Check every property on one fuzz input.
pub fn check(dialect: Dialect, data: &[u8]) {
    let [flags, s0, s1, body @ ..] = data else {
        return;
    };
    let strip = flags & 1 == 1;
    let stream = flags & 2 == 0;
    let responses = flags & 4 == 4 && dialect == Dialect::OpenAi;
    let seed = u16::from_le_bytes([*s0, *s1]);
    let how = Flags {
        stream,
        strip,
        responses,
    };

    let whole = read(dialect, how, &[body]);
    let pieces = cut(body, seed);
    let split = read(dialect, how, &pieces);
    assert_eq!(
        whole,
        split,
        "the body cut into {} chunks reads differently from the body whole",
        pieces.len()
    );
    if strip && stream && dialect == Dialect::OpenAi {
        assert!(whole.to_client.len() <= body.len());
    } else {
        assert_eq!(
            whole.to_client, body,
            "every byte upstream sent must reach the client"
        );
    }
    recorded_event_is_valid(&whole);
}

/// The proxy's event for a call read so (record.rs, as forward.rs fills it
/// in) passes the contract's validation.
fn recorded_event_is_valid(reading: &Reading) {
    let key = VirtualKey {
        id: Uuid::nil(),
        prefix: "fuzzfuzz".into(),
        role: "proxy".into(),
        org_id: "acme".into(),
        team_id: "search".into(),
        user_id: "alice".into(),
        allowed_models: Vec::new(),
    };
    let ctx = CallContext::new(
        key,
        &HeaderMap::new(),
        Operation::Chat,
        "gpt-4o",
        true,
        b"{}",
    );
    let mut record = ctx.attempt("openai", "gpt-4o");
    let (mut usage, estimated) = reading.usage_so_far.clone();
    if !reading.usage_reported {
        usage.input_tokens = usage.input_tokens.max(INPUT_ESTIMATE);
        usage.input_tokens_estimated = true;
    }
    record.usage = usage;
    record.usage_estimated = estimated;
    record.duration = Duration::from_millis(40);
    record.http_status = 200;
    record.response_sha256 = Some(reading.response_sha256.clone());
    if let Some(error) = &reading.error {
        record.outcome = Outcome::Error;
        record.error = Some(error.clone());
    }
    let event = ctx.event(record);
    let value = match serde_json::to_value(&event) {
        Ok(value) => value,
        Err(err) => panic!("the proxy's event does not serialize: {err}"),
    };
    let parsed = parse_event(value, chrono::Utc::now(), &Limits::default());
    assert_eq!(
        parsed.as_ref().err(),
        None,
        "the processors would dead-letter the proxy's event for {:?} / {:?}",
        reading.usage_so_far,
        reading.error
    );
}
