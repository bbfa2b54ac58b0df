//! Alerting as an SRE states it, with no I/O: a rule ([`rule`]: which
//! signal, above what, for how long, how loud, to whom), a silence
//! ([`silence`]: label matchers over a time range) and a receiver
//! ([`receiver`]: where notifications go and how they are grouped). The
//! control plane stores them (`tollgate_control::alerts`), the API and the
//! CLI accept them through [`parse_json`] and the `validate` of each type,
//! and the evaluator reads them back. Every bound is a constant here and a
//! line in `docs/alerting.md`.
//!
//! Every refusal is a [`Rejection`] naming the field as the JSON spells it
//! (`signal.window_secs`, `matchers[2].value`, `labels.team`). What is
//! sent to receivers is in `crate::notification`; an alert's life across
//! evaluations in `crate::alert_lifecycle`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validate::Rejection;

mod members;
pub mod receiver;
pub mod rule;
pub mod silence;

pub use receiver::{ReceiverKind, ReceiverSpec};
pub use rule::{
    Annotations, BreakerSignal, BudgetForecastSignal, BudgetUsedSignal, ErrorPatternSignal,
    ErrorRateSignal, LatencyMetric, LatencySignal, PipelineHealthSignal, PipelineMetric, RuleSpec,
    Severity, Signal, SpendSignal, SpendSubject,
};
pub use silence::{MatchOp, Matcher, SilenceSpec};

/// Largest request body the alerting endpoints and the CLI read, in bytes:
/// far above any valid rule, so a hostile body is refused before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest org id, in characters (as for API keys).
pub const MAX_ORG_CHARS: usize = 128;
/// Longest rule or receiver name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest label name, in characters.
pub const MAX_LABEL_NAME_CHARS: usize = 128;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 1024;

/// Parse `bytes` as one JSON object of type `T`, naming the field of any
/// problem ([`crate::json_body::parse`], at most [`MAX_BODY_BYTES`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    crate::json_body::parse(bytes, MAX_BODY_BYTES)
}

/// A Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`), not one of the
/// reserved `__`-prefixed names: labels travel unchanged to Alertmanager,
/// which refuses anything else.
pub fn check_label_name(field: &str, name: &str) -> Result<(), Rejection> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let shown: String = name.chars().take(64).collect();
        return Err(Rejection::new(
            field,
            format!("{shown:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        ));
    }
    if name.len() > MAX_LABEL_NAME_CHARS {
        return Err(Rejection::new(
            field,
            format!("at most {MAX_LABEL_NAME_CHARS} characters"),
        ));
    }
    if name.starts_with("__") {
        return Err(Rejection::new(
            field,
            format!("{name:?}: names starting with `__` are reserved"),
        ));
    }
    Ok(())
}

/// Text of `min..=max` characters without control characters.
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), Rejection> {
    crate::validate::text(field, value, min, max)
}

/// Text that may span lines (descriptions, comments): control characters
/// other than newline and tab are refused.
pub fn check_prose(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    let len = value.chars().count();
    if len > max {
        return Err(Rejection::new(
            field,
            format!("{len} characters, at most {max} allowed"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Rejection::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Exact decimals on the wire (USD amounts, percentages): a decimal string
/// (`"12.5"`), never a JSON number, so no float ever holds them.
pub mod exact {
    use super::*;
    use rust_decimal::Decimal;

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        value.normalize().to_string().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "must be a decimal string such as \"500\" (JSON numbers are not accepted for exact amounts: money, percentages)",
            )
        })?;
        let plain = !text.is_empty()
            && text.len() <= 40
            && text.chars().all(|c| c.is_ascii_digit() || c == '.')
            && !text.starts_with('.')
            && !text.ends_with('.');
        if !plain {
            return Err(serde::de::Error::custom(format!(
                "{:?} is not a non-negative decimal such as \"12.5\"",
                text.chars().take(48).collect::<String>()
            )));
        }
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an exact decimal")))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
            value.map(|v| v.normalize().to_string()).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Decimal);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_prometheus() {
        for ok in ["team", "_x", "a1_B", &"a".repeat(128)] {
            check_label_name("labels", ok).unwrap();
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a.b",
            "é",
            "a b",
            "__name__",
            "__x",
            &"a".repeat(129),
        ] {
            let err = check_label_name("labels.x", bad).unwrap_err();
            assert_eq!(err.field, "labels.x", "{bad:?}");
        }
    }

    #[test]
    fn bodies_that_are_not_one_object_are_named_body() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        for bad in ["", "[1]", "{", "{\"a\":1} x", "null", "\"a\""] {
            assert_eq!(parse_json::<T>(bad.as_bytes()).unwrap_err().field, "body");
        }
        let big = format!("{{\"a\":1,\"b\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        assert_eq!(parse_json::<T>(big.as_bytes()).unwrap_err().field, "body");
        assert_eq!(parse_json::<T>(b"{}").unwrap_err().field, "a");
        assert_eq!(
            parse_json::<T>(b"{\"a\":1,\"z\":2}").unwrap_err().field,
            "z"
        );
        assert_eq!(
            parse_json::<T>(b"{\"a\":1,\"a\":2}").unwrap_err().field,
            "a"
        );
        assert_eq!(parse_json::<T>(b"{\"a\":-1}").unwrap_err().field, "a");
    }
}
