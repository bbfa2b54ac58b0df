//! Builders of the events the tests send: one call event with every field a
//! plausible value, which a test then changes where it matters.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tollgate_contract::{Call, Event, EventKind, Operation, Outcome, Usage, SCHEMA_VERSION};
use uuid::Uuid;

/// A call of `team` (org `org-1`, user `<team>-user`, key `<team>-key`) on
/// `provider`/`model` at `occurred_at`: kind `ai.call.completed` with HTTP
/// 200 when `outcome` is success, else `ai.call.failed` with 500.
pub fn call_event(
    team: &str,
    provider: &str,
    model: &str,
    occurred_at: DateTime<Utc>,
    usage: Usage,
    outcome: Outcome,
) -> Event {
    let success = outcome == Outcome::Success;
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::now_v7(),
        kind: if success {
            EventKind::CallCompleted
        } else {
            EventKind::CallFailed
        },
        occurred_at,
        org_id: "org-1".into(),
        team_id: team.into(),
        user_id: format!("{team}-user"),
        api_key_id: format!("{team}-key"),
        call: Some(Call {
            call_id: Uuid::now_v7().to_string(),
            trace_id: String::new(),
            span_id: String::new(),
            provider: provider.into(),
            model: model.into(),
            requested_model: model.into(),
            attempt: 1,
            fallback_of: String::new(),
            operation: Operation::Chat,
            stream: false,
            duration_ms: 100,
            ttft_ms: None,
            usage,
            outcome,
            http_status: if success { 200 } else { 500 },
            error: None,
            cache_hit: false,
            prompt_sha256: None,
            response_sha256: None,
            recovery: None,
        }),
        admin: None,
        tags: BTreeMap::new(),
        reported_cost: None,
    }
}

/// Token counts: `input` (of which `cached` read from and `cache_write`
/// written to the cache) and `output` (of which `reasoning`).
pub fn usage(input: u64, cached: u64, cache_write: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cache_write_tokens: cache_write,
        reasoning_tokens: reasoning,
        ..Usage::default()
    }
}
