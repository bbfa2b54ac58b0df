//! RFC 8785 (JCS), the canonical JSON an audit entry holds its event in
//! (`event_json`), written by a `serde` serializer straight from the event.
//!
//! The form is `serde_jcs`'s, byte for byte (property tests compare the two
//! on random JSON, and this serializer with the `serde_json::Value` path it
//! replaced on random values of every shape): members sorted by the UTF-16
//! code units of their names, every number written as the IEEE-754 double
//! ECMAScript's `Number.prototype.toString` writes (so an integer above 2^53
//! loses precision, as JCS says it must), strings escaped as
//! [`super::entry`]'s `push_json_string` does, no whitespace. `serde_jcs`
//! got there through a buffer per member and a JSON parse of every member
//! name (28 % of the processor's CPU); building a `serde_json::Value` of the
//! event first still cost 11 % (docs/performance.md, "The audit fold's
//! canonical JSON").
//!
//! How members are sorted without a tree of values: an object's member
//! values are written one after the other into the output as they come
//! (each already canonical, objects within it sorted when they ended), and
//! their names and places are kept on a stack. When the object ends, its
//! bytes are moved aside and written back in name order, with the names,
//! colons and commas. Each level of nesting moves its bytes once.

use std::borrow::Cow;
use std::ops::Range;

use serde::ser::{self, Impossible, Serialize};

use super::entry::push_json_string;

/// The RFC 8785 canonical JSON of `value`. Fails where `serde_json`'s
/// `Value` fails (a map key that is not a string, a char, a bool or an
/// integer; an integer outside the 64-bit ranges; the value's own
/// `Serialize` error), and on a float map key.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut writer = Canonical {
        out: String::with_capacity(1024),
        members: Vec::with_capacity(32),
        aside: String::new(),
    };
    value.serialize(&mut writer)?;
    Ok(writer.out)
}

type Error = serde_json::Error;

/// The serializer: the output, the members of the objects not ended yet,
/// and the buffer an ending object's bytes are moved to.
struct Canonical {
    out: String,
    members: Vec<Member>,
    aside: String,
}

/// One member of an object not ended yet: its name and where its value's
/// bytes are in the output.
struct Member {
    name: Cow<'static, str>,
    value: Range<usize>,
}

/// JCS's order of member names: by UTF-16 code units, read off the UTF-8
/// bytes. UTF-8's byte order is code point order; UTF-16's differs only
/// between a character from U+10000 up (a surrogate pair, D800 to DBFF
/// first) and one from U+E000 to U+FFFF, whose first bytes are F0 to F4
/// and EE to EF. Two names first differ either at such first bytes or
/// within characters of one length, where both orders agree.
fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).position(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some(i) => {
            let (x, y) = (a[i], b[i]);
            if x >= 0xEE && y >= 0xEE && (x >= 0xF0) != (y >= 0xF0) {
                // The supplementary character comes first in UTF-16.
                y.cmp(&x)
            } else {
                x.cmp(&y)
            }
        }
    }
}

impl Canonical {
    #[allow(clippy::cast_precision_loss)]
    fn number(&mut self, double: f64) {
        if double.is_finite() {
            self.out
                .push_str(ryu_js::Buffer::new().format_finite(double));
        } else {
            // serde_json's `Value` makes NaN and the infinities `null`, and
            // so does `serde_jcs`.
            self.out.push_str("null");
        }
    }

    /// An object starts: its members go on the stack above `base`.
    fn open_object(&mut self) -> Object<'_> {
        let base = self.members.len();
        let start = self.out.len();
        Object {
            writer: self,
            base,
            start,
            key: None,
        }
    }

    /// The value of `name` is whatever `write` writes now.
    fn member<T: Serialize + ?Sized>(
        &mut self,
        name: Cow<'static, str>,
        value: &T,
    ) -> Result<(), Error> {
        let from = self.out.len();
        value.serialize(&mut *self)?;
        self.members.push(Member {
            name,
            value: from..self.out.len(),
        });
        Ok(())
    }

    /// The object whose values start at `start` and whose members are
    /// those above `base` ends: written back sorted, with the names.
    fn close_object(&mut self, base: usize, start: usize) {
        self.aside.clear();
        self.aside.push_str(&self.out[start..]);
        self.out.truncate(start);
        let members = &mut self.members[base..];
        members.sort_by(|a, b| utf16_order(&a.name, &b.name));
        self.out.push('{');
        for (i, member) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_json_string(&mut self.out, &member.name);
            self.out.push(':');
            let (from, to) = (member.value.start - start, member.value.end - start);
            self.out.push_str(&self.aside[from..to]);
        }
        self.out.push('}');
        self.members.truncate(base);
    }

    /// `{"variant":` before an enum variant with content (serde_json's
    /// externally tagged form).
    fn open_variant(&mut self, variant: &'static str) {
        self.out.push('{');
        push_json_string(&mut self.out, variant);
        self.out.push(':');
    }
}

/// A sequence (array, tuple) being written; `variant` closes the variant's
/// object too.
pub struct Sequence<'w> {
    writer: &'w mut Canonical,
    first: bool,
    variant: bool,
}

impl Sequence<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.writer.out.push(',');
        }
        self.first = false;
        value.serialize(&mut *self.writer)
    }

    fn close(self) {
        self.writer.out.push(']');
        if self.variant {
            self.writer.out.push('}');
        }
    }
}

/// An object (map, struct) being written; `key` holds a map key until its
/// value comes; `variant` closes the variant's object too.
pub struct Object<'w> {
    writer: &'w mut Canonical,
    base: usize,
    start: usize,
    key: Option<Cow<'static, str>>,
}

/// A struct variant: its object, inside the variant's.
pub struct VariantObject<'w>(Object<'w>);

/// The number types every value of which is a double: written as one.
macro_rules! exact_doubles {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<(), Error> {
                self.number(f64::from(v));
                Ok(())
            }
        )*
    };
}

impl<'w> ser::Serializer for &'w mut Canonical {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Sequence<'w>;
    type SerializeTuple = Sequence<'w>;
    type SerializeTupleStruct = Sequence<'w>;
    type SerializeTupleVariant = Sequence<'w>;
    type SerializeMap = Object<'w>;
    type SerializeStruct = Object<'w>;
    type SerializeStructVariant = VariantObject<'w>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    exact_doubles!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_f32: f32,
    );

    #[allow(clippy::cast_precision_loss)]
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.number(v as f64);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        // serde_json's `Value` takes what fits 64 bits, and only that.
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(v), _) => self.serialize_i64(v),
            (_, Ok(v)) => self.serialize_u64(v),
            _ => Err(ser::Error::custom("number out of range")),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.number(v as f64);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => Err(ser::Error::custom("number out of range")),
        }
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.number(v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        push_json_string(&mut self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        push_json_string(&mut self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        // An array of numbers, as serde_json writes bytes.
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.element(b)?;
        }
        seq.close();
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push_str("null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push('}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Sequence<'w>, Error> {
        self.out.push('[');
        Ok(Sequence {
            writer: self,
            first: true,
            variant: false,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Sequence<'w>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Sequence<'w>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Sequence<'w>, Error> {
        self.open_variant(variant);
        let mut seq = self.serialize_seq(Some(len))?;
        seq.variant = true;
        Ok(seq)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Object<'w>, Error> {
        Ok(self.open_object())
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Object<'w>, Error> {
        Ok(self.open_object())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantObject<'w>, Error> {
        self.open_variant(variant);
        Ok(VariantObject(self.open_object()))
    }
}

/// The four sequence traits, each [`Sequence::element`] per element.
macro_rules! sequence_traits {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(
            impl ser::$trait for Sequence<'_> {
                type Ok = ();
                type Error = Error;

                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    self.element(value)
                }

                fn end(self) -> Result<(), Error> {
                    self.close();
                    Ok(())
                }
            }
        )*
    };
}

sequence_traits!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(Cow::Owned(key.serialize(MemberName)?));
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let name = self
            .key
            .take()
            .ok_or_else(|| <Error as ser::Error>::custom("a map value without its key"))?;
        self.writer.member(name, value)
    }

    fn end(self) -> Result<(), Error> {
        self.writer.close_object(self.base, self.start);
        Ok(())
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.writer.member(Cow::Borrowed(key), value)
    }

    fn end(self) -> Result<(), Error> {
        self.writer.close_object(self.base, self.start);
        Ok(())
    }
}

impl ser::SerializeStructVariant for VariantObject<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.0, key, value)
    }

    /// The struct's object ends, then the variant's around it.
    fn end(self) -> Result<(), Error> {
        let Object {
            writer,
            base,
            start,
            ..
        } = self.0;
        writer.close_object(base, start);
        writer.out.push('}');
        Ok(())
    }
}

/// A map key as a member name: a string, a char, a bool, or an integer
/// written in decimal, as serde_json writes them; anything else (a float
/// too, which serde_json would write) is an error.
struct MemberName;

fn not_a_name() -> Error {
    ser::Error::custom("key must be a string")
}

macro_rules! integer_names {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<String, Error> {
                Ok(v.to_string())
            }
        )*
    };
}

macro_rules! refused_names {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(self, _v: $ty) -> Result<String, Error> {
                Err(not_a_name())
            }
        )*
    };
}

impl ser::Serializer for MemberName {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = Impossible<String, Error>;
    type SerializeTuple = Impossible<String, Error>;
    type SerializeTupleStruct = Impossible<String, Error>;
    type SerializeTupleVariant = Impossible<String, Error>;
    type SerializeMap = Impossible<String, Error>;
    type SerializeStruct = Impossible<String, Error>;
    type SerializeStructVariant = Impossible<String, Error>;

    refused_names!(
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_bytes: &[u8],
    );

    fn serialize_none(self) -> Result<String, Error> {
        Err(not_a_name())
    }

    fn serialize_unit(self) -> Result<String, Error> {
        Err(not_a_name())
    }

    integer_names!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128,
    );

    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_char(self, v: char) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_string())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }

    fn serialize_bool(self, v: bool) -> Result<String, Error> {
        Ok(if v { "true" } else { "false" }.to_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, Error> {
        Err(not_a_name())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Error> {
        Err(not_a_name())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, Error> {
        Err(not_a_name())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_name())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_name())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_name())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_name())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_name())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_name())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::{json, Value};

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

        #[test]
        fn any_shape_is_written_as_its_serde_json_value_is(outer in outer()) {
            // The reference: serde_json's `Value` of the same value (what
            // the audit fold built before), written by `serde_jcs`.
            let ours = to_canonical_json(&outer).unwrap();
            let theirs = serde_jcs::to_string(&serde_json::to_value(&outer).unwrap()).unwrap();
            prop_assert_eq!(ours, theirs);
        }
    }

    /// Bytes serialized as bytes (a `Vec<u8>` is a sequence).
    #[derive(Debug, Clone)]
    struct Bytes(Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    #[derive(Debug, Clone, Serialize)]
    struct Wrapper(String);

    #[derive(Debug, Clone, Serialize)]
    struct Marker;

    #[derive(Debug, Clone, Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Shape {
        Unit,
        Newtype(i32),
        Pair(u8, String),
        Fields { zeta: bool, alpha: Option<f64> },
    }

    #[derive(Debug, Clone, Serialize)]
    struct Inner {
        zeta: String,
        alpha: Vec<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        maybe: Option<u32>,
        #[serde(rename = "\u{FF61}")]
        late_in_utf16: u16,
        #[serde(rename = "\u{1F600}")]
        early_in_utf16: i16,
    }

    #[derive(Debug, Clone, Serialize)]
    struct Outer {
        tags: BTreeMap<String, String>,
        by_number: BTreeMap<u32, bool>,
        by_flag: BTreeMap<bool, i8>,
        by_char: BTreeMap<char, u64>,
        inner: Inner,
        nested: Vec<Inner>,
        shapes: Vec<Shape>,
        pair: (char, f32),
        unit: (),
        marker: Marker,
        newtype: Wrapper,
        payload: Value,
        bytes: Bytes,
        wide: i128,
        unsigned_wide: u128,
    }

    fn inner() -> impl Strategy<Value = Inner> {
        (
            text(),
            proptest::collection::vec(any::<i64>(), 0..4),
            any::<Option<u32>>(),
            any::<u16>(),
            any::<i16>(),
        )
            .prop_map(
                |(zeta, alpha, maybe, late_in_utf16, early_in_utf16)| Inner {
                    zeta,
                    alpha,
                    maybe,
                    late_in_utf16,
                    early_in_utf16,
                },
            )
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            any::<i32>().prop_map(Shape::Newtype),
            (any::<u8>(), text()).prop_map(|(a, b)| Shape::Pair(a, b)),
            (any::<bool>(), proptest::option::of(-1e30f64..1e30))
                .prop_map(|(zeta, alpha)| Shape::Fields { zeta, alpha }),
        ]
    }

    fn outer() -> impl Strategy<Value = Outer> {
        (
            (
                proptest::collection::btree_map(text(), text(), 0..5),
                proptest::collection::btree_map(any::<u32>(), any::<bool>(), 0..3),
                proptest::collection::btree_map(any::<bool>(), any::<i8>(), 0..2),
                proptest::collection::btree_map(any::<char>(), any::<u64>(), 0..3),
            ),
            (inner(), proptest::collection::vec(inner(), 0..3)),
            proptest::collection::vec(shape(), 0..5),
            (any::<char>(), any::<f32>(), text(), json_value()),
            (
                proptest::collection::vec(any::<u8>(), 0..6),
                any::<i64>(),
                any::<u64>(),
            ),
        )
            .prop_map(
                |(
                    (tags, by_number, by_flag, by_char),
                    (inner, nested),
                    shapes,
                    (c, f, newtype, payload),
                    (bytes, wide, unsigned_wide),
                )| Outer {
                    tags,
                    by_number,
                    by_flag,
                    by_char,
                    inner,
                    nested,
                    shapes,
                    pair: (c, f),
                    unit: (),
                    marker: Marker,
                    newtype: Wrapper(newtype),
                    payload,
                    bytes: Bytes(bytes),
                    wide: i128::from(wide),
                    unsigned_wide: u128::from(unsigned_wide),
                },
            )
    }

    proptest! {
        #[test]
        fn names_are_ordered_by_their_utf16_code_units(
            shared in "(\\PC|[\u{E000}\u{FFFF}\u{10000}]){0,3}",
            a in "(\\PC|[\u{E000}\u{FF61}\u{FFFF}\u{10000}\u{1F600}\u{10FFFF}]){0,4}",
            b in "(\\PC|[\u{E000}\u{FF61}\u{FFFF}\u{10000}\u{1F600}\u{10FFFF}]){0,4}",
        ) {
            let (a, b) = (format!("{shared}{a}"), format!("{shared}{b}"));
            prop_assert_eq!(utf16_order(&a, &b), a.encode_utf16().cmp(b.encode_utf16()));
            prop_assert_eq!(utf16_order(&a, &a), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        assert!(to_canonical_json(&i128::MAX).is_err());
        assert!(to_canonical_json(&u128::MAX).is_err());
        assert_eq!(to_canonical_json(&-1i128).unwrap(), "-1");
        let by_float: Vec<(f64, u8)> = vec![(1.5, 1)];
        let map: std::collections::HashMap<String, Vec<(f64, u8)>> =
            [("k".to_string(), by_float)].into();
        assert_eq!(to_canonical_json(&map).unwrap(), "{\"k\":[[1.5,1]]}");
        let mut unit_keys = BTreeMap::new();
        unit_keys.insert((), 1);
        assert!(to_canonical_json(&unit_keys).is_err());
        assert!(serde_json::to_value(&unit_keys).is_err());
    }
}
