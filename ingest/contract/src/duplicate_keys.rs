//! A key given twice in one JSON object. serde's derived structs refuse a
//! repeated field, but a map (`tags`) and a [`serde_json::Value`] keep the
//! last value, so `"usage": {"input_tokens": 10, "input_tokens": 999999}`
//! read as a tree bills 999999 without a word. An item whose typed reading
//! failed is walked here before it is read as a tree, and a repeated key is
//! refused naming its path (`call.usage.input_tokens`, `tags.feature`).
//! [`unique_map`] keeps the typed reading of `tags` from taking a repeat.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// The reason a repeated key is refused with.
pub const REPEATED: &str = "appears more than once (a JSON key may be given once)";

/// The dotted path of the first key repeated within one object of `text`
/// (arrays as `[i]`), or `None` when there is none or `text` is not JSON
/// (the caller's reading reports that).
pub fn first_repeated_key(text: &[u8]) -> Option<String> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(text);
    let _ = Walk {
        path: String::new(),
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

struct Walk<'f> {
    path: String,
    found: &'f mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let path = format!("{}[{index}]", self.path);
            let walk = Walk {
                path,
                found: &mut *self.found,
            };
            if seq.next_element_seed(walk)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            // An empty key is named `""`, so a refusal always names a
            // field (the fuzzer found a repeated `""` named by nothing).
            let segment = if key.is_empty() { "\"\"" } else { key.as_str() };
            let path = if self.path.is_empty() {
                segment.to_string()
            } else {
                format!("{}.{segment}", self.path)
            };
            if !seen.insert(key) {
                *self.found = Some(path);
                return Err(A::Error::custom(REPEATED));
            }
            map.next_value_seed(Walk {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

/// `deserialize_with` for a map of strings that refuses a repeated key
/// (serde's `BTreeMap` keeps the last value).
pub fn unique_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                match out.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    Entry::Occupied(slot) => {
                        return Err(A::Error::custom(format!("`{}`: {REPEATED}", slot.key())));
                    }
                }
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_repeated_key_is_named_by_its_path() {
        let text = br#"{"call": {"usage": {"input_tokens": 10, "input_tokens": 999999}}}"#;
        assert_eq!(
            first_repeated_key(text).as_deref(),
            Some("call.usage.input_tokens")
        );
        let text = br#"{"tags": {"a": "1", "b": "2", "a": "3"}}"#;
        assert_eq!(first_repeated_key(text).as_deref(), Some("tags.a"));
        let text = br#"{"x": [{"k": 1}, {"k": 2, "k": 3}]}"#;
        assert_eq!(first_repeated_key(text).as_deref(), Some("x[1].k"));
        // An empty key is named, never an empty path.
        let text = br#"{"": 0, "": 1}"#;
        assert_eq!(first_repeated_key(text).as_deref(), Some("\"\""));
        let text = br#"{"tags": {"": "a", "": "b"}}"#;
        assert_eq!(first_repeated_key(text).as_deref(), Some("tags.\"\""));
        // The same key in two objects is no repeat.
        assert_eq!(
            first_repeated_key(br#"{"a": {"k": 1}, "b": {"k": 1}}"#),
            None
        );
        assert_eq!(first_repeated_key(b"not json"), None);
    }
}
