//! Reading usage, time to first token and errors out of provider responses
//! as they pass through, without holding them back. A streamed (SSE) body is
//! cut into complete events, each forwarded as soon as its blank line
//! arrives; an OpenAI usage chunk the proxy asked for on the client's behalf
//! is dropped. A non-streamed body is forwarded as it comes and parsed once
//! complete. OpenAI's Responses API speaks OpenAI's errors but has a body
//! and stream events of its own ([`Observer::reading_responses`]). Pure
//! code: no I/O, unit-tested below.

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use sha2::{Digest, Sha256};

use tollgate_contract::event::MAX_TOKENS_PER_CALL;
pub use tollgate_contract::provider_error::provider_error;
// An OpenAI error object: its type, else its code, and its message.
use tollgate_contract::provider_error::error_of_object as openai_error;
use tollgate_contract::{ProviderError, Usage};

/// Non-streamed bodies are kept (for parsing) up to this size.
const MAX_KEPT_BODY: usize = 32 * 1024 * 1024;
/// A single SSE event larger than this is forwarded unparsed.
const MAX_EVENT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
pub struct Observer {
    dialect: Dialect,
    /// The body is a Responses API response (or its stream of events).
    responses: bool,
    stream: bool,
    strip_usage_chunk: bool,
    pending: BytesMut,
    kept: Vec<u8>,
    kept_overflow: bool,
    hasher: Sha256,
    /// Usage as reported so far.
    pub usage: Usage,
    /// Whether the provider reported usage (otherwise it is estimated).
    pub usage_reported: bool,
    /// Content chunks seen (an output-token estimate when usage is missing).
    pub content_chunks: u64,
    /// Set when the first content chunk passed.
    pub saw_content: bool,
    /// The stream's terminal marker (`[DONE]`, `message_stop`) arrived.
    pub complete: bool,
    /// A provider error inside the body (SSE `error` event, error JSON).
    pub error: Option<ProviderError>,
    /// The body could not be parsed as the provider's format.
    pub malformed: bool,
    /// The model the answer names (OpenAI `model`, Anthropic
    /// `message.model`), for the proxy's span.
    pub response_model: Option<String>,
}

impl Observer {
    pub fn new(dialect: Dialect, stream: bool, strip_usage_chunk: bool) -> Self {
        Self {
            dialect,
            responses: false,
            stream,
            strip_usage_chunk,
            pending: BytesMut::new(),
            kept: Vec::new(),
            kept_overflow: false,
            hasher: Sha256::new(),
            usage: Usage::default(),
            usage_reported: false,
            content_chunks: 0,
            saw_content: false,
            complete: false,
            error: None,
            malformed: false,
            response_model: None,
        }
    }

    /// Read the body as the Responses API's (`/v1/responses`) when
    /// `responses`: usage named `input_tokens` / `output_tokens`, streamed
    /// as semantic events ending in `response.completed`.
    pub fn reading_responses(mut self, responses: bool) -> Self {
        self.responses = responses;
        self
    }

    /// Take a chunk from upstream; return the bytes to send to the client now.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.hasher.update(chunk);
        if !self.stream {
            if !self.kept_overflow {
                if self.kept.len() + chunk.len() > MAX_KEPT_BODY {
                    self.kept_overflow = true;
                    self.kept = Vec::new();
                } else {
                    self.kept.extend_from_slice(chunk);
                }
            }
            return Bytes::copy_from_slice(chunk);
        }
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end).freeze();
            if self.observe_event(&event) {
                out.extend_from_slice(&event);
            }
        }
        if self.pending.len() > MAX_EVENT {
            // Not SSE as we know it: pass it on rather than hold it.
            self.malformed = true;
            out.extend_from_slice(&self.pending.split());
        }
        out.freeze()
    }

    /// The upstream body ended: what is left to send, and the final parse.
    pub fn finish(&mut self) -> Bytes {
        if !self.stream {
            if !self.kept_overflow {
                let body = std::mem::take(&mut self.kept);
                self.observe_json_body(&body);
            }
            return Bytes::new();
        }
        let rest = self.pending.split().freeze();
        if !rest.iter().all(u8::is_ascii_whitespace) {
            self.observe_event(&rest);
        }
        rest
    }

    /// SHA-256 (hex) of every byte upstream sent.
    pub fn response_sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Look at one SSE event; `false` when it must not reach the client.
    fn observe_event(&mut self, event: &[u8]) -> bool {
        let text = String::from_utf8_lossy(event);
        let mut name = "";
        let mut data = String::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if data.is_empty() {
            return true; // comments, keep-alives
        }
        if data.trim() == "[DONE]" {
            self.complete = true;
            return true;
        }
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            self.malformed = true;
            return true;
        };
        match self.dialect {
            Dialect::OpenAi if self.responses => {
                self.observe_responses_event(name, &value);
                true
            }
            Dialect::OpenAi => self.observe_openai_chunk(&value),
            Dialect::Anthropic => {
                self.observe_anthropic_event(name, &value);
                true
            }
        }
    }

    /// Keep the first model an answer names.
    fn note_model(&mut self, model: Option<&Value>) {
        if self.response_model.is_none() {
            self.response_model = model.and_then(Value::as_str).map(str::to_string);
        }
    }

    fn observe_openai_chunk(&mut self, chunk: &Value) -> bool {
        self.note_model(chunk.get("model"));
        if let Some(err) = chunk.get("error") {
            self.error = Some(openai_error(err));
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        if let Some(choices) = choices {
            if choices.iter().any(has_openai_content) {
                self.saw_content = true;
                self.content_chunks += 1;
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = openai_usage(usage);
            self.usage_reported = true;
            let only_usage = choices.map(Vec::is_empty).unwrap_or(true);
            if self.strip_usage_chunk && only_usage {
                return false;
            }
        }
        true
    }

    /// One event of a Responses API stream: any `*.delta` is output (text,
    /// refusal, tool arguments, reasoning summary); the terminal
    /// `response.completed` / `response.incomplete` / `response.failed`
    /// carry the response with its usage (and a failure its error); an
    /// `error` event is the provider's error.
    fn observe_responses_event(&mut self, name: &str, event: &Value) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or(name);
        self.note_model(event.pointer("/response/model"));
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.complete = true;
                if let Some(response) = event.get("response") {
                    self.observe_response_object(response);
                }
            }
            // OpenAI documents the error's fields on the event itself and
            // sends them nested under `error`: both are read.
            "error" => {
                let err = event
                    .get("error")
                    .filter(|e| e.is_object())
                    .unwrap_or(event);
                self.error = Some(responses_error(err));
            }
            delta if delta.ends_with(".delta") => {
                self.saw_content = true;
                self.content_chunks += 1;
            }
            // A chat-style `{"error": {...}}` from a compatible server.
            _ => {
                if let Some(err) = event.get("error").filter(|e| e.is_object()) {
                    self.error = Some(openai_error(err));
                }
            }
        }
    }

    /// A Responses API response object: its usage, and its error when it
    /// failed (`error` is `null` otherwise).
    fn observe_response_object(&mut self, response: &Value) {
        if let Some(err) = response.get("error").filter(|e| e.is_object()) {
            self.error = Some(responses_error(err));
        }
        if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
            self.usage = responses_usage(usage);
            self.usage_reported = true;
        }
    }

    fn observe_anthropic_event(&mut self, name: &str, event: &Value) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or(name);
        match kind {
            "message_start" => {
                self.note_model(event.pointer("/message/model"));
                if let Some(usage) = event.pointer("/message/usage") {
                    self.usage = anthropic_usage(usage, &self.usage);
                    self.usage_reported = true;
                }
            }
            "content_block_delta" => {
                self.saw_content = true;
                self.content_chunks += 1;
            }
            "message_delta" => {
                if let Some(usage) = event.get("usage") {
                    self.usage = anthropic_usage(usage, &self.usage);
                    self.usage_reported = true;
                }
            }
            "message_stop" => self.complete = true,
            "error" => {
                if let Some(err) = event.get("error") {
                    self.error = Some(anthropic_error(err));
                }
            }
            _ => {}
        }
    }

    fn observe_json_body(&mut self, body: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            self.malformed = true;
            return;
        };
        self.complete = true;
        self.note_model(value.get("model"));
        match self.dialect {
            Dialect::OpenAi if self.responses => {
                // An HTTP error's body is `{"error": {...}}` as in chat; a
                // response object's `error` is `null` unless it failed.
                self.observe_response_object(&value);
            }
            Dialect::OpenAi => {
                if let Some(err) = value.get("error") {
                    self.error = Some(openai_error(err));
                }
                if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                    self.usage = openai_usage(usage);
                    self.usage_reported = true;
                }
            }
            Dialect::Anthropic => {
                if value.get("type").and_then(Value::as_str) == Some("error") {
                    if let Some(err) = value.get("error") {
                        self.error = Some(anthropic_error(err));
                    }
                }
                if let Some(usage) = value.get("usage") {
                    self.usage = anthropic_usage(usage, &Usage::default());
                    self.usage_reported = true;
                }
            }
        }
    }

    /// Usage to record: as reported, or (cancelled / cut-off streams without
    /// a usage report) output estimated from the content chunks seen.
    /// Always within the contract's token convention (`within_contract`).
    pub fn usage_so_far(&self) -> (Usage, bool) {
        if self.usage_reported && (self.complete || self.dialect == Dialect::Anthropic) {
            let mut usage = self.usage.clone();
            if !self.complete {
                usage.output_tokens = usage.output_tokens.max(self.content_chunks);
            }
            return (within_contract(usage), !self.complete);
        }
        let mut usage = self.usage.clone();
        usage.output_tokens = usage.output_tokens.max(self.content_chunks);
        (within_contract(usage), true)
    }
}

/// A provider's usage in the contract's bounds (`docs/ingest-api.md`, "The
/// numbers in an event"): every count at most `MAX_TOKENS_PER_CALL`, the
/// cache reads and writes parts of the input, reasoning a part of the
/// output. Both providers promise this already; a report that breaks it
/// (a compatible server's, a provider's bug) is clamped the way the cost
/// formula bills such parts anyway (`tollgate_contract::cost`), because the
/// processors would dead-letter the event as it is, and a call the provider
/// bills must not go unrecorded.
fn within_contract(reported: Usage) -> Usage {
    let mut usage = reported.clone();
    usage.input_tokens = usage.input_tokens.min(MAX_TOKENS_PER_CALL);
    usage.output_tokens = usage.output_tokens.min(MAX_TOKENS_PER_CALL);
    usage.cached_input_tokens = usage.cached_input_tokens.min(usage.input_tokens);
    usage.cache_write_tokens = usage
        .cache_write_tokens
        .min(usage.input_tokens - usage.cached_input_tokens);
    usage.reasoning_tokens = usage.reasoning_tokens.min(usage.output_tokens);
    if usage != reported {
        tracing::warn!(
            ?reported,
            recorded = ?usage,
            "provider usage outside the event contract's bounds, clamped"
        );
    }
    usage
}

/// Offset just past the first complete SSE event (blank line) in `buf`.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn has_openai_content(choice: &Value) -> bool {
    // Legacy completions stream `text`, chat streams a `delta`.
    if choice
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
    {
        return true;
    }
    let Some(delta) = choice.get("delta").and_then(Value::as_object) else {
        return false;
    };
    delta.iter().any(|(k, v)| {
        k != "role"
            && match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            }
    })
}

fn n(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI counts cached tokens inside `prompt_tokens` and reasoning tokens
/// inside `completion_tokens`, as the event contract does.
pub fn openai_usage(usage: &Value) -> Usage {
    Usage {
        input_tokens: n(usage, "/prompt_tokens"),
        output_tokens: n(usage, "/completion_tokens"),
        cached_input_tokens: n(usage, "/prompt_tokens_details/cached_tokens"),
        reasoning_tokens: n(usage, "/completion_tokens_details/reasoning_tokens"),
        ..Usage::default()
    }
}

/// The Responses API counts as chat completions do, under other names:
/// cached tokens inside `input_tokens`, reasoning tokens inside
/// `output_tokens`.
pub fn responses_usage(usage: &Value) -> Usage {
    Usage {
        input_tokens: n(usage, "/input_tokens"),
        output_tokens: n(usage, "/output_tokens"),
        cached_input_tokens: n(usage, "/input_tokens_details/cached_tokens"),
        reasoning_tokens: n(usage, "/output_tokens_details/reasoning_tokens"),
        ..Usage::default()
    }
}

/// Anthropic counts cache reads and writes outside `input_tokens`; the
/// contract's `input_tokens` is every prompt token, so they are added.
/// Thinking tokens (`output_tokens_details.thinking_tokens`) are part of
/// `output_tokens`, as the contract's `reasoning_tokens` are.
/// `message_delta` usage is cumulative and may omit fields: missing fields
/// keep their earlier values.
pub fn anthropic_usage(usage: &Value, before: &Usage) -> Usage {
    let get = |key: &str| usage.get(key).and_then(Value::as_u64);
    let uncached = get("input_tokens");
    let cache_read = get("cache_read_input_tokens");
    let cache_write = get("cache_creation_input_tokens");
    let mut out = before.clone();
    if uncached.is_some() || cache_read.is_some() || cache_write.is_some() {
        let cached = cache_read.unwrap_or(before.cached_input_tokens);
        let write = cache_write.unwrap_or(before.cache_write_tokens);
        let base = uncached.unwrap_or_else(|| {
            before.input_tokens.saturating_sub(
                before
                    .cached_input_tokens
                    .saturating_add(before.cache_write_tokens),
            )
        });
        // Saturating: the counts are the provider's, and no count past the
        // contract's bound survives `within_contract` anyway.
        out.input_tokens = base.saturating_add(cached).saturating_add(write);
        out.cached_input_tokens = cached;
        out.cache_write_tokens = write;
    }
    if let Some(output) = get("output_tokens") {
        out.output_tokens = output;
    }
    // Thinking is billed as output and reported as a breakdown of it, like
    // OpenAI's reasoning tokens.
    if let Some(thinking) = usage
        .pointer("/output_tokens_details/thinking_tokens")
        .and_then(Value::as_u64)
    {
        out.reasoning_tokens = thinking;
    }
    out
}

/// A Responses API error (a failed response's `error`, or an `error`
/// stream event's): its `code`, else its `type` (other than `error`), and
/// its `message`. HTTP error bodies are not read here but by
/// [`error_from_body`], as chat's are (type first).
fn responses_error(err: &Value) -> ProviderError {
    let text = |field: &str| {
        err.get(field)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty() && *t != "error")
    };
    let kind = text("code").or_else(|| text("type")).unwrap_or("unknown");
    let message = err.get("message").and_then(Value::as_str).unwrap_or("");
    provider_error(kind, message)
}

fn anthropic_error(err: &Value) -> ProviderError {
    let kind = err.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let message = err.get("message").and_then(Value::as_str).unwrap_or("");
    provider_error(kind, message)
}

/// The provider error in an error response body, if it has one.
pub fn error_from_body(dialect: Dialect, body: &[u8]) -> Option<ProviderError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let err = value.get("error")?;
    Some(match dialect {
        Dialect::OpenAi => openai_error(err),
        Dialect::Anthropic => anthropic_error(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(obs: &mut Observer, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&obs.feed(c.as_bytes()));
        }
        out.extend_from_slice(&obs.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn openai_stream_usage_is_read_and_injected_chunk_stripped() {
        let usage = r#"{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}"#;
        let chunks = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choi",
            "ces\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        ];
        let tail = format!("data: {{\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n");
        let mut all: Vec<&str> = chunks.to_vec();
        all.push(&tail);
        let mut obs = Observer::new(Dialect::OpenAi, true, true);
        let out = run(&mut obs, &all);
        assert!(!out.contains("prompt_tokens"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert!(obs.saw_content && obs.complete && obs.usage_reported);
        assert_eq!(obs.content_chunks, 1);
        assert_eq!(
            obs.usage,
            Usage {
                input_tokens: 7,
                output_tokens: 3,
                cached_input_tokens: 2,
                reasoning_tokens: 1,
                ..Usage::default()
            }
        );
        let mut keep = Observer::new(Dialect::OpenAi, true, false);
        assert!(run(&mut keep, &all).contains("prompt_tokens"));
        assert_eq!(keep.response_sha256(), obs.response_sha256());
    }

    #[test]
    fn anthropic_stream_usage_adds_cache_tokens() {
        let events = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":3,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let mut obs = Observer::new(Dialect::Anthropic, true, false);
        let out = run(&mut obs, &events);
        assert_eq!(out, events.concat());
        assert_eq!(
            obs.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 9,
                cached_input_tokens: 3,
                cache_write_tokens: 2,
                ..Usage::default()
            }
        );
        assert!(obs.complete);
        assert_eq!(obs.usage_so_far(), (obs.usage.clone(), false));
    }

    #[test]
    fn anthropic_thinking_tokens_are_reasoning() {
        let json = r#"{"usage":{"input_tokens":4,"output_tokens":30,"output_tokens_details":{"thinking_tokens":12}}}"#;
        let mut obs = Observer::new(Dialect::Anthropic, false, false);
        run(&mut obs, &[json]);
        assert_eq!(
            (obs.usage.output_tokens, obs.usage.reasoning_tokens),
            (30, 12)
        );
        let events = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":9,\"output_tokens_details\":{\"thinking_tokens\":4}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":11}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let mut obs = Observer::new(Dialect::Anthropic, true, false);
        run(&mut obs, &events);
        assert_eq!(
            (obs.usage.output_tokens, obs.usage.reasoning_tokens),
            (11, 4),
            "a later delta without the details keeps the earlier count"
        );
    }

    #[test]
    fn cut_off_stream_estimates_output() {
        let mut obs = Observer::new(Dialect::OpenAi, true, true);
        run(&mut obs, &["data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"]);
        let (usage, estimated) = obs.usage_so_far();
        assert!(estimated);
        assert_eq!(usage.output_tokens, 2);
    }

    /// Found by the `sse_openai` fuzz target (docs/fuzzing.md): a usage
    /// report whose parts exceed their whole (here 1 cached token of 0
    /// prompt tokens) went into the event as it was, and the processors
    /// dead-lettered it, leaving the call unrecorded. The parts are clamped
    /// to their whole, the counts to the contract's bound.
    #[test]
    fn usage_outside_the_contract_is_clamped_to_it() {
        let usage = r#"{"prompt_tokens":0,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":4}}"#;
        let stream = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}]}}\n\ndata: {{\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n"
        );
        let mut obs = Observer::new(Dialect::OpenAi, true, true);
        run(&mut obs, &[&stream]);
        let (usage, estimated) = obs.usage_so_far();
        assert!(!estimated);
        assert_eq!(
            usage,
            Usage {
                input_tokens: 0,
                output_tokens: 3,
                cached_input_tokens: 0,
                reasoning_tokens: 3,
                ..Usage::default()
            }
        );
        // Counts past 10^9 (and past u64, which used to overflow while
        // Anthropic's parts were added up) stop at the bound.
        let json = r#"{"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":1,"cache_creation_input_tokens":1,"output_tokens":2000000000}}"#;
        let mut obs = Observer::new(Dialect::Anthropic, false, false);
        run(&mut obs, &[json]);
        let (usage, _) = obs.usage_so_far();
        assert_eq!(
            usage,
            Usage {
                input_tokens: MAX_TOKENS_PER_CALL,
                output_tokens: MAX_TOKENS_PER_CALL,
                cached_input_tokens: 1,
                cache_write_tokens: 1,
                ..Usage::default()
            }
        );
    }

    /// Found by the `sse_anthropic` fuzz target (docs/fuzzing.md): an error
    /// message with a control character (here DEL) made the event one the
    /// contract refuses ("must not contain control characters"), so the
    /// processors dead-lettered the failed call. Control characters become
    /// spaces; the type and message are cut to the contract's lengths in
    /// characters, not bytes.
    #[test]
    fn provider_errors_are_text_the_contract_accepts() {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"contact sales to discuss your \u007foptions\nfor a rate limit increase"}}"#;
        let mut obs = Observer::new(Dialect::Anthropic, false, false);
        run(&mut obs, &[body]);
        let err = obs.error.clone().unwrap();
        assert_eq!(
            err.message,
            "contact sales to discuss your  options for a rate limit increase"
        );
        assert_eq!(
            err,
            error_from_body(Dialect::Anthropic, body.as_bytes()).unwrap()
        );
        // A type of control characters or spaces is blank to the
        // contract, which would refuse it: `unknown` instead.
        let err = provider_error("\n", &"é".repeat(3000));
        assert_eq!(err.error_type, "unknown");
        assert_eq!(provider_error("  \t ", "").error_type, "unknown");
        assert_eq!(err.message.chars().count(), 2048);
        assert_eq!(provider_error("", "").error_type, "unknown");
    }

    #[test]
    fn json_bodies_and_errors() {
        let mut obs = Observer::new(Dialect::OpenAi, false, false);
        let body = r#"{"usage":{"prompt_tokens":4,"completion_tokens":2}}"#;
        assert_eq!(run(&mut obs, &[&body[..10], &body[10..]]), body);
        assert_eq!((obs.usage.input_tokens, obs.usage.output_tokens), (4, 2));
        let mut bad = Observer::new(Dialect::OpenAi, false, false);
        run(&mut bad, &["{\"usage\": "]);
        assert!(bad.malformed);
        let err = error_from_body(
            Dialect::Anthropic,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        )
        .unwrap();
        assert_eq!(
            (err.error_type.as_str(), err.message.as_str()),
            ("rate_limit_error", "slow")
        );
        // OpenAI: the type wins; the code stands in for a missing or empty one.
        let openai = |body: &str| {
            error_from_body(Dialect::OpenAi, body.as_bytes())
                .unwrap()
                .error_type
        };
        assert_eq!(
            openai(
                r#"{"error":{"message":"m","type":"invalid_request_error","code":"context_length_exceeded"}}"#
            ),
            "invalid_request_error"
        );
        assert_eq!(
            openai(r#"{"error":{"message":"m","type":null,"code":"rate_limit_exceeded"}}"#),
            "rate_limit_exceeded"
        );
        assert_eq!(
            openai(r#"{"error":{"message":"m","type":"","code":"rate_limit_exceeded"}}"#),
            "rate_limit_exceeded"
        );
    }

    #[test]
    fn responses_api_bodies_and_streams_carry_their_usage() {
        let usage = r#"{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":10,"output_tokens_details":{"reasoning_tokens":6},"total_tokens":22}"#;
        let want = Usage {
            input_tokens: 12,
            output_tokens: 10,
            cached_input_tokens: 4,
            reasoning_tokens: 6,
            ..Usage::default()
        };
        // A whole response: `error` is null, which is no error.
        let body = format!(
            r#"{{"id":"resp_1","object":"response","status":"completed","error":null,"model":"o3-mini","output":[],"usage":{usage}}}"#
        );
        let mut obs = Observer::new(Dialect::OpenAi, false, false).reading_responses(true);
        run(&mut obs, &[&body]);
        assert_eq!(
            (&obs.usage, obs.usage_reported, obs.complete),
            (&want, true, true)
        );
        assert!(obs.error.is_none(), "{:?}", obs.error);
        assert_eq!(obs.response_model.as_deref(), Some("o3-mini"));
        assert_eq!(obs.usage_so_far(), (want.clone(), false));

        // A stream: deltas are output, the usage arrives with the last event
        // (there is no `[DONE]`), and every byte reaches the client.
        let events = [
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"model\":\"o3-mini\",\"status\":\"in_progress\",\"error\":null,\"usage\":null}}\n\n".to_string(),
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"a\"}\n\n".to_string(),
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"delta\":\" b\"}\n\n".to_string(),
            "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"sequence_number\":3,\"text\":\"a b\"}\n\n".to_string(),
            format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":4,\"response\":{{\"model\":\"o3-mini\",\"status\":\"completed\",\"error\":null,\"usage\":{usage}}}}}\n\n"),
        ];
        let chunks: Vec<&str> = events.iter().map(String::as_str).collect();
        let mut obs = Observer::new(Dialect::OpenAi, true, false).reading_responses(true);
        let out = run(&mut obs, &chunks);
        assert_eq!(out, events.concat());
        assert!(obs.saw_content && obs.complete && obs.error.is_none());
        assert_eq!((obs.content_chunks, &obs.usage), (2, &want));
        assert_eq!(obs.usage_so_far(), (want, false));

        // Cut before `response.completed`: output estimated from the deltas.
        let mut cut = Observer::new(Dialect::OpenAi, true, false).reading_responses(true);
        run(&mut cut, &chunks[..3]);
        assert!(!cut.complete);
        assert_eq!(cut.usage_so_far().0.output_tokens, 2);
        assert!(cut.usage_so_far().1, "estimated");

        // A failed response and an `error` event name the provider's code.
        let failed = r#"event: response.failed
data: {"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"boom"},"usage":null}}

"#;
        let mut obs = Observer::new(Dialect::OpenAi, true, false).reading_responses(true);
        run(&mut obs, &[failed]);
        let err = obs.error.clone().unwrap();
        assert_eq!(
            (err.error_type.as_str(), err.message.as_str()),
            ("server_error", "boom")
        );
        assert!(obs.complete && !obs.usage_reported);
        let error = "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow\",\"param\":null}\n\n";
        let mut obs = Observer::new(Dialect::OpenAi, true, false).reading_responses(true);
        run(&mut obs, &[error]);
        assert_eq!(obs.error.unwrap().error_type, "rate_limit_exceeded");
        let nested = "event: error\ndata: {\"type\":\"error\",\"sequence_number\":2,\"error\":{\"type\":\"too_many_requests\",\"code\":\"too_many_requests\",\"message\":\"slow down\"}}\n\n";
        let mut obs = Observer::new(Dialect::OpenAi, true, false).reading_responses(true);
        run(&mut obs, &[nested]);
        let err = obs.error.unwrap();
        assert_eq!(
            (err.error_type.as_str(), err.message.as_str()),
            ("too_many_requests", "slow down")
        );
        let bare = "data: {\"type\":\"error\",\"message\":\"no code\"}\n\n";
        let mut obs = Observer::new(Dialect::OpenAi, true, false).reading_responses(true);
        run(&mut obs, &[bare]);
        assert_eq!(obs.error.unwrap().error_type, "unknown");
    }
}
