//! RowBinary, the format of the folds' inserts, written when a row is made
//! rather than when its batch is inserted.
//!
//! A fold's batch waits in memory until it is inserted. Held as structs, a
//! row of `calls` costs about 2 KB (28 `String`s, each a heap block of its
//! own); encoded it is the bytes ClickHouse reads, about 0.5 KB, in one
//! block. So the folds encode a row as soon as it is made
//! ([`EncodedRow`]) and the insert sends the bytes as they are
//! ([`crate::clickhouse::insert_encoded`]): the same request the typed
//! insert of the `clickhouse` crate makes (`INSERT INTO t(<the struct's
//! fields>) FORMAT RowBinary`), whose serializer that crate keeps private.
//!
//! [`encode`] is a serde serializer for the types our rows use, with the
//! crate's encoding of each: integers little-endian, `bool` as one byte,
//! strings and byte strings as a LEB128 length and the bytes, a sequence as
//! a LEB128 count and its elements, an `Option` as a null byte (1 for
//! `None`, 0 before a value), a struct or tuple as its fields in order. Any
//! other shape is an error naming it, so a row type that grows one cannot
//! be written wrong.

use clickhouse::Row;
use serde::ser::{self, Impossible, Serialize};

/// Why a row could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum RowBinaryError {
    #[error("RowBinary: a row cannot hold {0}")]
    Unsupported(&'static str),
    #[error("RowBinary: a sequence must say its length before its elements")]
    UnknownLength,
    #[error("RowBinary: {0}")]
    Custom(String),
}

impl ser::Error for RowBinaryError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }
}

/// Append `row` to `out` in RowBinary.
pub fn encode<R: Serialize + ?Sized>(
    row: &R,
    out: &mut Vec<u8>,
) -> std::result::Result<(), RowBinaryError> {
    row.serialize(&mut Writer { out })
}

/// A row of a fold's table, encoded when it was made, with what the fold
/// and the consumer runtime still read of it (`meta`: its Kafka position
/// and whatever else the fold names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRow<M> {
    pub meta: M,
    bytes: Box<[u8]>,
}

impl<M> EncodedRow<M> {
    /// Encode `row`, keeping `meta` beside it.
    pub fn new<R: Serialize>(row: &R, meta: M) -> std::result::Result<Self, RowBinaryError> {
        let mut out = Vec::with_capacity(512);
        encode(row, &mut out)?;
        Ok(Self {
            meta,
            bytes: out.into_boxed_slice(),
        })
    }

    /// The row in RowBinary.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<M: crate::fold::Positioned> crate::fold::Positioned for EncodedRow<M> {
    fn position(&self) -> (i32, i64) {
        self.meta.position()
    }
}

/// `INSERT INTO <table>(<R's fields>) FORMAT RowBinary`: the statement the
/// bytes of [`encode`]d `R`s are sent with. `table` is one of our own
/// table names, never input.
pub fn insert_sql<R: Row>(table: &str) -> String {
    format!(
        "INSERT INTO {table}({}) FORMAT RowBinary",
        column_list::<R>()
    )
}

/// `R`'s columns, quoted, comma-separated: the columns a row of `R` writes.
pub fn column_list<R: Row>() -> String {
    R::COLUMN_NAMES
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(",")
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn length(&mut self, n: usize) {
        // A usize always fits in a u64 on the platforms we build for.
        clickhouse_types::put_leb128(&mut *self.out, n as u64);
    }
}

type Result<T = ()> = std::result::Result<T, RowBinaryError>;

/// Serializer methods that write a number's little-endian bytes.
macro_rules! little_endian {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, v: $ty) -> Result {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a, 'b> ser::Serializer for &'b mut Writer<'a> {
    type Ok = ();
    type Error = RowBinaryError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeStruct = Self;
    type SerializeTupleVariant = Impossible<(), RowBinaryError>;
    type SerializeMap = Impossible<(), RowBinaryError>;
    type SerializeStructVariant = Impossible<(), RowBinaryError>;

    fn serialize_bool(self, v: bool) -> Result {
        self.out.push(u8::from(v));
        Ok(())
    }
    little_endian! {
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128,
        serialize_f32: f32,
        serialize_f64: f64,
    }
    fn serialize_u8(self, v: u8) -> Result {
        self.out.push(v);
        Ok(())
    }
    fn serialize_char(self, _v: char) -> Result {
        Err(RowBinaryError::Unsupported("a char"))
    }
    fn serialize_str(self, v: &str) -> Result {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        self.length(v.len());
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result {
        self.out.push(1);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        self.out.push(0);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        Err(RowBinaryError::Unsupported("a unit value"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        Err(RowBinaryError::Unsupported("a unit struct"))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result {
        Err(RowBinaryError::Unsupported("an enum"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result {
        Err(RowBinaryError::Unsupported("an enum"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.length(len.ok_or(RowBinaryError::UnknownLength)?);
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(RowBinaryError::Unsupported("an enum"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(RowBinaryError::Unsupported("a map"))
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(RowBinaryError::Unsupported("an enum"))
    }
}

/// The compounds whose elements follow one another with nothing between
/// them (a sequence's count is written when it starts).
macro_rules! in_order {
    ($($compound:ident::$element:ident),* $(,)?) => {$(
        impl ser::$compound for &mut Writer<'_> {
            type Ok = ();
            type Error = RowBinaryError;
            fn $element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result {
                Ok(())
            }
        }
    )*};
}

in_order!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
);

impl ser::SerializeStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = RowBinaryError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _key: &'static str, value: &T) -> Result {
        value.serialize(&mut **self)
    }
    fn skip_field(&mut self, _key: &'static str) -> Result {
        // The insert names every field as a column: a skipped one would
        // shift every value after it.
        Err(RowBinaryError::Unsupported("a skipped field"))
    }
    fn end(self) -> Result {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, Row)]
    struct Sample {
        id: String,
        small: u8,
        port: u16,
        at: u32,
        ms: u64,
        offset: i64,
        partition: i32,
        cost: i128,
        tags: Vec<String>,
        maybe: Option<u32>,
        nothing: Option<u32>,
        flag: bool,
    }

    #[test]
    fn every_type_a_row_uses_is_written_as_clickhouse_reads_it() {
        let row = Sample {
            id: "é1".into(),
            small: 7,
            port: 0x0102,
            at: 0x0304_0506,
            ms: 1,
            offset: -2,
            partition: -1,
            cost: -3,
            tags: vec!["a".into(), String::new()],
            maybe: Some(9),
            nothing: None,
            flag: true,
        };
        let mut out = Vec::new();
        encode(&row, &mut out).unwrap();
        let mut expected = vec![3, 0xC3, 0xA9, b'1', 7, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03];
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&(-2i64).to_le_bytes());
        expected.extend_from_slice(&[0xFF; 4]);
        expected.extend_from_slice(&(-3i128).to_le_bytes());
        expected.extend_from_slice(&[2, 1, b'a', 0]);
        expected.extend_from_slice(&[0, 9, 0, 0, 0]);
        expected.extend_from_slice(&[1]);
        expected.extend_from_slice(&[1]);
        assert_eq!(out, expected);
        assert_eq!(
            insert_sql::<Sample>("t"),
            "INSERT INTO t(`id`,`small`,`port`,`at`,`ms`,`offset`,`partition`,`cost`,`tags`,`maybe`,`nothing`,`flag`) FORMAT RowBinary"
        );
    }

    #[test]
    fn a_long_string_has_a_multi_byte_length() {
        let text = "x".repeat(300);
        let mut out = Vec::new();
        encode(&text, &mut out).unwrap();
        // 300 = 0b10_0101100: low seven bits with the high bit set, then 2.
        assert_eq!(&out[..2], &[0xAC, 0x02]);
        assert_eq!(out.len(), 302);
    }

    #[test]
    fn shapes_a_row_cannot_hold_are_refused_by_name() {
        let mut out = Vec::new();
        let map = std::collections::BTreeMap::from([(1, 2)]);
        let err = encode(&map, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "RowBinary: a row cannot hold a map");
        let err = encode(&'c', &mut out).unwrap_err();
        assert_eq!(err.to_string(), "RowBinary: a row cannot hold a char");
    }
}
