//! Reading LiteLLM's `model_prices_and_context_window.json` format into
//! [`NewPrice`]s. Numbers are taken from the JSON text itself (through
//! `serde_json::value::RawValue`) and parsed as exact decimals, so `2.5e-06`
//! becomes exactly 0.0000025: never an `f64` round trip.
//!
//! Fields used: `litellm_provider`, `input_cost_per_token`,
//! `output_cost_per_token`, `cache_read_input_token_cost`,
//! `cache_creation_input_token_cost`, `output_cost_per_reasoning_token`,
//! `input_cost_per_image` (else `output_cost_per_image`),
//! `input_cost_per_audio_per_second` (else `input_cost_per_second`),
//! `input_cost_per_request`. Tollgate extensions: `tollgate_provider`
//! (overrides `litellm_provider`, e.g. `google` for `vertex_ai-*`),
//! `tollgate_model` (overrides the key) and `effective_from` (RFC 3339).
//! Other fields are ignored, as are entries with no price at all (and the
//! `sample_spec` entry).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::prices::NewPrice;

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
}

/// What an import read.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub prices: Vec<NewPrice>,
    /// Entries without any price we use (names).
    pub skipped: Vec<String>,
}

/// Parse a LiteLLM price file. `default_effective_from` applies to entries
/// without an `effective_from`.
pub fn parse(
    text: &str,
    default_effective_from: DateTime<Utc>,
) -> Result<ParsedFile, PriceFileError> {
    let entries: BTreeMap<String, BTreeMap<String, Box<RawValue>>> =
        serde_json::from_str(text).map_err(|e| PriceFileError::NotJson(e.to_string()))?;
    let mut out = ParsedFile::default();
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
        let input = dec("input_cost_per_token")?;
        let output = dec("output_cost_per_token")?;
        let cache_read = dec("cache_read_input_token_cost")?;
        let cache_write = dec("cache_creation_input_token_cost")?;
        let reasoning = dec("output_cost_per_reasoning_token")?;
        let per_image = match dec("input_cost_per_image")? {
            Some(v) => Some(v),
            None => dec("output_cost_per_image")?,
        };
        let per_audio_second = match dec("input_cost_per_audio_per_second")? {
            Some(v) => Some(v),
            None => dec("input_cost_per_second")?,
        };
        let per_request = dec("input_cost_per_request")?;
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
            out.skipped.push(key);
            continue;
        }
        let litellm_provider = string("litellm_provider")?;
        let provider = match string("tollgate_provider")? {
            Some(p) => p,
            None => litellm_provider.clone().ok_or_else(|| {
                field_err(
                    "litellm_provider",
                    "missing: which provider serves this model?".into(),
                )
            })?,
        };
        let model = match string("tollgate_model")? {
            Some(m) => m,
            // LiteLLM keys some entries `provider/model`.
            None => [Some(&provider), litellm_provider.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|p| key.strip_prefix(&format!("{p}/")))
                .unwrap_or(&key)
                .to_string(),
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
            note: String::new(),
        };
        if let Some((field, reason)) = price.problem() {
            return Err(field_err(field, reason));
        }
        out.prices.push(price);
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
