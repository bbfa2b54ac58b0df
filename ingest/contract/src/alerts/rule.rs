//! An alert rule: one [`Signal`] (what to watch and the threshold), how long
//! it must hold before firing (`for_secs`), the labels and annotations its
//! notifications carry, how loud it is ([`Severity`]) and which receivers
//! get it. Scoped to one org. See `docs/alerting.md` for every bound.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{check_label_name, check_prose, check_text, MAX_LABEL_VALUE_CHARS, MAX_NAME_CHARS};
use crate::validate::Rejection;

/// Shortest evaluation window, in seconds: shorter windows hold too few
/// calls to say anything and would be re-read on every evaluation.
pub const MIN_WINDOW_SECS: u32 = 60;
/// Longest evaluation window (7 days): the rollups answer it cheaply, and
/// a longer window is a report, not an alert.
pub const MAX_WINDOW_SECS: u32 = 7 * 86_400;
/// Longest `for` (one day).
pub const MAX_FOR_SECS: u32 = 86_400;
/// Most labels on one rule.
pub const MAX_LABELS: usize = 32;
/// Most receivers of one rule.
pub const MAX_RECEIVERS: usize = 16;
/// Longest description, summary and annotation description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// Longest annotation summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// Highest latency threshold (one hour), in milliseconds.
pub const MAX_LATENCY_MS: u32 = 3_600_000;
/// Largest spend threshold, in USD (as for budgets: anything above is a typo).
pub const MAX_SPEND_USD: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 10^12
/// Most fractional digits of a USD amount (the scale of stored costs).
pub const MAX_USD_SCALE: u32 = 12;
/// Highest budget-used threshold, in percent of the limit (as for budget
/// thresholds).
pub const MAX_BUDGET_PERCENT: u32 = 1000;
/// Largest pipeline-health threshold (messages, rows or bytes).
pub const MAX_PIPELINE_THRESHOLD: u64 = 1_000_000_000_000;
/// Percentiles a latency rule may watch: the ones the latency fold keeps.
pub const PERCENTILES: [u8; 4] = [50, 90, 95, 99];
/// Longest provider, model, team and subject id, in characters.
pub const MAX_ID_CHARS: usize = 256;

/// How loud a rule is; a label (`severity`) on every notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Which latency a latency rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyMetric {
    /// Whole-call duration (`duration_ms`).
    Duration,
    /// Time to first token (`ttft_ms`, streaming calls).
    Ttft,
}

/// Whose spend a spend rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpendSubject {
    Org,
    Team,
    Key,
    /// `subject_id` is `key=value` of a call tag.
    Tag,
}

/// Which pipeline figure a pipeline-health rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineMetric {
    /// Messages the processors' consumer group is behind on the events topic.
    ConsumerLag,
    /// Messages put on the dead-letter topic within the window.
    DeadLetters,
    /// Events refused at the ingest edge within the window.
    RejectedIngest,
    /// Bytes waiting in a proxy's local spool.
    ProxySpoolDepth,
}

impl PipelineMetric {
    /// The name as the JSON spells it, and the `metric` column of the
    /// `pipeline_health` samples.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConsumerLag => "consumer_lag",
            Self::DeadLetters => "dead_letters",
            Self::RejectedIngest => "rejected_ingest",
            Self::ProxySpoolDepth => "proxy_spool_depth",
        }
    }
}

/// A new failure pattern (signature) seen for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPatternSignal {
    /// Only patterns of this provider; `None`: any.
    #[serde(default)]
    pub provider: Option<String>,
}

/// A circuit breaker opened.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSignal {
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// What a rule watches and the threshold at which it is active. Absent
/// filters (`provider`, `model`, `team`) mean "all". On the wire an object
/// whose `kind` names the variant, its other members the variant's
/// (`{"kind": "latency", "metric": "ttft", ...}`); read by
/// [`Signal`]'s own `Deserialize`, which names a refused member
/// (`window_secs`) where serde's internally tagged enums name only the enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    ErrorRate(ErrorRateSignal),
    Latency(LatencySignal),
    Spend(SpendSignal),
    BudgetUsed(BudgetUsedSignal),
    BudgetForecast(BudgetForecastSignal),
    NewErrorPattern(ErrorPatternSignal),
    BreakerOpened(BreakerSignal),
    PipelineHealth(PipelineHealthSignal),
}

/// Failed calls in percent of all calls over the window, above
/// `above_percent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateSignal {
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(with = "super::exact")]
    pub above_percent: Decimal,
    pub window_secs: u32,
}

/// The `percentile` of `metric` over the window, above `above_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySignal {
    pub metric: LatencyMetric,
    pub percentile: u8,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    pub above_ms: u32,
    pub window_secs: u32,
}

/// Spend of one subject over the window above `above_usd`, or its hourly
/// rate over the window above `per_hour_above_usd` (exactly one of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendSignal {
    pub subject_kind: SpendSubject,
    pub subject_id: String,
    pub window_secs: u32,
    #[serde(default, with = "super::exact::option")]
    pub above_usd: Option<Decimal>,
    #[serde(default, with = "super::exact::option")]
    pub per_hour_above_usd: Option<Decimal>,
}

/// The budget's spend in its running period at or above `above_percent`
/// of its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetUsedSignal {
    pub budget_id: i64,
    pub above_percent: u32,
}

/// The budget's month-end (day-end) forecast above its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetForecastSignal {
    pub budget_id: i64,
}

/// A pipeline figure above `above`: the sum over the window for the
/// counted figures (dead letters, rejected events), the latest sample of
/// each partition for the lag, the largest sample for the spool depth
/// (`docs/alerting-signals.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineHealthSignal {
    pub metric: PipelineMetric,
    pub above: u64,
    pub window_secs: u32,
}

/// Every `kind`, as the JSON spells it.
const KINDS: &[&str] = &[
    "error_rate",
    "latency",
    "spend",
    "budget_used",
    "budget_forecast",
    "new_error_pattern",
    "breaker_opened",
    "pipeline_health",
];

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut members = super::members::read(d)?;
        let kind = match members.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(_) => return Err(D::Error::custom("`kind`: must be a string")),
            None => return Err(D::Error::missing_field("kind")),
        };
        let members = serde_json::Value::Object(members);
        match kind.as_str() {
            "error_rate" => super::members::variant(members).map(Self::ErrorRate),
            "latency" => super::members::variant(members).map(Self::Latency),
            "spend" => super::members::variant(members).map(Self::Spend),
            "budget_used" => super::members::variant(members).map(Self::BudgetUsed),
            "budget_forecast" => super::members::variant(members).map(Self::BudgetForecast),
            "new_error_pattern" => super::members::variant(members).map(Self::NewErrorPattern),
            "breaker_opened" => super::members::variant(members).map(Self::BreakerOpened),
            "pipeline_health" => super::members::variant(members).map(Self::PipelineHealth),
            other => Err(D::Error::custom(format!(
                "`kind`: unknown variant `{}`, expected one of {}",
                other.chars().take(64).collect::<String>(),
                KINDS.join(", ")
            ))),
        }
    }
}

impl Signal {
    /// The `kind` as the JSON spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ErrorRate(_) => "error_rate",
            Self::Latency(_) => "latency",
            Self::Spend(_) => "spend",
            Self::BudgetUsed(_) => "budget_used",
            Self::BudgetForecast(_) => "budget_forecast",
            Self::NewErrorPattern(_) => "new_error_pattern",
            Self::BreakerOpened(_) => "breaker_opened",
            Self::PipelineHealth(_) => "pipeline_health",
        }
    }

    /// The budget the signal reads, when it reads one.
    pub fn budget_id(&self) -> Option<i64> {
        match self {
            Self::BudgetUsed(s) => Some(s.budget_id),
            Self::BudgetForecast(s) => Some(s.budget_id),
            _ => None,
        }
    }

    /// The window the evaluator reads, when the signal has one.
    pub fn window_secs(&self) -> Option<u32> {
        match self {
            Self::ErrorRate(s) => Some(s.window_secs),
            Self::Latency(s) => Some(s.window_secs),
            Self::Spend(s) => Some(s.window_secs),
            Self::PipelineHealth(s) => Some(s.window_secs),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        if let Some(window) = self.window_secs() {
            if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&window) {
                return Err(Rejection::new(
                    "signal.window_secs",
                    format!("{window} is outside {MIN_WINDOW_SECS}..={MAX_WINDOW_SECS} (seconds)"),
                ));
            }
        }
        let filter = |name: &str, value: &Option<String>| match value {
            Some(v) => check_text(&format!("signal.{name}"), v, 1, MAX_ID_CHARS),
            None => Ok(()),
        };
        match self {
            Self::ErrorRate(ErrorRateSignal {
                provider,
                model,
                team,
                above_percent,
                ..
            }) => {
                filter("provider", provider)?;
                filter("model", model)?;
                filter("team", team)?;
                if above_percent.is_sign_negative()
                    || *above_percent >= Decimal::ONE_HUNDRED
                    || above_percent.scale() > 4
                {
                    return Err(Rejection::new(
                        "signal.above_percent",
                        format!(
                            "{above_percent} is outside 0 to below 100 (percent, at most 4 decimal places)"
                        ),
                    ));
                }
            }
            Self::Latency(LatencySignal {
                percentile,
                provider,
                model,
                team,
                above_ms,
                ..
            }) => {
                if !PERCENTILES.contains(percentile) {
                    return Err(Rejection::new(
                        "signal.percentile",
                        format!("{percentile} is not one of 50, 90, 95, 99"),
                    ));
                }
                filter("provider", provider)?;
                filter("model", model)?;
                filter("team", team)?;
                if !(1..=MAX_LATENCY_MS).contains(above_ms) {
                    return Err(Rejection::new(
                        "signal.above_ms",
                        format!("{above_ms} is outside 1..={MAX_LATENCY_MS}"),
                    ));
                }
            }
            Self::Spend(SpendSignal {
                subject_kind,
                subject_id,
                above_usd,
                per_hour_above_usd,
                ..
            }) => {
                check_text("signal.subject_id", subject_id, 1, MAX_ID_CHARS)?;
                if *subject_kind == SpendSubject::Tag {
                    let key = subject_id.split_once('=').map(|(k, _)| k).unwrap_or("");
                    if key.is_empty() || key.chars().count() > 64 {
                        return Err(Rejection::new(
                            "signal.subject_id",
                            "a tag subject is `key=value` with a key of 1 to 64 characters",
                        ));
                    }
                }
                let (field, amount) = match (above_usd, per_hour_above_usd) {
                    (Some(a), None) => ("signal.above_usd", a),
                    (None, Some(r)) => ("signal.per_hour_above_usd", r),
                    (Some(_), Some(_)) => {
                        return Err(Rejection::new(
                            "signal.per_hour_above_usd",
                            "give either above_usd or per_hour_above_usd, not both",
                        ))
                    }
                    (None, None) => {
                        return Err(Rejection::new(
                            "signal.above_usd",
                            "missing: give above_usd (spend over the window) or per_hour_above_usd (rate)",
                        ))
                    }
                };
                if amount.is_zero() || *amount > MAX_SPEND_USD {
                    return Err(Rejection::new(
                        field,
                        format!("{amount} is outside 0 (exclusive) to {MAX_SPEND_USD} USD"),
                    ));
                }
                if amount.normalize().scale() > MAX_USD_SCALE {
                    return Err(Rejection::new(
                        field,
                        format!("{amount} has more than {MAX_USD_SCALE} decimal places"),
                    ));
                }
            }
            Self::BudgetUsed(BudgetUsedSignal {
                budget_id,
                above_percent,
            }) => {
                budget(*budget_id)?;
                if !(1..=MAX_BUDGET_PERCENT).contains(above_percent) {
                    return Err(Rejection::new(
                        "signal.above_percent",
                        format!("{above_percent} is outside 1..={MAX_BUDGET_PERCENT} (percent of the limit)"),
                    ));
                }
            }
            Self::BudgetForecast(s) => budget(s.budget_id)?,
            Self::NewErrorPattern(s) => filter("provider", &s.provider)?,
            Self::BreakerOpened(s) => {
                filter("provider", &s.provider)?;
                filter("model", &s.model)?;
            }
            Self::PipelineHealth(PipelineHealthSignal { above, .. }) => {
                if *above > MAX_PIPELINE_THRESHOLD {
                    return Err(Rejection::new(
                        "signal.above",
                        format!("{above} is above the maximum {MAX_PIPELINE_THRESHOLD}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn budget(id: i64) -> Result<(), Rejection> {
    if id <= 0 {
        return Err(Rejection::new(
            "signal.budget_id",
            format!("{id} is not a budget id (a positive integer)"),
        ));
    }
    Ok(())
}

/// The text a notification shows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub description: String,
    /// Where the responder reads what to do: an `http(s)` URL, or empty.
    /// Alertmanager's and Grafana's conventional `runbook_url` annotation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runbook_url: String,
}

/// A rule as an SRE states it (the body of `POST /api/v1/alerts/rules`,
/// `tollgate alerts rules create --file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub org_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub signal: Signal,
    /// How long the signal must hold before the rule fires (0: at once).
    #[serde(default)]
    pub for_secs: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: Annotations,
    pub severity: Severity,
    /// Receiver ids of the same org.
    #[serde(default)]
    pub receivers: Vec<i64>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl RuleSpec {
    /// The labels of this rule's alert: the rule's own, then `alertname`,
    /// `severity` and `org`, which win so that routes and silences can rely
    /// on them (what notifications, silences and the Alerts page use).
    pub fn alert_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("alertname".into(), self.name.clone());
        labels.insert("severity".into(), self.severity.name().into());
        labels.insert("org".into(), self.org_id.clone());
        labels
    }

    /// Every bound of `docs/alerting.md`, naming the first field broken.
    pub fn validate(&self) -> Result<(), Rejection> {
        check_text("org_id", &self.org_id, 1, super::MAX_ORG_CHARS)?;
        check_text("name", &self.name, 1, MAX_NAME_CHARS)?;
        check_prose("description", &self.description, MAX_DESCRIPTION_CHARS)?;
        self.signal.validate()?;
        if self.for_secs > MAX_FOR_SECS {
            return Err(Rejection::new(
                "for_secs",
                format!("{} is outside 0..={MAX_FOR_SECS} (seconds)", self.for_secs),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(Rejection::new(
                "labels",
                format!("{} labels, at most {MAX_LABELS} allowed", self.labels.len()),
            ));
        }
        for (name, value) in &self.labels {
            check_label_name(&format!("labels.{name}"), name)?;
            check_text(&format!("labels.{name}"), value, 0, MAX_LABEL_VALUE_CHARS)?;
        }
        check_prose(
            "annotations.summary",
            &self.annotations.summary,
            MAX_SUMMARY_CHARS,
        )?;
        check_prose(
            "annotations.description",
            &self.annotations.description,
            MAX_DESCRIPTION_CHARS,
        )?;
        if !self.annotations.runbook_url.is_empty() {
            super::receiver::check_url(&self.annotations.runbook_url)
                .map_err(|r| Rejection::new("annotations.runbook_url", r.reason))?;
        }
        if self.receivers.len() > MAX_RECEIVERS {
            return Err(Rejection::new(
                "receivers",
                format!(
                    "{} receivers, at most {MAX_RECEIVERS} allowed",
                    self.receivers.len()
                ),
            ));
        }
        for (i, id) in self.receivers.iter().enumerate() {
            if *id <= 0 {
                return Err(Rejection::new(
                    format!("receivers[{i}]"),
                    format!("{id} is not a receiver id (a positive integer)"),
                ));
            }
            if self.receivers[..i].contains(id) {
                return Err(Rejection::new(
                    format!("receivers[{i}]"),
                    format!("{id} is given twice"),
                ));
            }
        }
        Ok(())
    }

    /// Parse and validate a JSON body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Rejection> {
        let spec: Self = super::parse_json(bytes)?;
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn base() -> Value {
        json!({
            "org_id": "acme",
            "name": "openai failing",
            "signal": {"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300},
            "for_secs": 120,
            "labels": {"team": "search"},
            "annotations": {"summary": "openai errors above 5 %"},
            "severity": "critical",
            "receivers": [1, 2]
        })
    }

    fn field(v: Value) -> String {
        RuleSpec::from_json(v.to_string().as_bytes())
            .map(|_| String::new())
            .unwrap_or_else(|r| r.field)
    }

    #[test]
    fn a_signals_decimal_refused_names_its_member() {
        // A trial sent `"above_percent": 5` and was told of `signal`, and
        // of money.
        for bad in [json!(5), json!("-0"), json!("1e1")] {
            let v = with(&["signal", "above_percent"], bad.clone());
            let refused = RuleSpec::from_json(v.to_string().as_bytes()).unwrap_err();
            assert_eq!(refused.field, "signal.above_percent", "{bad}: {refused}");
            assert!(!refused.reason.starts_with('`'), "{refused}");
        }
        let spend = with(
            &["signal"],
            json!({"kind": "spend", "subject_kind": "team", "subject_id": "search",
                   "window_secs": 3600, "per_hour_above_usd": 2}),
        );
        assert_eq!(field(spend), "signal.per_hour_above_usd");
        // Written back as decimal strings, as before.
        let spec = RuleSpec::from_json(base().to_string().as_bytes()).unwrap();
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["signal"]["above_percent"],
            "5"
        );
    }

    #[test]
    fn a_signals_member_refused_is_named_whatever_its_kind() {
        // serde's internally tagged enums named only `signal` for a member
        // of the wrong type or value; every kind's members are named now.
        let cases = [
            (
                json!({"kind": "error_rate", "above_percent": "5", "window_secs": "300"}),
                "signal.window_secs",
            ),
            (
                json!({"kind": "error_rate", "above_percent": "5", "window_secs": 300, "team": 7}),
                "signal.team",
            ),
            (
                json!({"kind": "latency", "metric": "ttft", "percentile": "99", "above_ms": 5, "window_secs": 60}),
                "signal.percentile",
            ),
            (
                json!({"kind": "latency", "metric": "ttft", "percentile": 99, "above_ms": -5, "window_secs": 60}),
                "signal.above_ms",
            ),
            (
                json!({"kind": "spend", "subject_kind": "team", "subject_id": 5, "window_secs": 60, "above_usd": "1"}),
                "signal.subject_id",
            ),
            (
                json!({"kind": "budget_used", "budget_id": "7", "above_percent": 90}),
                "signal.budget_id",
            ),
            (
                json!({"kind": "budget_forecast", "budget_id": 1.5}),
                "signal.budget_id",
            ),
            (
                json!({"kind": "new_error_pattern", "provider": ["openai"]}),
                "signal.provider",
            ),
            (
                json!({"kind": "breaker_opened", "model": {}}),
                "signal.model",
            ),
            (
                json!({"kind": "pipeline_health", "metric": "lag", "above": 1, "window_secs": 60}),
                "signal.metric",
            ),
            (
                json!({"kind": "pipeline_health", "metric": "consumer_lag", "window_secs": 60}),
                "signal.above",
            ),
            (json!({"kind": 5, "above": 1}), "signal.kind"),
            (json!({"above": 1}), "signal.kind"),
            (json!("error_rate"), "signal"),
        ];
        for (signal, expected) in cases {
            let v = with(&["signal"], signal.clone());
            let refused = RuleSpec::from_json(v.to_string().as_bytes()).unwrap_err();
            assert_eq!(refused.field, expected, "{signal}: {refused}");
            assert!(!refused.reason.starts_with('`'), "{refused}");
        }
        // A member given twice is named too (the JSON text, not a Value:
        // a Value cannot hold it).
        let twice = r#"{"org_id": "acme", "name": "n", "severity": "info",
            "signal": {"kind": "budget_forecast", "budget_id": 1, "budget_id": 2}}"#;
        let refused = RuleSpec::from_json(twice.as_bytes()).unwrap_err();
        assert_eq!(refused.field, "signal.budget_id", "{refused}");
        assert_eq!(refused.reason, "given more than once");
    }

    #[test]
    fn a_runbook_url_is_an_annotation_and_absent_when_empty() {
        let spec: RuleSpec = serde_json::from_value(with(
            &["annotations", "runbook_url"],
            json!("https://wiki.example/runbooks/openai-errors"),
        ))
        .unwrap();
        spec.validate().unwrap();
        assert_eq!(
            spec.annotations.runbook_url,
            "https://wiki.example/runbooks/openai-errors"
        );
        // Stored specs without one are written as before.
        let plain: RuleSpec = serde_json::from_value(base()).unwrap();
        assert!(!serde_json::to_string(&plain)
            .unwrap()
            .contains("runbook_url"));
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut v = base();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        v
    }

    #[test]
    fn every_signal_kind_parses_and_round_trips() {
        for signal in [
            json!({"kind": "error_rate", "model": "gpt-4o", "team": "t", "above_percent": "0.5", "window_secs": 60}),
            json!({"kind": "latency", "metric": "ttft", "percentile": 99, "above_ms": 2000, "window_secs": 600}),
            json!({"kind": "latency", "metric": "duration", "percentile": 50, "provider": "anthropic", "above_ms": 1, "window_secs": 604800}),
            json!({"kind": "spend", "subject_kind": "team", "subject_id": "search", "window_secs": 3600, "above_usd": "100.25"}),
            json!({"kind": "spend", "subject_kind": "tag", "subject_id": "feature=chat", "window_secs": 3600, "per_hour_above_usd": "0.000000000001"}),
            json!({"kind": "budget_used", "budget_id": 7, "above_percent": 90}),
            json!({"kind": "budget_forecast", "budget_id": 7}),
            json!({"kind": "new_error_pattern"}),
            json!({"kind": "new_error_pattern", "provider": "openai"}),
            json!({"kind": "breaker_opened", "provider": "openai", "model": "gpt-4o"}),
            json!({"kind": "pipeline_health", "metric": "consumer_lag", "above": 10000, "window_secs": 60}),
            json!({"kind": "pipeline_health", "metric": "proxy_spool_depth", "above": 0, "window_secs": 60}),
        ] {
            let v = with(&["signal"], signal.clone());
            let spec = RuleSpec::from_json(v.to_string().as_bytes())
                .unwrap_or_else(|r| panic!("{signal}: {r}"));
            let again = serde_json::to_vec(&spec).unwrap();
            assert_eq!(RuleSpec::from_json(&again).unwrap(), spec, "{signal}");
        }
        let spec = RuleSpec::from_json(base().to_string().as_bytes()).unwrap();
        assert!(spec.enabled, "enabled by default");
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["signal"]["above_percent"],
            "5",
            "percentages travel as exact decimal strings"
        );
    }

    #[test]
    fn malformed_and_out_of_range_fields_are_named() {
        for (v, want) in [
            (with(&["org_id"], json!("")), "org_id"),
            (with(&["org_id"], json!("a".repeat(129))), "org_id"),
            (with(&["name"], json!("")), "name"),
            (with(&["name"], json!("a\nb")), "name"),
            (with(&["name"], json!("n".repeat(129))), "name"),
            (
                with(&["description"], json!("d".repeat(4097))),
                "description",
            ),
            (with(&["description"], json!("a\u{7}")), "description"),
            (with(&["for_secs"], json!(86_401)), "for_secs"),
            (with(&["for_secs"], json!(-1)), "for_secs"),
            (with(&["for_secs"], json!(1.5)), "for_secs"),
            (with(&["severity"], json!("page")), "severity"),
            (with(&["enabled"], json!("yes")), "enabled"),
            (with(&["colour"], json!("red")), "colour"),
            (with(&["receivers"], json!([0])), "receivers[0]"),
            (with(&["receivers"], json!([3, 3])), "receivers[1]"),
            (
                with(&["receivers"], json!((1..=17).collect::<Vec<_>>())),
                "receivers",
            ),
            (
                with(&["signal", "window_secs"], json!(59)),
                "signal.window_secs",
            ),
            (
                with(&["signal", "window_secs"], json!(604_801)),
                "signal.window_secs",
            ),
            (
                with(&["signal", "above_percent"], json!(5)),
                "signal.above_percent",
            ),
            (
                with(&["signal", "above_percent"], json!("100")),
                "signal.above_percent",
            ),
            (
                with(&["signal", "above_percent"], json!("-1")),
                "signal.above_percent",
            ),
            (
                with(&["signal", "above_percent"], json!("1e3")),
                "signal.above_percent",
            ),
            (with(&["signal", "provider"], json!("")), "signal.provider"),
            (
                with(&["signal", "provider"], json!("p".repeat(257))),
                "signal.provider",
            ),
            (with(&["signal", "bogus"], json!(1)), "signal.bogus"),
            (with(&["signal", "kind"], json!("cpu")), "signal.kind"),
            (
                with(&["annotations", "summary"], json!("s".repeat(1025))),
                "annotations.summary",
            ),
            (
                with(&["annotations", "runbook"], json!("x")),
                "annotations.runbook",
            ),
            (
                with(
                    &["annotations", "runbook_url"],
                    json!("javascript:alert(1)"),
                ),
                "annotations.runbook_url",
            ),
            (
                with(
                    &["annotations", "runbook_url"],
                    json!("https://wiki example/x"),
                ),
                "annotations.runbook_url",
            ),
            (json!({"name": "x"}), "org_id"),
            (
                with(
                    &["signal"],
                    json!({"kind": "error_rate", "above_percent": "5"}),
                ),
                "signal.window_secs",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "latency", "metric": "ttft", "percentile": 75, "above_ms": 5, "window_secs": 60}),
                ),
                "signal.percentile",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "latency", "metric": "ttft", "percentile": 99, "above_ms": 0, "window_secs": 60}),
                ),
                "signal.above_ms",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "latency", "metric": "tpot", "percentile": 99, "above_ms": 5, "window_secs": 60}),
                ),
                "signal.metric",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "team", "subject_id": "s", "window_secs": 60}),
                ),
                "signal.above_usd",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "team", "subject_id": "s", "window_secs": 60, "above_usd": "1", "per_hour_above_usd": "1"}),
                ),
                "signal.per_hour_above_usd",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "team", "subject_id": "s", "window_secs": 60, "above_usd": "0"}),
                ),
                "signal.above_usd",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "team", "subject_id": "s", "window_secs": 60, "above_usd": "1000000000000.1"}),
                ),
                "signal.above_usd",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "team", "subject_id": "s", "window_secs": 60, "above_usd": "0.0000000000001"}),
                ),
                "signal.above_usd",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "team", "subject_id": "s", "window_secs": 60, "above_usd": 1.5}),
                ),
                "signal.above_usd",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "tag", "subject_id": "nokey", "window_secs": 60, "above_usd": "1"}),
                ),
                "signal.subject_id",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "spend", "subject_kind": "user", "subject_id": "u", "window_secs": 60, "above_usd": "1"}),
                ),
                "signal.subject_kind",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "budget_used", "budget_id": 0, "above_percent": 90}),
                ),
                "signal.budget_id",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "budget_used", "budget_id": 1, "above_percent": 1001}),
                ),
                "signal.above_percent",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "budget_forecast", "budget_id": -4}),
                ),
                "signal.budget_id",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "pipeline_health", "metric": "consumer_lag", "above": 1_000_000_000_001_u64, "window_secs": 60}),
                ),
                "signal.above",
            ),
            (
                with(
                    &["signal"],
                    json!({"kind": "pipeline_health", "metric": "cpu", "above": 1, "window_secs": 60}),
                ),
                "signal.metric",
            ),
        ] {
            assert_eq!(field(v.clone()), want, "{v}");
        }
    }

    #[test]
    fn hostile_labels_are_refused() {
        assert_eq!(field(with(&["labels"], json!({"a-b": "x"}))), "labels.a-b");
        assert_eq!(
            field(with(&["labels"], json!({"__name__": "x"}))),
            "labels.__name__"
        );
        assert_eq!(field(with(&["labels"], json!({"": "x"}))), "labels.");
        assert_eq!(
            field(with(&["labels"], json!({"a": "v".repeat(1025)}))),
            "labels.a"
        );
        assert_eq!(field(with(&["labels"], json!({"a": "x\u{0}"}))), "labels.a");
        let huge: serde_json::Map<String, Value> =
            (0..33).map(|i| (format!("l{i}"), json!("v"))).collect();
        assert_eq!(field(with(&["labels"], Value::Object(huge))), "labels");
        let huge: serde_json::Map<String, Value> =
            (0..10_000).map(|i| (format!("l{i}"), json!("v"))).collect();
        assert_eq!(
            field(with(&["labels"], Value::Object(huge))),
            "body",
            "over the body limit"
        );
    }
}
