//! The calls fold's pure part: one event and its Kafka position to one
//! [`CallRow`] of the `calls` facts table, stamped with its cost by the cost
//! step ([`super::cost`]), and the ClickHouse table partition a row lands
//! in. No I/O: the insert is [`super::sink`]'s.
//!
//! Types are chosen to work on ClickHouse 18.16 and current versions alike:
//! `DateTime` travels as `u32` epoch seconds, booleans as `u8`, an optional
//! number as a `has_*` flag plus a value, tags as two parallel arrays.

use chrono::{DateTime, Datelike, Duration, Utc};
use clickhouse::Row;
use serde::Serialize;
use tollgate_contract::catalog::PriceCatalog;
use tollgate_contract::{Event, Rejection};

use super::pattern::pattern_columns;
pub use crate::fold::PartitionKey;
use crate::fold::Positioned;
use crate::rowbinary::EncodedRow;

/// One row of `calls` (see `migrations/clickhouse/0001_calls.sql`). Field
/// names are column names: with validation off the insert names the columns
/// from this struct, so the order here does not have to match the table.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize)]
pub struct CallRow {
    pub event_id: String,
    pub schema_version: u16,
    pub kind: String,
    pub occurred_at: u32,
    pub occurred_at_ms: u64,
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    pub api_key_id: String,
    pub call_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub provider: String,
    pub model: String,
    pub requested_model: String,
    pub attempt: u16,
    pub fallback_of: String,
    pub operation: String,
    pub stream: u8,
    pub duration_ms: u32,
    pub has_ttft: u8,
    pub ttft_ms: u32,
    pub input_tokens: u64,
    /// 1 when `input_tokens` is an estimate (migration 0024).
    pub input_tokens_estimated: u8,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub images: u32,
    pub audio_ms: u64,
    pub outcome: String,
    pub http_status: u16,
    pub error_type: String,
    pub error_message: String,
    pub cache_hit: u8,
    pub prompt_sha256: String,
    pub response_sha256: String,
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
    pub reported_cost: String,
    pub ingested_at: u32,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// Exact cost in USD: the mantissa of `Decimal(38, 12)` (set by
    /// [`crate::cost::price_row`]; 0 until then).
    pub cost: i128,
    /// 1 when `cost` came from a price version, 0 for unpriced or
    /// unbillable rows.
    pub priced: u8,
    /// Id of the PostgreSQL price version used; 0 when unpriced.
    pub price_version: u64,
    /// The catalog entry that priced it, `provider/model` (it differs from
    /// the call's when an alias resolved it); '' when unpriced.
    pub priced_as: String,
    /// The error-pattern and recovery columns (migration 0030, see
    /// [`super::pattern`]).
    pub error_signature: u64,
    pub error_template: String,
    pub error_variables: Vec<String>,
    pub recovery_sequence: u16,
    pub recovery_wait_ms: u32,
    pub recovery_strategy: String,
    pub recovery_from_signature: u64,
    pub recovery_from_provider: String,
    pub recovery_from_model: String,
    pub last_attempt: u8,
}

impl Positioned for CallRow {
    fn position(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

/// What the calls fold and its sink read of a row once it is encoded: its
/// Kafka position, and the cell its cost rollups are leveled by after a
/// failed insert (`team_id`, `occurred_at`). `event_id` is what the window
/// of recent ids is read back from (the in-memory sink reads it here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMeta {
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub occurred_at: u32,
    pub team_id: Box<str>,
    pub event_id: Box<str>,
}

impl Positioned for CallMeta {
    fn position(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

/// A row of `calls` as the fold holds it until its batch is inserted:
/// RowBinary, a quarter of the struct's memory (see [`crate::rowbinary`]).
pub type CallRecord = EncodedRow<CallMeta>;

/// Encode `row` for its batch.
pub fn call_record(row: &CallRow) -> Result<CallRecord, Rejection> {
    let meta = CallMeta {
        kafka_partition: row.kafka_partition,
        kafka_offset: row.kafka_offset,
        occurred_at: row.occurred_at,
        team_id: row.team_id.as_str().into(),
        event_id: row.event_id.as_str().into(),
    };
    EncodedRow::new(row, meta).map_err(|e| Rejection::new("event", e.to_string()))
}

/// The calls fold's row for `event` at `partition`/`offset`, priced from
/// `catalog` (see [`call_row`] and [`super::cost::price_row`]).
pub fn priced_call_row(
    event: &Event,
    partition: i32,
    offset: i64,
    ingested_at: DateTime<Utc>,
    catalog: &PriceCatalog,
) -> Result<Option<CallRow>, Rejection> {
    let mut row = call_row(event, partition, offset, ingested_at)?;
    if let Some(row) = row.as_mut() {
        super::cost::price_row(row, catalog);
    }
    Ok(row)
}

/// Map one validated event to its `calls` row. `Ok(None)` for events that
/// have no row (`admin.*`); `Err` when the event cannot be stored as it is
/// (the caller dead-letters it).
pub fn call_row(
    event: &Event,
    partition: i32,
    offset: i64,
    ingested_at: DateTime<Utc>,
) -> Result<Option<CallRow>, Rejection> {
    let Some(call) = &event.call else {
        if event.is_call() {
            return Err(Rejection::new(
                "call",
                format!("missing for kind {}", event.kind),
            ));
        }
        return Ok(None);
    };
    let occurred_at = epoch_seconds(event.occurred_at).ok_or_else(|| {
        Rejection::new(
            "occurred_at",
            format!(
                "{} is outside the range ClickHouse DateTime can store (1970 to 2105)",
                event.occurred_at.to_rfc3339()
            ),
        )
    })?;
    let occurred_at_ms = u64::try_from(event.occurred_at.timestamp_millis()).unwrap_or(0);
    let usage = &call.usage;
    let (tag_keys, tag_values) = event
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unzip();
    let pattern = pattern_columns(call);
    Ok(Some(CallRow {
        event_id: event.event_id.to_string(),
        schema_version: event.schema_version,
        kind: event.kind.to_string(),
        occurred_at,
        occurred_at_ms,
        org_id: event.org_id.clone(),
        team_id: event.team_id.clone(),
        user_id: event.user_id.clone(),
        api_key_id: event.api_key_id.clone(),
        call_id: call.call_id.clone(),
        trace_id: call.trace_id.clone(),
        span_id: call.span_id.clone(),
        provider: call.provider.clone(),
        model: call.model.clone(),
        requested_model: call.requested_model.clone(),
        attempt: call.attempt,
        fallback_of: call.fallback_of.clone(),
        operation: call.operation.as_str().to_string(),
        stream: u8::from(call.stream),
        duration_ms: call.duration_ms,
        has_ttft: u8::from(call.ttft_ms.is_some()),
        ttft_ms: call.ttft_ms.unwrap_or(0),
        input_tokens: usage.input_tokens,
        input_tokens_estimated: u8::from(usage.input_tokens_estimated),
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        images: usage.images,
        audio_ms: usage.audio_ms(),
        outcome: call.outcome.as_str().to_string(),
        http_status: call.http_status,
        error_type: call
            .error
            .as_ref()
            .map(|e| e.error_type.clone())
            .unwrap_or_default(),
        error_message: call
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
        cache_hit: u8::from(call.cache_hit),
        prompt_sha256: call.prompt_sha256.clone().unwrap_or_default(),
        response_sha256: call.response_sha256.clone().unwrap_or_default(),
        tag_keys,
        tag_values,
        reported_cost: event.reported_cost.clone().unwrap_or_default(),
        ingested_at: epoch_seconds(ingested_at).unwrap_or(0),
        kafka_partition: partition,
        kafka_offset: offset,
        cost: 0,
        priced: 0,
        price_version: 0,
        priced_as: String::new(),
        error_signature: pattern.error_signature,
        error_template: pattern.error_template,
        error_variables: pattern.error_variables,
        recovery_sequence: pattern.recovery_sequence,
        recovery_wait_ms: pattern.recovery_wait_ms,
        recovery_strategy: pattern.recovery_strategy.to_string(),
        recovery_from_signature: pattern.recovery_from_signature,
        recovery_from_provider: pattern.recovery_from_provider,
        recovery_from_model: pattern.recovery_from_model,
        last_attempt: pattern.last_attempt,
    }))
}

fn epoch_seconds(t: DateTime<Utc>) -> Option<u32> {
    u32::try_from(t.timestamp()).ok()
}

/// How ClickHouse evaluates `toYYYYMM(occurred_at)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionClock {
    /// The column (or the server) uses UTC: months are computed exactly.
    Utc,
    /// Some other timezone, whose offset lies within UTC-14h..UTC+14h.
    Other,
}

impl PartitionClock {
    pub fn key(self, occurred_at_secs: u32) -> PartitionKey {
        let Some(t) = DateTime::<Utc>::from_timestamp(i64::from(occurred_at_secs), 0) else {
            return PartitionKey::Uncertain;
        };
        match self {
            PartitionClock::Utc => PartitionKey::Month(yyyymm(t)),
            PartitionClock::Other => {
                let (early, late) = (
                    yyyymm(t - Duration::hours(14)),
                    yyyymm(t + Duration::hours(14)),
                );
                if early == late {
                    PartitionKey::Month(early)
                } else {
                    PartitionKey::Uncertain
                }
            }
        }
    }

    /// Names ClickHouse may report for UTC.
    pub fn from_timezone(name: &str) -> Self {
        match name.trim() {
            "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "UCT" | "Etc/UCT" | "Universal"
            | "Etc/Universal" | "Zulu" | "Etc/Zulu" | "GMT0" | "Etc/GMT0" | "GMT+0"
            | "Etc/GMT+0" | "GMT-0" | "Etc/GMT-0" => PartitionClock::Utc,
            _ => PartitionClock::Other,
        }
    }
}

fn yyyymm(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.year()).unwrap_or(0) * 100 + t.month()
}

/// `DateTime('Europe/Berlin')` -> `Europe/Berlin`.
pub(super) fn column_timezone(column_type: &str) -> Option<String> {
    let inner = column_type.strip_prefix("DateTime(")?.strip_suffix(')')?;
    Some(inner.trim().trim_matches('\'').to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use tollgate_contract::{Call, Operation, Outcome, ProviderError, Usage, SCHEMA_VERSION};
    use uuid::Uuid;

    use super::*;

    fn event() -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            kind: tollgate_contract::EventKind::CallCompleted,
            occurred_at: Utc.with_ymd_and_hms(2026, 3, 31, 23, 59, 58).unwrap()
                + Duration::milliseconds(123),
            org_id: "org".into(),
            team_id: "team".into(),
            user_id: "u".into(),
            api_key_id: "k".into(),
            call: Some(Call {
                call_id: "c1".into(),
                trace_id: "t1".into(),
                span_id: String::new(),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                requested_model: "gpt-4o-latest".into(),
                attempt: 2,
                fallback_of: "c0".into(),
                operation: Operation::Chat,
                stream: true,
                duration_ms: 1500,
                ttft_ms: Some(200),
                usage: Usage {
                    input_tokens: 100,
                    input_tokens_estimated: true,
                    output_tokens: 50,
                    cached_input_tokens: 10,
                    cache_write_tokens: 5,
                    reasoning_tokens: 7,
                    images: 1,
                    audio_seconds: 1.2345,
                },
                outcome: Outcome::RateLimited,
                http_status: 429,
                error: Some(ProviderError {
                    error_type: "rate_limit_error".into(),
                    message: "slow down".into(),
                    signature: None,
                }),
                cache_hit: false,
                prompt_sha256: Some("a".repeat(64)),
                response_sha256: None,
                recovery: None,
            }),
            admin: None,
            tags: BTreeMap::from([
                ("feature".to_string(), "search".to_string()),
                ("variant".to_string(), "b".to_string()),
            ]),
            reported_cost: Some("0.001".into()),
        }
    }

    #[test]
    fn a_record_is_the_row_in_rowbinary_with_its_position_and_cell() {
        let e = event();
        let now = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let row = call_row(&e, 3, 42, now).unwrap().unwrap();
        let record = call_record(&row).unwrap();
        let mut bytes = Vec::new();
        crate::rowbinary::encode(&row, &mut bytes).unwrap();
        assert_eq!(record.bytes(), bytes.as_slice());
        // RowBinary starts with the first field: event_id, length first.
        assert_eq!(record.bytes()[0], 36);
        assert_eq!(&record.bytes()[1..37], row.event_id.as_bytes());
        assert_eq!(record.position(), (3, 42));
        assert_eq!(record.meta.occurred_at, row.occurred_at);
        assert_eq!(&*record.meta.team_id, row.team_id);
        assert_eq!(&*record.meta.event_id, row.event_id);
    }

    #[test]
    fn maps_every_field() {
        let e = event();
        let now = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let row = call_row(&e, 3, 42, now).unwrap().unwrap();
        assert_eq!(row.event_id, e.event_id.to_string());
        assert_eq!(row.kind, "ai.call.completed");
        assert_eq!(row.occurred_at, 1_775_001_598);
        assert_eq!(row.occurred_at_ms, 1_775_001_598_123);
        assert_eq!(
            (row.stream, row.has_ttft, row.ttft_ms, row.cache_hit),
            (1, 1, 200, 0)
        );
        assert_eq!(row.audio_ms, 1235);
        assert_eq!((row.input_tokens, row.input_tokens_estimated), (100, 1));
        assert_eq!(row.operation, "chat");
        assert_eq!(row.outcome, "rate_limited");
        assert_eq!(
            (row.error_type.as_str(), row.error_message.as_str()),
            ("rate_limit_error", "slow down")
        );
        assert_eq!(row.tag_keys, vec!["feature", "variant"]);
        assert_eq!(row.tag_values, vec!["search", "b"]);
        assert_eq!(row.prompt_sha256.len(), 64);
        assert_eq!(row.response_sha256, "");
        assert_eq!(row.reported_cost, "0.001");
        assert_eq!(row.ingested_at, 1_775_001_600);
        assert_eq!((row.kafka_partition, row.kafka_offset), (3, 42));
        assert_eq!(
            (row.attempt, row.fallback_of.as_str(), row.http_status),
            (2, "c0", 429)
        );
    }

    #[test]
    fn absent_options_map_to_zero_and_empty() {
        let mut e = event();
        if let Some(call) = e.call.as_mut() {
            call.ttft_ms = None;
            call.error = None;
            call.usage.audio_seconds = 0.0;
        }
        e.reported_cost = None;
        e.tags.clear();
        let row = call_row(&e, 0, 0, Utc::now()).unwrap().unwrap();
        assert_eq!((row.has_ttft, row.ttft_ms, row.audio_ms), (0, 0, 0));
        assert!(
            row.error_type.is_empty() && row.reported_cost.is_empty() && row.tag_keys.is_empty()
        );
    }

    #[test]
    fn admin_events_have_no_row() {
        let mut e = event();
        e.kind = tollgate_contract::EventKind::admin("admin.price.updated");
        e.call = None;
        e.admin = Some(serde_json::json!({"model": "gpt-4o"}));
        assert_eq!(call_row(&e, 0, 0, Utc::now()).unwrap(), None);
    }

    #[test]
    fn call_kind_without_call_is_rejected() {
        let mut e = event();
        e.call = None;
        assert_eq!(call_row(&e, 0, 0, Utc::now()).unwrap_err().field, "call");
    }

    #[test]
    fn dates_before_1970_are_rejected() {
        let mut e = event();
        e.occurred_at = Utc.with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap();
        assert_eq!(
            call_row(&e, 0, 0, Utc::now()).unwrap_err().field,
            "occurred_at"
        );
    }

    fn price(id: i64, model: &str) -> tollgate_contract::catalog::PriceVersion {
        tollgate_contract::catalog::PriceVersion {
            id,
            provider: "openai".into(),
            model: model.into(),
            effective_from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            input_per_token: "0.0000025".parse().unwrap(),
            output_per_token: "0.00001".parse().unwrap(),
            cache_read_per_token: Some("0.00000125".parse().unwrap()),
            cache_write_per_token: None,
            reasoning_per_token: None,
            per_image: "0.01".parse().unwrap(),
            per_audio_second: rust_decimal::Decimal::ZERO,
            per_request: "0.0001".parse().unwrap(),
            tiers: Vec::new(),
            source: "t".into(),
            note: String::new(),
        }
    }

    #[test]
    fn the_pure_part_stamps_the_cost_and_carries_the_position() {
        use crate::folds::calls::cost::{call_cost, from_mantissa, usage_of_row};

        let catalog = PriceCatalog::new([price(7, "gpt-4o")]);
        let mut e = event();
        if let Some(call) = e.call.as_mut() {
            call.outcome = Outcome::Success;
        }
        let now = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
        let row = priced_call_row(&e, 3, 42, now, &catalog).unwrap().unwrap();
        assert_eq!((row.kafka_partition, row.kafka_offset), (3, 42));
        assert_eq!(row.position(), (3, 42));
        assert_eq!((row.priced, row.price_version), (1, 7));
        assert_eq!(row.priced_as, "openai/gpt-4o");
        let expected = call_cost(&usage_of_row(&row), &price(7, "gpt-4o")).unwrap();
        // 85 uncached, 10 cached and 5 written input tokens, 50 output, 1
        // image, 1 request.
        assert_eq!(expected, "0.0108375".parse().unwrap());
        assert_eq!(from_mantissa(row.cost).unwrap(), expected);
        // The same row without the stamp is the plain mapping.
        let plain = call_row(&e, 3, 42, now).unwrap().unwrap();
        assert_eq!(
            CallRow {
                cost: 0,
                priced: 0,
                price_version: 0,
                priced_as: String::new(),
                ..row.clone()
            },
            plain
        );

        // Unpriced model and unbillable kinds carry no cost.
        let mut other = e.clone();
        if let Some(call) = other.call.as_mut() {
            call.model = "unknown".into();
        }
        let row = priced_call_row(&other, 0, 1, now, &catalog)
            .unwrap()
            .unwrap();
        assert_eq!((row.cost, row.priced, row.price_version), (0, 0, 0));
        let mut blocked = e.clone();
        blocked.kind = tollgate_contract::EventKind::CallBlocked;
        let row = priced_call_row(&blocked, 0, 2, now, &catalog)
            .unwrap()
            .unwrap();
        assert_eq!((row.cost, row.priced), (0, 0));
        assert_eq!(
            priced_call_row(&e, 0, 3, now, &catalog)
                .unwrap()
                .unwrap()
                .kafka_offset,
            3
        );
    }

    #[test]
    fn partition_keys() {
        let t = |y, m, d, h| {
            u32::try_from(Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp()).unwrap()
        };
        assert_eq!(
            PartitionClock::Utc.key(t(2026, 3, 31, 23)),
            PartitionKey::Month(202603)
        );
        assert_eq!(
            PartitionClock::Utc.key(t(2026, 4, 1, 0)),
            PartitionKey::Month(202604)
        );
        assert_eq!(
            PartitionClock::Other.key(t(2026, 3, 15, 12)),
            PartitionKey::Month(202603)
        );
        assert_eq!(
            PartitionClock::Other.key(t(2026, 3, 31, 23)),
            PartitionKey::Uncertain
        );
        assert_eq!(
            PartitionClock::Other.key(t(2026, 4, 1, 13)),
            PartitionKey::Uncertain
        );
        assert_eq!(
            PartitionClock::Other.key(t(2026, 4, 1, 15)),
            PartitionKey::Month(202604)
        );
        assert_eq!(
            PartitionClock::from_timezone("Etc/UTC"),
            PartitionClock::Utc
        );
        assert_eq!(
            PartitionClock::from_timezone("Europe/Berlin"),
            PartitionClock::Other
        );
        assert_eq!(column_timezone("DateTime('UTC')").as_deref(), Some("UTC"));
        assert_eq!(column_timezone("DateTime"), None);
    }
}
