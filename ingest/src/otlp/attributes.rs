//! Reading OTLP attributes (`KeyValue` lists of a span or its resource) as
//! the types the GenAI mapping needs. A present attribute of the wrong type
//! or range is a [`Rejection`] naming the attribute, never silently a zero:
//! a token count that cannot be read would bill the call as free.

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tollgate_contract::Rejection;

/// The attributes of one span or resource.
#[derive(Clone, Copy)]
pub struct Attributes<'a>(pub &'a [KeyValue]);

impl<'a> Attributes<'a> {
    /// The value of `name` (the first, were it repeated: a model-call span
    /// whose attributes repeat is refused first, [`Self::refuse_repeats`]).
    fn get(&self, name: &str) -> Option<&'a AnyValue> {
        self.0
            .iter()
            .find(|kv| kv.key == name)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    /// Refuse a key that appears more than once: the OTLP data model
    /// forbids it, and taking either value would guess at a bill
    /// (`gen_ai.usage.input_tokens` 10 and 999999). `whose` says where the
    /// attributes are ("span", "resource").
    pub fn refuse_repeats(&self, whose: &str) -> Result<(), Rejection> {
        let mut seen = std::collections::HashSet::with_capacity(self.0.len());
        match self.0.iter().find(|kv| !seen.insert(kv.key.as_str())) {
            Some(kv) => Err(Rejection::new(
                kv.key.as_str(),
                format!(
                    "appears more than once among the {whose}'s attributes (an attribute may be given once)"
                ),
            )),
            None => Ok(()),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The first of `names` that is present, with its name.
    pub fn first_present(&self, names: &[&'static str]) -> Option<&'static str> {
        names.iter().copied().find(|n| self.has(n))
    }

    /// A string attribute; `None` when absent or empty.
    pub fn string(&self, name: &str) -> Result<Option<&'a str>, Rejection> {
        match self.get(name) {
            None => Ok(None),
            Some(AnyValue::StringValue(s)) => Ok((!s.is_empty()).then_some(s.as_str())),
            Some(other) => Err(Rejection::new(
                name,
                format!("expected a string, found {}", type_name(other)),
            )),
        }
    }

    /// A token (or other) count: a non-negative integer, also accepted as
    /// an integral double or a decimal string, since instrumentations differ.
    pub fn count(&self, name: &str) -> Result<Option<u64>, Rejection> {
        let bad = |why: String| Rejection::new(name, why);
        match self.get(name) {
            None => Ok(None),
            Some(AnyValue::IntValue(i)) => u64::try_from(*i)
                .map(Some)
                .map_err(|_| bad(format!("must not be negative, found {i}"))),
            Some(AnyValue::DoubleValue(d)) => {
                if d.is_finite() && *d >= 0.0 && d.fract() == 0.0 && *d <= 9.0e15 {
                    // Integral and below 2^53: the cast is exact.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let n = *d as u64;
                    Ok(Some(n))
                } else {
                    Err(bad(format!(
                        "must be a non-negative whole number, found {d}"
                    )))
                }
            }
            Some(AnyValue::StringValue(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
                bad(format!(
                    "must be a non-negative whole number, found the string {:?}",
                    preview(s)
                ))
            }),
            Some(other) => Err(bad(format!(
                "expected an integer, found {}",
                type_name(other)
            ))),
        }
    }

    /// A non-negative number (a double or an integer): seconds, dollars.
    pub fn number(&self, name: &str) -> Result<Option<f64>, Rejection> {
        let seconds = match self.get(name) {
            None => return Ok(None),
            Some(AnyValue::DoubleValue(d)) => *d,
            #[allow(clippy::cast_precision_loss)]
            Some(AnyValue::IntValue(i)) => *i as f64,
            Some(other) => {
                return Err(Rejection::new(
                    name,
                    format!("expected a number, found {}", type_name(other)),
                ))
            }
        };
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(Rejection::new(
                name,
                format!("must be a non-negative number, found {seconds}"),
            ));
        }
        Ok(Some(seconds))
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, Rejection> {
        match self.get(name) {
            None => Ok(None),
            Some(AnyValue::BoolValue(b)) => Ok(Some(*b)),
            Some(AnyValue::StringValue(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(Rejection::new(
                name,
                format!("expected a boolean, found {}", type_name(other)),
            )),
        }
    }

    /// A list of strings (an array attribute); a single string is a list of
    /// one.
    pub fn strings(&self, name: &str) -> Result<Vec<&'a str>, Rejection> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(AnyValue::StringValue(s)) => Ok(vec![s.as_str()]),
            Some(AnyValue::ArrayValue(array)) => array
                .values
                .iter()
                .map(|v| match v.value.as_ref() {
                    Some(AnyValue::StringValue(s)) => Ok(s.as_str()),
                    other => Err(Rejection::new(
                        name,
                        format!(
                            "expected an array of strings, found an element of type {}",
                            other.map_or("empty", type_name)
                        ),
                    )),
                })
                .collect(),
            Some(other) => Err(Rejection::new(
                name,
                format!("expected an array of strings, found {}", type_name(other)),
            )),
        }
    }

    /// An integer attribute (e.g. an HTTP status), `None` when absent.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, Rejection> {
        match self.get(name) {
            None => Ok(None),
            Some(AnyValue::IntValue(i)) => Ok(Some(*i)),
            Some(AnyValue::StringValue(s)) => s.trim().parse().map(Some).map_err(|_| {
                Rejection::new(
                    name,
                    format!("expected an integer, found the string {:?}", preview(s)),
                )
            }),
            Some(other) => Err(Rejection::new(
                name,
                format!("expected an integer, found {}", type_name(other)),
            )),
        }
    }
}

fn type_name(value: &AnyValue) -> &'static str {
    match value {
        AnyValue::StringValue(_) => "a string",
        AnyValue::BoolValue(_) => "a boolean",
        AnyValue::IntValue(_) => "an integer",
        AnyValue::DoubleValue(_) => "a double",
        AnyValue::ArrayValue(_) => "an array",
        AnyValue::KvlistValue(_) => "a key-value list",
        AnyValue::BytesValue(_) => "bytes",
        AnyValue::StringValueStrindex(_) => "a dictionary string reference",
    }
}

/// The start of a possibly huge value, for an error message.
pub fn preview(s: &str) -> String {
    const SHOWN: usize = 40;
    if s.chars().count() <= SHOWN {
        s.to_string()
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head}... ({} bytes)", s.len())
    }
}
