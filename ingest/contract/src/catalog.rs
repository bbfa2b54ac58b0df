//! Price versions and the in-memory [`PriceCatalog`] the cost fold and the
//! proxy's budget reservations look prices up in: for a provider, model and instant, the version in force is
//! the one with the latest `effective_from` at or before the instant; among
//! versions with the same `effective_from` (corrections) the highest id wins.
//! An event's provider and model that the catalog lacks resolve through
//! [`crate::aliases`]; the version found names the entry that priced it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Rejection;

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
    /// Long-context tiers, ascending by threshold (see [`PriceTier`]).
    #[serde(default)]
    pub tiers: Vec<PriceTier>,
    pub source: String,
    pub note: String,
}

/// Prices that replace a version's token prices for a whole call once its
/// input tokens (all of them: cached and cache writes are subsets of input)
/// pass `above_tokens` — LiteLLM's `*_above_200k_tokens` keys. Strictly
/// more than the threshold, or at least the threshold when `inclusive`
/// (xAI's rule). The highest tier that applies wins. A price the tier leaves
/// `None` is the version's own; reasoning, image, audio and request prices
/// have no tiers. Stored in PostgreSQL `price_tiers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub above_tokens: u64,
    #[serde(default)]
    pub inclusive: bool,
    #[serde(deserialize_with = "decimal_str::required")]
    pub input_per_token: Decimal,
    #[serde(default, deserialize_with = "decimal_str::optional")]
    pub output_per_token: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal_str::optional")]
    pub cache_read_per_token: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal_str::optional")]
    pub cache_write_per_token: Option<Decimal>,
}

impl PriceTier {
    /// Whether a call with `input_tokens` input tokens is billed at this tier.
    pub fn applies(&self, input_tokens: u64) -> bool {
        input_tokens > self.above_tokens || (self.inclusive && input_tokens == self.above_tokens)
    }
}

impl PriceVersion {
    /// The tier a call with `input_tokens` input tokens is billed at, if any.
    pub fn tier_for(&self, input_tokens: u64) -> Option<&PriceTier> {
        self.tiers
            .iter()
            .filter(|t| t.applies(input_tokens))
            .max_by_key(|t| t.above_tokens)
    }
}

/// Prices in admin requests are decimal strings only: a JSON number would
/// pass through a float on its way to a `Decimal` (0.000000123456789012345678
/// became 0.00000012345678901234568), and an exact price is the point.
pub mod decimal_str {
    use rust_decimal::Decimal;
    use serde::de::{Error, Visitor};
    use serde::Deserializer;

    struct Exact;

    impl Visitor<'_> for Exact {
        type Value = Decimal;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a decimal string such as \"0.0000025\" (JSON numbers are not accepted: they would pass through a float)")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Decimal, E> {
            parse(v).map_err(E::custom)
        }
    }

    /// An exact decimal from its text; no rounding (too many digits is an
    /// error, not a rounded price).
    pub fn parse(v: &str) -> Result<Decimal, String> {
        Decimal::from_str_exact(v)
            .map(|d| d.normalize())
            .map_err(|e| format!("`{v}` is not an exact decimal: {e}"))
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(Exact)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        struct Maybe;
        impl<'de> Visitor<'de> for Maybe {
            type Value = Option<Decimal>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                Exact.expecting(f)
            }
            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                required(d).map(Some)
            }
        }
        d.deserialize_option(Maybe)
    }
}

/// A price version to be stored (no id yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    pub provider: String,
    pub model: String,
    pub effective_from: DateTime<Utc>,
    #[serde(default, deserialize_with = "decimal_str::required")]
    pub input_per_token: Decimal,
    #[serde(default, deserialize_with = "decimal_str::required")]
    pub output_per_token: Decimal,
    #[serde(default, deserialize_with = "decimal_str::optional")]
    pub cache_read_per_token: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal_str::optional")]
    pub cache_write_per_token: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal_str::optional")]
    pub reasoning_per_token: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal_str::required")]
    pub per_image: Decimal,
    #[serde(default, deserialize_with = "decimal_str::required")]
    pub per_audio_second: Decimal,
    #[serde(default, deserialize_with = "decimal_str::required")]
    pub per_request: Decimal,
    /// Long-context tiers (any order; stored ascending).
    #[serde(default)]
    pub tiers: Vec<PriceTier>,
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
        let mut thresholds = std::collections::BTreeSet::new();
        for t in &self.tiers {
            if i64::try_from(t.above_tokens).is_err() {
                return Some((
                    "tiers",
                    format!("threshold {} is too large", t.above_tokens),
                ));
            }
            if !thresholds.insert(t.above_tokens) {
                return Some((
                    "tiers",
                    format!("two tiers above {} tokens", t.above_tokens),
                ));
            }
            let prices = [
                Some(t.input_per_token),
                t.output_per_token,
                t.cache_read_per_token,
                t.cache_write_per_token,
            ];
            if let Some(v) = prices
                .into_iter()
                .flatten()
                .find(|v| v.is_sign_negative() && !v.is_zero())
            {
                return Some((
                    "tiers",
                    format!("tier above {} tokens: {v} is negative", t.above_tokens),
                ));
            }
        }
        None
    }

    /// The tiers as stored: ascending by threshold.
    pub fn sorted_tiers(&self) -> Vec<PriceTier> {
        let mut tiers = self.tiers.clone();
        tiers.sort_by_key(|t| t.above_tokens);
        tiers
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
            && self.sorted_tiers() == version.tiers
    }

    /// Whether these prices equal `version`'s, whatever its `effective_from`
    /// (an import without an explicit date re-finding the price in force).
    pub fn same_prices_any_date(&self, version: &PriceVersion) -> bool {
        let mut dated = self.clone();
        dated.effective_from = version.effective_from;
        dated.same_prices(version)
    }
}

/// Price fields of `POST /api/v1/admin/prices` (and of its `tiers`): each
/// must be a decimal string.
pub const PRICE_FIELDS: [&str; 8] = [
    "input_per_token",
    "output_per_token",
    "cache_read_per_token",
    "cache_write_per_token",
    "reasoning_per_token",
    "per_image",
    "per_audio_second",
    "per_request",
];

/// Check that every price in `object` is an exact decimal string, naming
/// the field otherwise (`prefix` locates it: `[2].`, `tiers[0].`). A JSON
/// number is refused: whatever reads it, serde's path to a `Decimal` goes
/// through an `f64` and silently rounds the price.
fn check_price_fields(
    object: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
) -> Result<(), Rejection> {
    for field in PRICE_FIELDS {
        let bad = |reason: String| Rejection::new(format!("{prefix}{field}"), reason);
        match object.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(text)) => {
                decimal_str::parse(text).map_err(bad)?;
            }
            Some(serde_json::Value::Number(n)) => {
                return Err(bad(format!(
                    "must be a decimal string such as \"0.0000025\", not the JSON number {n} \
                     (a number would pass through a float and lose digits)"
                )))
            }
            Some(other) => return Err(bad(format!("must be a decimal string, not {other}"))),
        }
    }
    if let Some(tiers) = object.get("tiers").and_then(|t| t.as_array()) {
        for (i, tier) in tiers.iter().enumerate() {
            if let Some(tier) = tier.as_object() {
                check_price_fields(tier, &format!("{prefix}tiers[{i}]."))?;
            }
        }
    }
    Ok(())
}

/// The prices of a `POST /api/v1/admin/prices` body (and of the admin
/// page's form, which builds the same JSON): one price object or a list of
/// them; a problem names its field as the body spells it (`[1].model`,
/// `tiers[0].input_per_token`).
pub fn new_prices_of_json(body: serde_json::Value) -> Result<Vec<NewPrice>, Rejection> {
    let (items, many) = match body {
        serde_json::Value::Array(items) => (items, true),
        one @ serde_json::Value::Object(_) => (vec![one], false),
        _ => {
            return Err(Rejection::new(
                "body",
                "must be a price object or a list of them",
            ))
        }
    };
    let mut prices = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = if many {
            format!("[{i}].")
        } else {
            String::new()
        };
        let Some(object) = item.as_object() else {
            let field = if many {
                format!("[{i}]")
            } else {
                "body".into()
            };
            return Err(Rejection::new(field, "must be a price object"));
        };
        check_price_fields(object, &prefix)?;
        let price: NewPrice = serde_path_to_error::deserialize(item).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // Unknown and missing fields are named in the message, not the
            // path.
            let field = match (path.as_str(), message.split('`').nth(1)) {
                ("." | "", Some(name)) => name.to_string(),
                ("." | "", None) => "body".to_string(),
                (p, _) => p.to_string(),
            };
            Rejection::new(format!("{prefix}{field}"), message)
        })?;
        prices.push(price);
    }
    Ok(prices)
}

/// Every price version, indexed by provider, then model (looked up by
/// `&str`, without building a key: the calls fold looks up every call),
/// each list sorted by `(effective_from, id)`.
#[derive(Debug, Clone, Default)]
pub struct PriceCatalog {
    by_model: HashMap<String, HashMap<String, Vec<PriceVersion>>>,
    versions: usize,
}

impl PriceCatalog {
    pub fn new(versions: impl IntoIterator<Item = PriceVersion>) -> Self {
        let mut by_model: HashMap<String, HashMap<String, Vec<PriceVersion>>> = HashMap::new();
        let mut count = 0;
        for v in versions {
            count += 1;
            by_model
                .entry(v.provider.clone())
                .or_default()
                .entry(v.model.clone())
                .or_default()
                .push(v);
        }
        for list in by_model.values_mut().flat_map(HashMap::values_mut) {
            list.sort_by_key(|v| (v.effective_from, v.id));
        }
        Self {
            by_model,
            versions: count,
        }
    }

    /// The version pricing a call of `provider`/`model` at `at`, if any:
    /// the exact entry, else the provider's aliases, else the same for the
    /// model's family when `model` is a dated snapshot (see
    /// [`crate::aliases`]). The version names the entry it belongs to.
    pub fn lookup(&self, provider: &str, model: &str, at: DateTime<Utc>) -> Option<&PriceVersion> {
        let family = crate::aliases::model_family(model);
        std::iter::once(model).chain(family).find_map(|m| {
            crate::aliases::providers_for(provider).find_map(|p| self.lookup_exact(p, m, at))
        })
    }

    /// The version of exactly `provider`/`model` in force at `at`, if any.
    pub fn lookup_exact(
        &self,
        provider: &str,
        model: &str,
        at: DateTime<Utc>,
    ) -> Option<&PriceVersion> {
        let list = self.by_model.get(provider)?.get(model)?;
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

    /// The models of `provider` with a version in force at `at`, in no
    /// particular order.
    pub fn models_in_force(
        &self,
        provider: &str,
        at: DateTime<Utc>,
    ) -> impl Iterator<Item = &str> + '_ {
        self.by_model
            .get(provider)
            .into_iter()
            .flatten()
            .filter(move |(_, list)| list.first().is_some_and(|v| v.effective_from <= at))
            .map(|(model, _)| model.as_str())
    }

    /// A version by id.
    pub fn by_id(&self, id: i64) -> Option<&PriceVersion> {
        self.by_model
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .find(|v| v.id == id)
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
            tiers: Vec::new(),
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

    #[test]
    fn lookup_resolves_provider_and_model_aliases() {
        let t = Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap();
        let mut gemini = version(1, "gemini-2.5-pro", t, "0.00000125");
        gemini.provider = "gemini".into();
        let mut vertex = version(2, "gemini-2.5-pro", t, "0.000002");
        vertex.provider = "vertex_ai-language-models".into();
        let mut claude = version(3, "claude-sonnet-4-5", t, "0.000003");
        claude.provider = "anthropic".into();
        let mut dated_other = version(4, "claude-opus-4-20250514", t, "0.000015");
        dated_other.provider = "anthropic".into();
        let mut opus = version(5, "claude-opus-4", t, "0.00002");
        opus.provider = "anthropic".into();
        let mut bedrock = version(
            6,
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            t,
            "0.0000033",
        );
        bedrock.provider = "bedrock_converse".into();
        let catalog = PriceCatalog::new([gemini, vertex, claude, dated_other, opus, bedrock]);
        // `google` events find LiteLLM's Gemini API entry first.
        assert_eq!(catalog.lookup("google", "gemini-2.5-pro", t).unwrap().id, 1);
        assert_eq!(
            catalog.lookup("vertex_ai", "gemini-2.5-pro", t).unwrap().id,
            2
        );
        assert!(catalog
            .lookup_exact("google", "gemini-2.5-pro", t)
            .is_none());
        // A dated snapshot falls back to its family ...
        let v = catalog
            .lookup("anthropic", "claude-sonnet-4-5-20250929", t)
            .unwrap();
        assert_eq!(
            (v.provider.as_str(), v.model.as_str()),
            ("anthropic", "claude-sonnet-4-5")
        );
        // ... unless it has an entry of its own.
        assert_eq!(
            catalog
                .lookup("anthropic", "claude-opus-4-20250514", t)
                .unwrap()
                .id,
            4
        );
        assert!(catalog
            .lookup("anthropic", "claude-haiku-4-5-20251001", t)
            .is_none());
        assert!(catalog.lookup("openai", "claude-sonnet-4-5", t).is_none());
        // Bedrock's Claude, as LiteLLM files it.
        let v = catalog
            .lookup("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0", t)
            .unwrap();
        assert_eq!(v.id, 6);
    }
}
