//! An internally tagged object (a rule's `signal`: `kind` and the kind's
//! members) read so that a refused member is named. serde's derive for such
//! enums buffers the members and reads the variant from the buffer, where
//! `serde_path_to_error` no longer sees the path: a wrong type in
//! `window_secs` would be refused as `signal`. Here the members are read as
//! JSON values first ([`read`], refusing a member given twice), then the
//! variant's own struct from them ([`variant`]), its refusal carrying the
//! member's path as `` `window_secs`: reason ``, which
//! [`super::parse_json`] turns into `signal.window_secs`.

use serde::de::{DeserializeOwned, Error, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

/// The object's members; a member given twice is refused by its name.
pub fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    d.deserialize_map(Members)
}

/// The variant `T` read from its members, a refusal naming the member.
pub fn variant<T: DeserializeOwned, E: Error>(members: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(members).map_err(|err| {
        let path = err.path().to_string();
        let refusal = crate::json_body::refusal(&path, err.inner(), "");
        if refusal.field.is_empty() {
            E::custom(refusal.reason)
        } else {
            E::custom(format!("`{}`: {}", refusal.field, refusal.reason))
        }
    })
}

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                let shown: String = name.chars().take(64).collect();
                return Err(A::Error::custom(format!("`{shown}`: given more than once")));
            }
            let value = map.next_value::<Value>()?;
            members.insert(name, value);
        }
        Ok(members)
    }
}
