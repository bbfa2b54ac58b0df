//! Price-catalog changes as control-plane events: every version added
//! (import, admin API) and every repricing run is also an `admin.price.*`
//! event on `tollgate.events`, so the audit chain records who changed which
//! price and when. Owns the event shapes and [`PriceAdmin`], which validates
//! and stores a change with its event (the event goes through the outbox,
//! `crate::outbox`, in the change's transaction).

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;
use tollgate_contract::{Event, SCHEMA_VERSION};
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
    /// Nothing was stored.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// Validates and stores price versions, each with its admin event in the
/// outbox (same transaction); an outbox relay puts the events on Kafka.
#[derive(Clone)]
pub struct PriceAdmin {
    pub store: PriceStore,
}

impl PriceAdmin {
    /// Validate, then store (unchanged prices are skipped) with an event
    /// per added version naming `actor`; without an actor, no events
    /// (`tollgate migrate` seeding the default catalog: not a change, and
    /// the rows record their source).
    pub async fn add(
        &self,
        prices: &[NewPrice],
        source: &str,
        actor: Option<&str>,
    ) -> Result<AddOutcome, PriceAdminError> {
        let mut seen: std::collections::HashMap<_, &NewPrice> = std::collections::HashMap::new();
        for p in prices {
            if let Some((field, reason)) = p.problem() {
                return Err(PriceAdminError::Invalid { field, reason });
            }
            // Two different prices for one version in one request would be
            // stored as a version and its correction, and the next identical
            // request would flip them again: refuse.
            let key = (&p.provider, &p.model, p.effective_from);
            if let Some(first) = seen.insert(key, p) {
                if first != p {
                    return Err(PriceAdminError::Invalid {
                        field: "model",
                        reason: format!(
                            "{}/{} from {} is given twice with different prices",
                            p.provider,
                            p.model,
                            p.effective_from.to_rfc3339()
                        ),
                    });
                }
            }
        }
        Ok(self.store.add(prices, source, actor).await?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::Utc;
    use tollgate_contract::{parse_event, Limits};

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
            tiers: Vec::new(),
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
