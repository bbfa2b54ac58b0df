//! Turning simulated events into real calls through `tollgate proxy`: each
//! event becomes an OpenAI (chat or embeddings) or Anthropic (messages)
//! request of the same model, size, streaming flag and failure kind, so the
//! proxy records it as a real call. The tenant comes from the proxy key, not
//! from the event; models the proxy does not route (Google, Mistral in the
//! simulated cast) are skipped by the caller via [`is_routable`].

use serde_json::json;
use tollgate_contract::{Event, Operation};

/// Longest prompt sent, in words (the mock counts one token per word).
const MAX_PROMPT_WORDS: u64 = 400;
/// Largest completion asked for.
const MAX_OUTPUT_TOKENS: u64 = 128;

/// Whether the demo proxy config routes this event's provider.
pub fn is_routable(event: &Event) -> bool {
    event
        .call
        .as_ref()
        .is_some_and(|c| c.provider == "openai" || c.provider == "anthropic")
}

/// What one call through the proxy ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Ok,
    /// The proxy (or the upstream through it) answered an error status; for
    /// simulated failures that is the point.
    Failed(u16),
}

/// Send `event` as a real request to the proxy at `base` (e.g.
/// `http://127.0.0.1:8082`) with the proxy key `key`.
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    event: &Event,
) -> anyhow::Result<CallResult> {
    let Some(call) = event.call.as_ref() else {
        return Ok(CallResult::Ok);
    };
    let words = call.usage.input_tokens.clamp(1, MAX_PROMPT_WORDS);
    let prompt = vec!["token"; words as usize].join(" ");
    let max_tokens = call.usage.output_tokens.clamp(1, MAX_OUTPUT_TOKENS);
    let base = base.trim_end_matches('/');
    let request = if call.provider == "anthropic" {
        client
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": call.model,
                "max_tokens": max_tokens,
                "stream": call.stream,
                "messages": [{"role": "user", "content": prompt}],
            }))
    } else if call.operation == Operation::Embedding {
        client
            .post(format!("{base}/v1/embeddings"))
            .bearer_auth(key)
            .json(&json!({"model": call.model, "input": prompt}))
    } else {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({
                "model": call.model,
                "max_tokens": max_tokens,
                "stream": call.stream,
                "messages": [{"role": "user", "content": prompt}],
            }))
    };
    let request = match call.http_status {
        429 | 500 | 503 | 529 => request.header("x-mock-fail", call.http_status.to_string()),
        504 => request.header("x-mock-fail", "timeout"),
        _ => request,
    };
    let response = request
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("cannot reach the proxy at {base}: {err}"))?;
    let status = response.status();
    // Read the whole body (a stream to its end) so the call completes.
    let _ = response.bytes().await;
    Ok(if status.is_success() {
        CallResult::Ok
    } else {
        CallResult::Failed(status.as_u16())
    })
}
