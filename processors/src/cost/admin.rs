//! Price-catalog changes as control-plane events: every version added
//! (import, admin API) and every repricing run is also an `admin.price.*`
//! event on `tollgate.events`, so the audit chain records who changed which
//! price and when. Owns the event shapes and [`PriceAdmin`], which stores a
//! change and then publishes it.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;
use tollgate_ingest::contract::{Event, SCHEMA_VERSION};
use tollgate_ingest::producer::EventProducer;
use uuid::Uuid;

use super::prices::{NewPrice, PriceVersion};
use super::store::{AddOutcome, PriceStore};

/// Org and team of control-plane events that belong to no tenant.
pub const CONTROL_PLANE_TENANT: &str = "_tollgate";

/// `admin.price.added`: a first version for this `effective_from`.
pub const KIND_PRICE_ADDED: &str = "admin.price.added";
/// `admin.price.corrected`: a version superseding one with the same
/// `effective_from`.
pub const KIND_PRICE_CORRECTED: &str = "admin.price.corrected";
/// `admin.price.repriced`: a `tollgate reprice` run.
pub const KIND_PRICE_REPRICED: &str = "admin.price.repriced";

/// A control-plane event with `payload` as its `admin` object.
pub fn admin_event(kind: &str, actor: &str, payload: serde_json::Value) -> Event {
    let mut admin = json!({ "actor": actor });
    if let (Some(obj), serde_json::Value::Object(extra)) = (admin.as_object_mut(), payload) {
        obj.extend(extra);
    }
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::now_v7(),
        kind: kind.to_string(),
        occurred_at: Utc::now(),
        org_id: CONTROL_PLANE_TENANT.into(),
        team_id: CONTROL_PLANE_TENANT.into(),
        user_id: String::new(),
        api_key_id: String::new(),
        call: None,
        admin: Some(admin),
        tags: BTreeMap::new(),
        reported_cost: None,
    }
}

/// The event for one stored version; `corrected` when it supersedes an
/// earlier version with the same `effective_from`.
pub fn price_event(version: &PriceVersion, corrected: bool, actor: &str) -> Event {
    let kind = if corrected {
        KIND_PRICE_CORRECTED
    } else {
        KIND_PRICE_ADDED
    };
    admin_event(kind, actor, json!({ "price_version": version }))
}

/// Why a price change failed.
#[derive(Debug, thiserror::Error)]
pub enum PriceAdminError {
    #[error("invalid price: `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The versions are stored (and price new calls) but their audit events
    /// did not reach Kafka.
    #[error(
        "{stored} price version(s) stored, but their admin events were not produced: {reason}"
    )]
    NotPublished { stored: usize, reason: String },
}

/// Stores price versions, then publishes them as admin events (unless
/// `producer` is `None`: `tollgate migrate` seeds the default catalog
/// without events, so a fresh topic holds only what clients sent).
#[derive(Clone)]
pub struct PriceAdmin {
    pub store: PriceStore,
    pub producer: Option<EventProducer>,
}

impl PriceAdmin {
    /// Validate, store (unchanged prices are skipped) and publish.
    pub async fn add(
        &self,
        prices: &[NewPrice],
        source: &str,
        actor: &str,
    ) -> Result<AddOutcome, PriceAdminError> {
        for p in prices {
            if let Some((field, reason)) = p.problem() {
                return Err(PriceAdminError::Invalid { field, reason });
            }
        }
        let existing = self.store.all().await?;
        let outcome = self.store.add(prices, source).await?;
        let events: Vec<Event> = outcome
            .added
            .iter()
            .map(|v| {
                let corrected = existing.iter().any(|e| {
                    e.provider == v.provider
                        && e.model == v.model
                        && e.effective_from == v.effective_from
                });
                price_event(v, corrected, actor)
            })
            .collect();
        self.publish(&events, outcome.added.len()).await?;
        Ok(outcome)
    }

    /// Produce `events`; `stored` is how many changes they describe.
    pub async fn publish(&self, events: &[Event], stored: usize) -> Result<(), PriceAdminError> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let failures: Vec<String> = producer
            .send_batch(events)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.reason))
            .collect();
        match failures.first() {
            None => Ok(()),
            Some(reason) => Err(PriceAdminError::NotPublished {
                stored,
                reason: reason.clone(),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Utc;
    use tollgate_ingest::contract::{parse_event, Limits};

    use super::*;

    #[test]
    fn price_events_pass_the_contract() {
        let v = PriceVersion {
            id: 3,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            effective_from: Utc::now(),
            input_per_token: "0.0000025".parse().unwrap(),
            output_per_token: "0.00001".parse().unwrap(),
            cache_read_per_token: None,
            cache_write_per_token: None,
            reasoning_per_token: None,
            per_image: Default::default(),
            per_audio_second: Default::default(),
            per_request: Default::default(),
            source: "t".into(),
            note: String::new(),
        };
        let event = price_event(&v, true, "key:abc");
        assert_eq!(event.kind, KIND_PRICE_CORRECTED);
        let value = serde_json::to_value(&event).unwrap();
        let parsed = parse_event(value, Utc::now(), &Limits::default()).unwrap();
        let admin = parsed.admin.unwrap();
        assert_eq!(admin["actor"], "key:abc");
        // Prices travel as exact decimal strings.
        assert_eq!(admin["price_version"]["input_per_token"], "0.0000025");
    }
}
