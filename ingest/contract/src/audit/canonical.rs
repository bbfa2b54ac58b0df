//! RFC 8785 (JCS), the canonical JSON an audit entry holds its event in
//! (`event_json`), written in one pass over the value's `serde_json::Value`.
//!
//! The form is `serde_jcs`'s, byte for byte (a property test compares the
//! two on random events): members sorted by the UTF-16 code units of their
//! names, every number written as the IEEE-754 double ECMAScript's
//! `Number.prototype.toString` writes (so an integer above 2^53 loses
//! precision, as JCS says it must), strings escaped as
//! [`super::entry`]'s `push_json_string` does, no whitespace. `serde_jcs`
//! got there through a buffer per member and a JSON parse of every member
//! name: its canonical form was 28 % of the processor's CPU, as much as the
//! rest of the audit fold (docs/performance.md, "The audit fold's canonical
//! JSON").

use serde::Serialize;
use serde_json::{Number, Value};

use super::entry::push_json_string;

/// The RFC 8785 canonical JSON of `value`; fails only where `serde_json`
/// fails (a map whose keys are not strings).
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = String::with_capacity(1024);
    write_value(&value, &mut out);
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => push_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            // serde_json's map is sorted by UTF-8 bytes already, the same
            // order unless a name holds a character from U+E000 up.
            sorted.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, name);
                out.push(':');
                write_value(member, out);
            }
            out.push('}');
        }
    }
}

/// JCS writes every number as a double. A `Value` holds only finite ones
/// (serde_json makes NaN and the infinities `null`, as `serde_jcs` does).
#[allow(clippy::cast_precision_loss)]
fn write_number(n: &Number, out: &mut String) {
    let double = if let Some(u) = n.as_u64() {
        u as f64
    } else if let Some(i) = n.as_i64() {
        i as f64
    } else {
        n.as_f64().unwrap_or(0.0)
    };
    out.push_str(ryu_js::Buffer::new().format_finite(double));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn members_sort_by_utf16_and_numbers_are_doubles() {
        // U+FF61 sorts before U+1F600 in UTF-8 but after it in UTF-16.
        let value = json!({
            "b": [1, -2, 1.5, 9007199254740993u64, 18446744073709551615u64, 1e21, 0.000001],
            "a": {"\u{1F600}": true, "\u{FF61}": null, "": "x\u{1}\"\\"},
        });
        let ours = to_canonical_json(&value).unwrap();
        assert_eq!(ours, serde_jcs::to_string(&value).unwrap());
        assert!(
            ours.starts_with(
                "{\"a\":{\"\":\"x\\u0001\\\"\\\\\",\"\u{1F600}\":true,\"\u{FF61}\":null}"
            ),
            "{ours}"
        );
        assert!(
            ours.contains("9007199254740992,18446744073709552000,1e+21,0.000001"),
            "{ours}"
        );
    }

    #[test]
    fn numbers_that_are_not_finite_are_null_in_both() {
        let value = [f64::NAN, f64::INFINITY, 2.0];
        assert_eq!(to_canonical_json(&value).unwrap(), "[null,null,2]");
        assert_eq!(serde_jcs::to_string(&value).unwrap(), "[null,null,2]");
    }

    fn text() -> impl Strategy<Value = String> {
        "(\\PC|[\"\\\\/\u{1}\n\u{FF61}\u{1F600}]){0,24}"
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e30f64..1e30).prop_map(|n| json!(n)),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_is_written_as_serde_jcs_writes_it(value in json_value()) {
            let ours = to_canonical_json(&value);
            let theirs = serde_jcs::to_string(&value);
            prop_assert_eq!(ours.ok(), theirs.ok());
        }
    }
}
