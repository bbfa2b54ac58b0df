//! Reading LiteLLM's `model_prices_and_context_window.json` format into
//! [`NewPrice`]s. Numbers are taken from the JSON text itself (through
//! `serde_json::value::RawValue`) and parsed as exact decimals, so `2.5e-06`
//! becomes exactly 0.0000025: never an `f64` round trip.
//!
//! Fields used: `litellm_provider`, `input_cost_per_token`,
//! `output_cost_per_token`, `cache_read_input_token_cost`,
//! `cache_creation_input_token_cost`, `output_cost_per_reasoning_token`,
//! `output_cost_per_image` (`usage.images` counts images the call
//! generated), `input_cost_per_audio_per_second` (else
//! `input_cost_per_second`), `input_cost_per_request`, and the long-context
//! tiers `{input_cost_per_token, output_cost_per_token,
//! cache_read_input_token_cost, cache_creation_input_token_cost}_above_<N>[k]_tokens`
//! (inclusive thresholds for `xai`, as LiteLLM bills them). Tollgate
//! extensions: `tollgate_provider` (overrides `litellm_provider`),
//! `tollgate_model` (overrides the key) and `effective_from` (RFC 3339).
//!
//! Nothing is dropped silently: every other price key with a non-zero value
//! is listed in [`ParsedFile::not_imported`] with its entry (service-tier
//! variants, 1-hour cache writes, per-character prices, ...), and an entry
//! whose prices Tollgate cannot represent for an ordinary call (LiteLLM's
//! range-based `tiered_pricing`) is refused whole and listed there too.
//! Entries with no price at all (and `sample_spec`) are counted as skipped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use tollgate_contract::catalog::{NewPrice, PriceTier};

/// Why a price file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PriceFileError {
    #[error("not a JSON object of model entries: {0}")]
    NotJson(String),
    #[error("entry `{model}`, field `{field}`: {reason}")]
    Field {
        model: String,
        field: String,
        reason: String,
    },
    #[error(
        "entries `{first}` and `{second}` both price {provider}/{model} from {effective_from} \
         with different prices; keep one (or set `tollgate_model` / `effective_from` on one)"
    )]
    Duplicate {
        first: String,
        second: String,
        provider: String,
        model: String,
        effective_from: String,
    },
}

/// A price in the file that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotImported {
    /// The entry's key in the file.
    pub entry: String,
    pub key: String,
    /// `true` when the whole entry was refused, not only this key.
    pub entry_refused: bool,
}

/// An entry not imported because another entry of the file prices the
/// same provider/model differently and wins (it is keyed `provider/model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub entry: String,
    pub by: String,
}

/// What an import read.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub prices: Vec<NewPrice>,
    /// Entries without any price (names).
    pub skipped: Vec<String>,
    /// Non-zero prices not imported, and refused entries.
    pub not_imported: Vec<NotImported>,
    /// Entries that lost to another entry for the same provider/model.
    pub superseded: Vec<Superseded>,
}

/// The file's entries in file order; a key given twice is an error (JSON
/// would silently keep one of them).
struct Entries(Vec<(String, BTreeMap<String, Box<RawValue>>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of model entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut keys = std::collections::HashSet::new();
                let mut entries = Vec::new();
                while let Some((key, fields)) =
                    map.next_entry::<String, BTreeMap<String, Box<RawValue>>>()?
                {
                    if !keys.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "entry `{key}` is given twice"
                        )));
                    }
                    entries.push((key, fields));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The token prices a tier may carry, as LiteLLM spells them (the part
/// before `_above_<N>_tokens`).
const TIER_KEYS: [&str; 4] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
];

/// Fields read as prices (tier keys are recognized by pattern).
const USED: [&str; 10] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
    "output_cost_per_image",
    "input_cost_per_audio_per_second",
    "input_cost_per_second",
    "input_cost_per_request",
    "litellm_provider",
];

/// Providers whose long-context threshold counts as reached at exactly N
/// tokens (LiteLLM bills xAI's tier from the threshold itself).
const INCLUSIVE_THRESHOLD_PROVIDERS: [&str; 1] = ["xai"];

/// `(price key, threshold)` of a tier key such as
/// `input_cost_per_token_above_200k_tokens`.
fn tier_key(key: &str) -> Option<(&'static str, u64)> {
    TIER_KEYS.iter().find_map(|base| {
        let n = key
            .strip_prefix(base)?
            .strip_prefix("_above_")?
            .strip_suffix("_tokens")?;
        let (digits, scale) = match n.strip_suffix('k') {
            Some(d) => (d, 1000),
            None => (n, 1),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((*base, digits.parse::<u64>().ok()?.checked_mul(scale)?))
    })
}

/// Whether a field holds a price (LiteLLM names every price `*cost*`).
fn is_price_key(key: &str) -> bool {
    key.contains("cost") || key == "tiered_pricing"
}

/// Whether a raw JSON value is a price worth reporting: not `null`, not 0,
/// not an empty object or list.
fn is_nonzero(raw: &str) -> bool {
    match parse_decimal(raw) {
        Ok(Some(d)) => !d.is_zero(),
        Ok(None) => false,
        Err(_) => !matches!(raw.trim(), "{}" | "[]" | "\"\""),
    }
}

/// Parse a LiteLLM price file. `default_effective_from` applies to entries
/// without an `effective_from`.
pub fn parse(
    text: &str,
    default_effective_from: DateTime<Utc>,
) -> Result<ParsedFile, PriceFileError> {
    let Entries(entries) =
        serde_json::from_str(text).map_err(|e| PriceFileError::NotJson(e.to_string()))?;
    let mut out = ParsedFile::default();
    // (provider, model, effective_from) -> index in out.prices, entry, and
    // whether the entry was keyed `provider/model`.
    type Version = (String, String, DateTime<Utc>);
    let mut seen: BTreeMap<Version, (usize, String, bool)> = BTreeMap::new();
    for (key, fields) in entries {
        if key == "sample_spec" {
            continue;
        }
        let field_err = |field: &str, reason: String| PriceFileError::Field {
            model: key.clone(),
            field: field.to_string(),
            reason,
        };
        let dec = |name: &str| -> Result<Option<Decimal>, PriceFileError> {
            fields
                .get(name)
                .map(|raw| parse_decimal(raw.get()).map_err(|r| field_err(name, r)))
                .transpose()
                .map(Option::flatten)
        };
        let string = |name: &str| -> Result<Option<String>, PriceFileError> {
            fields
                .get(name)
                .map(|raw| {
                    serde_json::from_str::<Option<String>>(raw.get())
                        .map_err(|e| field_err(name, format!("not a string: {e}")))
                })
                .transpose()
                .map(Option::flatten)
        };
        if fields
            .get("tiered_pricing")
            .is_some_and(|raw| is_nonzero(raw.get()))
        {
            // Range-based tiers: importing the base price alone would
            // misprice every call in the upper ranges.
            out.not_imported.push(NotImported {
                entry: key.clone(),
                key: "tiered_pricing".into(),
                entry_refused: true,
            });
            continue;
        }
        let input = dec("input_cost_per_token")?;
        let output = dec("output_cost_per_token")?;
        let cache_read = dec("cache_read_input_token_cost")?;
        let cache_write = dec("cache_creation_input_token_cost")?;
        let reasoning = dec("output_cost_per_reasoning_token")?;
        let per_image = dec("output_cost_per_image")?;
        let per_audio_second = match dec("input_cost_per_audio_per_second")? {
            Some(v) => Some(v),
            None => dec("input_cost_per_second")?,
        };
        let per_request = dec("input_cost_per_request")?;
        let litellm_provider = string("litellm_provider")?;
        let provider = match string("tollgate_provider")? {
            Some(p) => p,
            None => litellm_provider.clone().unwrap_or_default(),
        };
        // Tiers, by threshold; keys of a threshold without an input price
        // are reported (LiteLLM selects a tier by its input price).
        let mut tiers: BTreeMap<u64, [Option<Decimal>; 4]> = BTreeMap::new();
        let mut tier_keys: Vec<(String, u64)> = Vec::new();
        for name in fields.keys() {
            if let Some((base, above)) = tier_key(name) {
                if let Some(v) = dec(name)? {
                    let slot = TIER_KEYS.iter().position(|b| *b == base).unwrap_or(0);
                    tiers.entry(above).or_default()[slot] = Some(v);
                    tier_keys.push((name.clone(), above));
                }
            }
        }
        let mut unused: Vec<String> = Vec::new();
        for (name, above) in &tier_keys {
            if tiers.get(above).is_some_and(|t| t[0].is_none()) {
                unused.push(name.clone());
            }
        }
        let inclusive = INCLUSIVE_THRESHOLD_PROVIDERS.contains(&provider.as_str())
            || litellm_provider
                .as_deref()
                .is_some_and(|p| INCLUSIVE_THRESHOLD_PROVIDERS.contains(&p));
        let tiers: Vec<PriceTier> = tiers
            .into_iter()
            .filter_map(|(above, [input, output, cache_read, cache_write])| {
                Some(PriceTier {
                    above_tokens: above,
                    inclusive,
                    input_per_token: input?,
                    output_per_token: output,
                    cache_read_per_token: cache_read,
                    cache_write_per_token: cache_write,
                })
            })
            .collect();
        for (name, raw) in &fields {
            if is_price_key(name)
                && !USED.contains(&name.as_str())
                && tier_key(name).is_none()
                && is_nonzero(raw.get())
            {
                unused.push(name.clone());
            }
        }
        let any = [
            input,
            output,
            cache_read,
            cache_write,
            reasoning,
            per_image,
            per_audio_second,
            per_request,
        ]
        .iter()
        .any(Option::is_some);
        if !any {
            if unused.is_empty() {
                out.skipped.push(key);
            } else {
                // Priced only in ways Tollgate does not bill: say so.
                unused.sort();
                for name in unused {
                    out.not_imported.push(NotImported {
                        entry: key.clone(),
                        key: name,
                        entry_refused: true,
                    });
                }
            }
            continue;
        }
        if provider.is_empty() {
            return Err(field_err(
                "litellm_provider",
                "missing: which provider serves this model?".into(),
            ));
        }
        let model_override = string("tollgate_model")?;
        // LiteLLM keys some entries `provider/model`, where the prefix may
        // be the provider's family (`vertex_ai/` for
        // `vertex_ai-anthropic_models`).
        let family = litellm_provider
            .as_deref()
            .and_then(|p| p.split_once('-').map(|(f, _)| f));
        let unprefixed = [Some(provider.as_str()), litellm_provider.as_deref(), family]
            .into_iter()
            .flatten()
            .find_map(|p| key.strip_prefix(&format!("{p}/")));
        let keyed_by_provider = model_override.is_none() && unprefixed.is_some();
        let model = match model_override {
            Some(m) => m,
            None => unprefixed.unwrap_or(&key).to_string(),
        };
        let effective_from = match string("effective_from")? {
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map_err(|e| field_err("effective_from", format!("not RFC 3339: {e}")))?
                .with_timezone(&Utc),
            None => default_effective_from,
        };
        let price = NewPrice {
            provider,
            model,
            effective_from,
            input_per_token: input.unwrap_or_default(),
            output_per_token: output.unwrap_or_default(),
            cache_read_per_token: cache_read,
            cache_write_per_token: cache_write,
            reasoning_per_token: reasoning,
            per_image: per_image.unwrap_or_default(),
            per_audio_second: per_audio_second.unwrap_or_default(),
            per_request: per_request.unwrap_or_default(),
            tiers,
            note: String::new(),
        };
        if let Some((field, reason)) = price.problem() {
            return Err(field_err(field, reason));
        }
        unused.sort();
        for name in unused {
            out.not_imported.push(NotImported {
                entry: key.clone(),
                key: name,
                entry_refused: false,
            });
        }
        // Two entries for one version (LiteLLM lists some models both as
        // `model` and `provider/model`): the same prices are one price;
        // otherwise the `provider/model` entry wins, as in LiteLLM's own
        // lookup when it knows the provider, and the other is reported.
        // Two equally specific entries with different prices would be
        // stored as a version and its correction, in an order that flips on
        // every import: the file is refused.
        let id = (
            price.provider.clone(),
            price.model.clone(),
            price.effective_from,
        );
        match seen.get(&id).cloned() {
            None => {
                seen.insert(id, (out.prices.len(), key, keyed_by_provider));
                out.prices.push(price);
            }
            Some((i, first, first_keyed)) => {
                let same = out.prices.get(i).is_some_and(|p| {
                    let mut a = p.clone();
                    let mut b = price.clone();
                    a.tiers = a.sorted_tiers();
                    b.tiers = b.sorted_tiers();
                    a == b
                });
                if same {
                    continue;
                }
                if keyed_by_provider && !first_keyed {
                    if let Some(slot) = out.prices.get_mut(i) {
                        *slot = price;
                    }
                    seen.insert(id, (i, key.clone(), true));
                    out.superseded.push(Superseded {
                        entry: first,
                        by: key,
                    });
                } else if first_keyed && !keyed_by_provider {
                    out.superseded.push(Superseded {
                        entry: key,
                        by: first,
                    });
                } else {
                    return Err(PriceFileError::Duplicate {
                        first,
                        second: key,
                        provider: id.0,
                        model: id.1,
                        effective_from: id.2.to_rfc3339(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A JSON number (or a string holding one) as an exact decimal; `null` is
/// `None`.
pub fn parse_decimal(raw: &str) -> Result<Option<Decimal>, String> {
    let raw = raw.trim();
    if raw == "null" {
        return Ok(None);
    }
    let text = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw)
        .trim();
    let parsed = if text.contains(['e', 'E']) {
        // rust_decimal's scientific parser wants a lowercase `e` and no `+`.
        Decimal::from_scientific(&text.to_ascii_lowercase().replace("e+", "e"))
    } else {
        Decimal::from_str_exact(text)
    };
    let value = parsed.map_err(|e| format!("`{text}` is not a decimal number: {e}"))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("`{text}` is negative"));
    }
    Ok(Some(value.normalize()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn numbers_are_exact() {
        let d = |s| parse_decimal(s).unwrap().unwrap().to_string();
        assert_eq!(d("2.5e-06"), "0.0000025");
        assert_eq!(d("3E-7"), "0.0000003");
        assert_eq!(d("1.25e+1"), "12.5");
        assert_eq!(d("0.00000015"), "0.00000015");
        assert_eq!(d("\"0.000001\""), "0.000001");
        assert_eq!(d("0"), "0");
        assert!(parse_decimal("null").unwrap().is_none());
        assert!(parse_decimal("-1e-6").is_err());
        assert!(parse_decimal("\"abc\"").is_err());
        // The value an f64 round trip would corrupt.
        assert_eq!(d("1.1e-7"), "0.00000011");
    }

    #[test]
    fn parses_litellm_entries() {
        let text = r#"{
          "sample_spec": {"input_cost_per_token": 0, "litellm_provider": "x"},
          "gpt-4o": {"max_tokens": 16384, "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                     "cache_read_input_token_cost": 1.25e-06, "litellm_provider": "openai", "mode": "chat",
                     "supports_vision": true},
          "anthropic/claude-x": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                     "cache_creation_input_token_cost": 3.75e-06, "litellm_provider": "anthropic",
                     "effective_from": "2026-02-01T00:00:00Z"},
          "vertex_ai/gemini": {"input_cost_per_token": 3e-07, "litellm_provider": "vertex_ai-language-models",
                     "tollgate_provider": "google", "tollgate_model": "gemini-2.5-flash"},
          "gemini/gemini-pro": {"input_cost_per_token": 1e-07, "litellm_provider": "gemini",
                     "tollgate_provider": "google"},
          "whisper": {"input_cost_per_second": 0.0001, "litellm_provider": "openai"},
          "no-price": {"max_tokens": 10, "litellm_provider": "openai"}
        }"#;
        let default = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let parsed = parse(text, default).unwrap();
        assert_eq!(parsed.skipped, vec!["no-price".to_string()]);
        assert_eq!(parsed.prices.len(), 5);
        assert!(parsed
            .prices
            .iter()
            .any(|p| p.provider == "google" && p.model == "gemini-pro"));
        let claude = parsed
            .prices
            .iter()
            .find(|p| p.model == "claude-x")
            .unwrap();
        assert_eq!(claude.provider, "anthropic");
        assert_eq!(
            claude.cache_write_per_token.unwrap().to_string(),
            "0.00000375"
        );
        assert_eq!(claude.cache_read_per_token, None);
        assert_eq!(
            claude.effective_from,
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
        );
        let gpt = parsed.prices.iter().find(|p| p.model == "gpt-4o").unwrap();
        assert_eq!(gpt.input_per_token.to_string(), "0.0000025");
        assert_eq!(gpt.effective_from, default);
        let gemini = parsed
            .prices
            .iter()
            .find(|p| p.provider == "google" && p.input_per_token.to_string() == "0.0000003")
            .unwrap();
        assert_eq!(gemini.model, "gemini-2.5-flash");
        let whisper = parsed.prices.iter().find(|p| p.model == "whisper").unwrap();
        assert_eq!(whisper.per_audio_second.to_string(), "0.0001");
    }

    /// Real entries of LiteLLM's file (`tests/prices/litellm_subset.json`).
    const SUBSET: &str = include_str!("../../../../tests/prices/litellm_subset.json");

    fn subset() -> ParsedFile {
        parse(SUBSET, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()).unwrap()
    }

    fn price<'a>(parsed: &'a ParsedFile, provider: &str, model: &str) -> &'a NewPrice {
        parsed
            .prices
            .iter()
            .find(|p| p.provider == provider && p.model == model)
            .unwrap_or_else(|| panic!("no {provider}/{model}"))
    }

    #[test]
    fn long_context_tiers_are_imported() {
        let parsed = subset();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let gemini = price(&parsed, "gemini", "gemini-2.5-pro");
        assert_eq!(
            gemini.tiers,
            vec![PriceTier {
                above_tokens: 200_000,
                inclusive: false,
                input_per_token: d("0.0000025"),
                output_per_token: Some(d("0.000015")),
                cache_read_per_token: Some(d("0.00000025")),
                cache_write_per_token: None,
            }]
        );
        let vertex = price(&parsed, "vertex_ai-language-models", "gemini-2.5-pro");
        assert_eq!(vertex.tiers[0].cache_write_per_token, Some(d("0.00000025")));
        // xAI bills the tier from the threshold itself.
        let grok = price(&parsed, "xai", "grok-4.3");
        assert_eq!(grok.tiers[0].above_tokens, 200_000);
        assert!(grok.tiers[0].inclusive);
        // `vertex_ai/` prefixes `vertex_ai-anthropic_models` entries.
        let claude = price(
            &parsed,
            "vertex_ai-anthropic_models",
            "claude-sonnet-4-5@20250929",
        );
        assert_eq!(claude.tiers[0].input_per_token, d("0.000006"));
        assert_eq!(claude.tiers[0].cache_write_per_token, Some(d("0.0000075")));
        assert!(
            tier_key("input_cost_per_token_above_128000_tokens")
                == Some(("input_cost_per_token", 128_000))
        );
        assert!(tier_key("input_cost_per_token_above_200k_tokens_priority").is_none());
        assert!(tier_key("cache_creation_input_token_cost_above_1hr").is_none());
    }

    /// `usage.images` counts images the call generated: priced by
    /// `output_cost_per_image`, never the input-image price.
    #[test]
    fn generated_images_take_the_output_image_price() {
        let parsed = subset();
        let image = price(
            &parsed,
            "vertex_ai-language-models",
            "gemini-3-pro-image-preview",
        );
        assert_eq!(image.per_image.to_string(), "0.134");
        assert!(parsed.not_imported.contains(&NotImported {
            entry: "gemini-3-pro-image-preview".into(),
            key: "input_cost_per_image".into(),
            entry_refused: false,
        }));
    }

    #[test]
    fn nothing_is_dropped_silently() {
        let parsed = subset();
        let has = |entry: &str, key: &str, refused: bool| {
            parsed.not_imported.contains(&NotImported {
                entry: entry.into(),
                key: key.into(),
                entry_refused: refused,
            })
        };
        // Range tiers cannot be billed as priced: the entry is refused.
        assert!(has("dashscope/qwen-flash", "tiered_pricing", true));
        assert!(!parsed.prices.iter().any(|p| p.model == "qwen-flash"));
        // Service tiers, 1-hour cache writes, per-query prices: reported.
        assert!(has(
            "gemini/gemini-2.5-pro",
            "input_cost_per_token_above_200k_tokens_priority",
            false
        ));
        assert!(has(
            "claude-sonnet-4-5",
            "cache_creation_input_token_cost_above_1hr",
            false
        ));
        assert!(has("gpt-4o", "input_cost_per_token_priority", false));
        assert!(has(
            "gemini/gemini-2.5-pro",
            "search_context_cost_per_query",
            false
        ));
        // Zero prices are not worth a line.
        let parsed = parse(
            r#"{"m": {"litellm_provider": "p", "input_cost_per_token": 1e-6,
                      "input_cost_per_character": 0, "output_cost_per_second": null}}"#,
            Utc::now(),
        )
        .unwrap();
        assert!(parsed.not_imported.is_empty(), "{:?}", parsed.not_imported);
    }

    #[test]
    fn one_version_priced_twice_resolves_or_is_refused() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        // `provider/model` beats a bare `model` key, in either order, and
        // the loser is reported.
        for text in [
            r#"{"gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 1e-06},
                "gemini/gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 2e-06}}"#,
            r#"{"gemini/gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 2e-06},
                "gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 1e-06}}"#,
        ] {
            let parsed = parse(text, t).unwrap();
            assert_eq!(parsed.prices.len(), 1);
            assert_eq!(parsed.prices[0].input_per_token.to_string(), "0.000002");
            assert_eq!(
                parsed.superseded,
                vec![Superseded {
                    entry: "gemini-x".into(),
                    by: "gemini/gemini-x".into()
                }]
            );
        }
        // The same prices twice are one price.
        let parsed = parse(
            r#"{"gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 1e-06},
                "gemini/gemini-x": {"litellm_provider": "gemini", "input_cost_per_token": 0.000001}}"#,
            t,
        )
        .unwrap();
        assert_eq!(parsed.prices.len(), 1);
        assert!(parsed.superseded.is_empty());
        // Equally specific entries with different prices: refused, both named.
        let err = parse(
            r#"{"a": {"litellm_provider": "p", "tollgate_model": "m", "input_cost_per_token": 1e-06},
                "b": {"litellm_provider": "p", "tollgate_model": "m", "input_cost_per_token": 2e-06}}"#,
            t,
        )
        .unwrap_err();
        assert!(
            matches!(&err, PriceFileError::Duplicate { first, second, .. }
                if first == "a" && second == "b"),
            "{err}"
        );
        // A key given twice: refused (JSON would keep one silently).
        let err = parse(
            r#"{"m": {"litellm_provider": "p", "input_cost_per_token": 1e-06},
                "m": {"litellm_provider": "p", "input_cost_per_token": 2e-06}}"#,
            t,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("entry `m` is given twice"),
            "{err}"
        );
    }

    /// LiteLLM's whole file (too large to commit): set `LITELLM_PRICES` to
    /// its path and run with `--ignored`. Every entry is imported, refused
    /// or reported; none collides.
    #[test]
    #[ignore = "needs LiteLLM's model_prices_and_context_window.json in LITELLM_PRICES"]
    fn litellm_whole_file() {
        let path = std::env::var("LITELLM_PRICES").unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let parsed = parse(&text, Utc::now()).unwrap();
        let tiered = parsed.prices.iter().filter(|p| !p.tiers.is_empty()).count();
        let refused: std::collections::BTreeSet<_> = parsed
            .not_imported
            .iter()
            .filter(|n| n.entry_refused)
            .map(|n| n.entry.as_str())
            .collect();
        eprintln!(
            "{} prices ({tiered} with tiers), {} skipped, {} refused, {} keys not imported, \
             {} superseded",
            parsed.prices.len(),
            parsed.skipped.len(),
            refused.len(),
            parsed.not_imported.len(),
            parsed.superseded.len()
        );
        assert!(tiered > 300);
    }

    #[test]
    fn bad_entries_are_named() {
        let err = parse(
            r#"{"m": {"input_cost_per_token": "x", "litellm_provider": "p"}}"#,
            Utc::now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PriceFileError::Field { ref model, ref field, .. } if model == "m" && field == "input_cost_per_token"),
            "{err}"
        );
        assert!(parse("[1]", Utc::now()).is_err());
        let err = parse(r#"{"m": {"input_cost_per_token": 1e-6}}"#, Utc::now()).unwrap_err();
        assert!(err.to_string().contains("litellm_provider"), "{err}");
    }
}
