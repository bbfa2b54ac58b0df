//! Price versions and the in-memory [`PriceCatalog`] the cost fold and the
//! proxy's budget reservations look prices up in: for a provider, model and instant, the version in force is
//! the one with the latest `effective_from` at or before the instant; among
//! versions with the same `effective_from` (corrections) the highest id wins.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One stored price version (a row of PostgreSQL `price_versions`). Prices
/// are USD per token unless named otherwise. `None` for a cache or
/// reasoning price means "billed like plain input (cache) or output
/// (reasoning)".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceVersion {
    pub id: i64,
    pub provider: String,
    pub model: String,
    pub effective_from: DateTime<Utc>,
    pub input_per_token: Decimal,
    pub output_per_token: Decimal,
    pub cache_read_per_token: Option<Decimal>,
    pub cache_write_per_token: Option<Decimal>,
    pub reasoning_per_token: Option<Decimal>,
    pub per_image: Decimal,
    pub per_audio_second: Decimal,
    pub per_request: Decimal,
    pub source: String,
    pub note: String,
}

/// A price version to be stored (no id yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    pub provider: String,
    pub model: String,
    pub effective_from: DateTime<Utc>,
    #[serde(default)]
    pub input_per_token: Decimal,
    #[serde(default)]
    pub output_per_token: Decimal,
    #[serde(default)]
    pub cache_read_per_token: Option<Decimal>,
    #[serde(default)]
    pub cache_write_per_token: Option<Decimal>,
    #[serde(default)]
    pub reasoning_per_token: Option<Decimal>,
    #[serde(default)]
    pub per_image: Decimal,
    #[serde(default)]
    pub per_audio_second: Decimal,
    #[serde(default)]
    pub per_request: Decimal,
    #[serde(default)]
    pub note: String,
}

impl NewPrice {
    /// Why this price cannot be stored, if it cannot: `(field, reason)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.provider.trim().is_empty() || self.provider.len() > 128 {
            return Some(("provider", "must be 1 to 128 characters".into()));
        }
        if self.model.trim().is_empty() || self.model.len() > 256 {
            return Some(("model", "must be 1 to 256 characters".into()));
        }
        let prices = [
            ("input_per_token", Some(self.input_per_token)),
            ("output_per_token", Some(self.output_per_token)),
            ("cache_read_per_token", self.cache_read_per_token),
            ("cache_write_per_token", self.cache_write_per_token),
            ("reasoning_per_token", self.reasoning_per_token),
            ("per_image", Some(self.per_image)),
            ("per_audio_second", Some(self.per_audio_second)),
            ("per_request", Some(self.per_request)),
        ];
        for (field, value) in prices {
            if let Some(v) = value {
                if v.is_sign_negative() && !v.is_zero() {
                    return Some((field, format!("{v} is negative")));
                }
            }
        }
        None
    }

    /// Whether `version` holds exactly these prices (ignoring id, source
    /// and note): re-importing the same file changes nothing.
    pub fn same_prices(&self, version: &PriceVersion) -> bool {
        self.provider == version.provider
            && self.model == version.model
            && self.effective_from == version.effective_from
            && self.input_per_token == version.input_per_token
            && self.output_per_token == version.output_per_token
            && self.cache_read_per_token == version.cache_read_per_token
            && self.cache_write_per_token == version.cache_write_per_token
            && self.reasoning_per_token == version.reasoning_per_token
            && self.per_image == version.per_image
            && self.per_audio_second == version.per_audio_second
            && self.per_request == version.per_request
    }
}

/// Every price version, indexed by `(provider, model)`, each list sorted by
/// `(effective_from, id)`.
#[derive(Debug, Clone, Default)]
pub struct PriceCatalog {
    by_model: HashMap<(String, String), Vec<PriceVersion>>,
    versions: usize,
}

impl PriceCatalog {
    pub fn new(versions: impl IntoIterator<Item = PriceVersion>) -> Self {
        let mut by_model: HashMap<(String, String), Vec<PriceVersion>> = HashMap::new();
        let mut count = 0;
        for v in versions {
            count += 1;
            by_model
                .entry((v.provider.clone(), v.model.clone()))
                .or_default()
                .push(v);
        }
        for list in by_model.values_mut() {
            list.sort_by_key(|v| (v.effective_from, v.id));
        }
        Self {
            by_model,
            versions: count,
        }
    }

    /// The version of `provider`/`model` in force at `at`, if any.
    pub fn lookup(&self, provider: &str, model: &str, at: DateTime<Utc>) -> Option<&PriceVersion> {
        let list = self
            .by_model
            .get(&(provider.to_string(), model.to_string()))?;
        // Last version with effective_from <= at; the sort puts the highest
        // id last among equal effective_from.
        let n = list.partition_point(|v| v.effective_from <= at);
        n.checked_sub(1).and_then(|i| list.get(i))
    }

    /// The version in force for `provider`/`model` at `at` and the cost of
    /// `usage` at it; `Ok(None)` when no version is in force (unpriced).
    pub fn cost_of(
        &self,
        provider: &str,
        model: &str,
        at: DateTime<Utc>,
        usage: &crate::cost::BillableUsage,
    ) -> Result<Option<(&PriceVersion, Decimal)>, crate::cost::CostOverflow> {
        match self.lookup(provider, model, at) {
            Some(price) => Ok(Some((price, crate::cost::call_cost(usage, price)?))),
            None => Ok(None),
        }
    }

    /// A version by id.
    pub fn by_id(&self, id: i64) -> Option<&PriceVersion> {
        self.by_model.values().flatten().find(|v| v.id == id)
    }

    pub fn len(&self) -> usize {
        self.versions
    }

    pub fn is_empty(&self) -> bool {
        self.versions == 0
    }
}

/// The catalog a processor or proxy prices with, swapped whole when it is
/// reloaded from PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct SharedCatalog(Arc<RwLock<Arc<PriceCatalog>>>);

impl SharedCatalog {
    pub fn new(catalog: PriceCatalog) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    /// The current catalog (cheap: an `Arc` clone).
    pub fn current(&self) -> Arc<PriceCatalog> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, catalog: PriceCatalog) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    pub(crate) fn version(id: i64, model: &str, from: DateTime<Utc>, input: &str) -> PriceVersion {
        PriceVersion {
            id,
            provider: "openai".into(),
            model: model.into(),
            effective_from: from,
            input_per_token: input.parse().unwrap(),
            output_per_token: Decimal::ZERO,
            cache_read_per_token: None,
            cache_write_per_token: None,
            reasoning_per_token: None,
            per_image: Decimal::ZERO,
            per_audio_second: Decimal::ZERO,
            per_request: Decimal::ZERO,
            source: "test".into(),
            note: String::new(),
        }
    }

    #[test]
    fn lookup_takes_version_in_force_and_latest_correction() {
        let t = |h| Utc.with_ymd_and_hms(2026, 3, 10, h, 0, 0).unwrap();
        let catalog = PriceCatalog::new([
            version(5, "m", t(12), "0.2"),
            version(1, "m", t(0), "0.1"),
            version(9, "m", t(12), "0.3"), // correction of id 5
            version(2, "other", t(0), "9"),
        ]);
        assert!(catalog
            .lookup("openai", "m", t(0) - chrono::Duration::seconds(1))
            .is_none());
        assert_eq!(catalog.lookup("openai", "m", t(0)).unwrap().id, 1);
        assert_eq!(catalog.lookup("openai", "m", t(11)).unwrap().id, 1);
        assert_eq!(catalog.lookup("openai", "m", t(12)).unwrap().id, 9);
        assert!(catalog.lookup("anthropic", "m", t(13)).is_none());
        assert!(catalog.lookup("openai", "unknown", t(13)).is_none());
        assert_eq!(catalog.len(), 4);
    }
}
