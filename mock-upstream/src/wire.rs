//! The provider wire formats the mock writes: OpenAI chat completions (JSON
//! and SSE chunks), the OpenAI Responses API (JSON and its semantic SSE
//! events), embeddings, and Anthropic messages (JSON and SSE events).

use axum::body::Bytes;
use serde_json::{json, Value};

use crate::errors::Dialect;
use crate::Plan;

const WORDS: [&str; 16] = [
    "tollgate", "counts", "every", "token", "the", "mock", "streams", "words", "one", "at", "a",
    "time", "so", "tests", "know", "totals",
];

/// The reply, one word per token; every word after the first has a leading space.
pub fn reply_tokens(n: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let word = WORDS[(i as usize) % WORDS.len()];
            if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Words in a message `content`: a string, or an array of parts with `text`.
fn content_words(content: &Value) -> u64 {
    match content {
        Value::String(s) => words(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.get("text")
                    .and_then(Value::as_str)
                    .map(words)
                    .unwrap_or(0)
            })
            .sum(),
        _ => 0,
    }
}

/// Whitespace-separated words in the prompt of a request.
pub fn count_input_words(body: &Value, dialect: Dialect) -> u64 {
    let messages: u64 = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| m.get("content").map(content_words).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    let system = match dialect {
        Dialect::Anthropic => body.get("system").map(content_words).unwrap_or(0),
        Dialect::OpenAi => 0,
    };
    // Embeddings' `input` (a string or strings), or the Responses API's (a
    // string, or items whose `content` is text or parts), and its
    // `instructions`.
    let input = match body.get("input") {
        Some(Value::String(s)) => words(s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => words(s),
                _ => item.get("content").map(content_words).unwrap_or(0),
            })
            .sum(),
        _ => 0,
    };
    let instructions = body
        .get("instructions")
        .and_then(Value::as_str)
        .map(words)
        .unwrap_or(0);
    messages + system + input + instructions
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn openai_usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

pub fn openai_completion(id: &str, plan: &Plan) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": plan.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": plan.tokens().concat(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": openai_usage(plan),
        "system_fingerprint": "fp_mock"
    })
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Every SSE event of a streamed chat completion, `[DONE]` included. The
/// first content chunk (index 0) carries the role too.
pub fn openai_chunks(id: &str, plan: &Plan, include_usage: bool) -> Vec<Bytes> {
    let created = now();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": plan.model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut events = Vec::new();
    for (i, token) in plan.tokens().iter().enumerate() {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": token, "refusal": null})
        } else {
            json!({"content": token})
        };
        events.push(sse_data(&chunk(delta, Value::Null)));
    }
    events.push(sse_data(&chunk(json!({}), json!("stop"))));
    if include_usage {
        let usage = json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": plan.model, "system_fingerprint": "fp_mock",
            "choices": [], "usage": openai_usage(plan)
        });
        events.push(sse_data(&usage));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// The Responses API's `usage`: cached tokens inside `input_tokens`,
/// reasoning tokens inside `output_tokens`, as in chat completions.
fn responses_usage(plan: &Plan) -> Value {
    json!({
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.input_tokens + plan.output_tokens
    })
}

/// The assistant message of a response, `text` so far.
fn responses_message(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
    })
}

/// A Responses API response object: `status` `in_progress` (no output, no
/// usage yet) or `completed`.
pub fn responses_object(id: &str, plan: &Plan, request: &Value, completed: bool) -> Value {
    let (status, output, usage) = if completed {
        (
            "completed",
            json!([responses_message(id, &plan.tokens().concat(), "completed")]),
            responses_usage(plan),
        )
    } else {
        ("in_progress", json!([]), Value::Null)
    };
    json!({
        "id": id, "object": "response", "created_at": now(), "status": status,
        "error": null, "incomplete_details": null,
        "instructions": request.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": request.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "model": plan.model, "output": output, "parallel_tool_calls": true,
        "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
        "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null, "metadata": {}
    })
}

/// Every SSE event of a streamed response (`event:` names and `type`s as
/// OpenAI sends them, each with its `sequence_number`; no `[DONE]`), and
/// the index of the first `response.output_text.delta`.
pub fn responses_events(id: &str, plan: &Plan, request: &Value) -> (Vec<Bytes>, usize) {
    let item = format!("msg_{id}");
    let mut bodies = vec![
        json!({"type": "response.created", "response": responses_object(id, plan, request, false)}),
        json!({"type": "response.in_progress", "response": responses_object(id, plan, request, false)}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "id": item, "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": item, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}),
    ];
    let first = bodies.len();
    for token in plan.tokens() {
        bodies.push(
            json!({"type": "response.output_text.delta", "item_id": item, "output_index": 0,
                           "content_index": 0, "delta": token}),
        );
    }
    let text = plan.tokens().concat();
    bodies.push(
        json!({"type": "response.output_text.done", "item_id": item, "output_index": 0,
                       "content_index": 0, "text": text}),
    );
    bodies.push(json!({"type": "response.content_part.done", "item_id": item, "output_index": 0,
                       "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
    bodies.push(
        json!({"type": "response.output_item.done", "output_index": 0,
                       "item": responses_message(id, &text, "completed")}),
    );
    bodies.push(json!({"type": "response.completed", "response": responses_object(id, plan, request, true)}));
    let events = bodies
        .into_iter()
        .enumerate()
        .map(|(i, mut body)| {
            body["sequence_number"] = json!(i);
            let name = body["type"].as_str().unwrap_or_default().to_string();
            sse_event(&name, &body)
        })
        .collect();
    (events, first)
}

/// The `error` event a Responses API stream fails with, at `sequence`, as
/// OpenAI sends it: the error's fields nested under `error` (its reference
/// documents them on the event itself).
pub fn responses_error_event(sequence: usize) -> Bytes {
    sse_event(
        "error",
        &json!({"type": "error", "sequence_number": sequence,
                "error": {"type": "server_error", "code": "server_error",
                          "message": "The server had an error while processing your request.",
                          "param": null}}),
    )
}

pub fn openai_embeddings(request: &Value, plan: &Plan) -> Value {
    let inputs = match request.get("input") {
        Some(Value::Array(items)) => items.len().max(1),
        _ => 1,
    };
    let dims = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 4096) as usize;
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let vector: Vec<f64> = (0..dims)
                .map(|d| (((i * 31 + d * 7) % 100) as f64) / 100.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": plan.model,
        "usage": {"prompt_tokens": plan.input_tokens, "total_tokens": plan.input_tokens}
    })
}

/// Anthropic counts cache reads and writes outside `input_tokens`.
fn anthropic_uncached_input(plan: &Plan) -> u64 {
    plan.input_tokens - plan.cached_tokens - plan.cache_write_tokens
}

pub fn anthropic_message(id: &str, plan: &Plan) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": plan.tokens().concat()}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": anthropic_final_usage(plan, json!({
            "input_tokens": anthropic_uncached_input(plan),
            "cache_creation_input_tokens": plan.cache_write_tokens,
            "cache_read_input_tokens": plan.cached_tokens,
        }))
    })
}

/// `usage` with the final output count, and the thinking tokens inside it
/// when there are any.
fn anthropic_final_usage(plan: &Plan, mut usage: Value) -> Value {
    usage["output_tokens"] = json!(plan.output_tokens);
    if plan.reasoning_tokens > 0 {
        usage["output_tokens_details"] = json!({"thinking_tokens": plan.reasoning_tokens});
    }
    usage
}

fn sse_event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// Every SSE event of a streamed message, and the index of the first
/// `content_block_delta` (where time to first token is spent).
pub fn anthropic_events(id: &str, plan: &Plan) -> (Vec<Bytes>, usize) {
    let mut events = vec![
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": plan.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {
                    "input_tokens": anthropic_uncached_input(plan),
                    "cache_creation_input_tokens": plan.cache_write_tokens,
                    "cache_read_input_tokens": plan.cached_tokens,
                    "output_tokens": 1
                }
            }}),
        ),
        sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse_event("ping", &json!({"type": "ping"})),
    ];
    let first = events.len();
    for token in plan.tokens() {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": anthropic_final_usage(plan, json!({}))}),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    (events, first)
}
