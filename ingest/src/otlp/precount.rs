//! Counting what an encoded export request holds before decoding it. A
//! decoded span is a few hundred bytes while an empty one costs two bytes
//! of protobuf, so a body within `ingest.max_body_bytes` could still decode
//! into gigabytes; the spans (and the attributes, events and links around
//! them) are counted on the wire first and a request over the limits is
//! refused before anything is allocated for it.

use prost::bytes::Buf;
use prost::encoding::decode_varint;
use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// What a request holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub spans: usize,
    /// Resource and scope groups, attributes (of resources, scopes, spans,
    /// events and links), span events and links.
    pub elements: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.spans += other.spans;
        self.elements += other.elements;
    }
}

/// Field numbers of the OTLP trace messages, as far as counting needs them.
mod field {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const SCOPE_ATTRIBUTES: u32 = 3;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_EVENTS: u32 = 11;
    pub const SPAN_LINKS: u32 = 13;
    pub const EVENT_ATTRIBUTES: u32 = 3;
    pub const LINK_ATTRIBUTES: u32 = 4;
}

/// Call `f` with each length-delimited field of one message (field number,
/// bytes), in order, allocating nothing.
fn each_field<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u32, &'a [u8]) -> Result<(), String>,
) -> Result<(), String> {
    while buf.has_remaining() {
        let key = decode_varint(&mut buf).map_err(|e| e.to_string())?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        match key & 7 {
            0 => {
                decode_varint(&mut buf).map_err(|e| e.to_string())?;
            }
            wire @ (1 | 5) => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err(format!("field {number} is cut short (truncated?)"));
                }
                buf.advance(n);
            }
            2 => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(|e| e.to_string())?)
                    .map_err(|_| "length out of range")?;
                if buf.len() < len {
                    return Err(format!(
                        "field {number} declares {len} bytes but only {} remain (truncated?)",
                        buf.len()
                    ));
                }
                let (value, rest) = buf.split_at(len);
                buf = rest;
                f(number, value)?;
            }
            other => return Err(format!("field {number} has unsupported wire type {other}")),
        }
    }
    Ok(())
}

fn count_of(message: &[u8], number: u32) -> Result<usize, String> {
    let mut n = 0;
    each_field(message, |field, _| {
        n += usize::from(field == number);
        Ok(())
    })?;
    Ok(n)
}

/// Count an `ExportTraceServiceRequest` in protobuf. `Err` names what is
/// malformed (a truncated body, most often).
pub fn protobuf(body: &[u8]) -> Result<Counts, String> {
    let mut counts = Counts::default();
    each_field(body, |n, resource_spans| {
        if n != field::REQUEST_RESOURCE_SPANS {
            return Ok(());
        }
        counts.elements += 1;
        each_field(resource_spans, |n, part| {
            match n {
                field::RESOURCE_SPANS_RESOURCE => {
                    counts.elements += count_of(part, field::RESOURCE_ATTRIBUTES)?;
                }
                field::RESOURCE_SPANS_SCOPE_SPANS => counts.add(scope_spans(part)?),
                _ => {}
            }
            Ok(())
        })
    })?;
    Ok(counts)
}

fn scope_spans(message: &[u8]) -> Result<Counts, String> {
    let mut counts = Counts {
        spans: 0,
        elements: 1,
    };
    each_field(message, |n, part| {
        match n {
            field::SCOPE_SPANS_SCOPE => counts.elements += count_of(part, field::SCOPE_ATTRIBUTES)?,
            field::SCOPE_SPANS_SPANS => {
                counts.spans += 1;
                each_field(part, |n, inner| {
                    counts.elements += match n {
                        field::SPAN_ATTRIBUTES => 1,
                        field::SPAN_EVENTS => 1 + count_of(inner, field::EVENT_ATTRIBUTES)?,
                        field::SPAN_LINKS => 1 + count_of(inner, field::LINK_ATTRIBUTES)?,
                        _ => 0,
                    };
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(counts)
}

/// Count an `ExportTraceServiceRequest` in OTLP/JSON, reading nothing but
/// the counts (unknown fields and values are skipped, as the decoder
/// does).
pub fn json(body: &[u8]) -> Result<Counts, serde_json::Error> {
    let request: JsonRequest = serde_json::from_slice(body)?;
    Ok(request.0)
}

struct JsonRequest(Counts);

/// A JSON array of objects, each counted by `T`, summed.
struct Each<T>(Counts, std::marker::PhantomData<T>);

trait Counted {
    fn counts(&self) -> Counts;
}

impl<'de, T: Deserialize<'de> + Counted> Deserialize<'de> for Each<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Counted> Visitor<'de> for Seq<T> {
            type Value = Counts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counts, A::Error> {
                let mut total = Counts::default();
                while let Some(item) = seq.next_element::<T>()? {
                    total.add(item.counts());
                }
                Ok(total)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Counts, E> {
                Ok(Counts::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Counts, E> {
                Ok(Counts::default())
            }
        }
        Ok(Each(
            d.deserialize_any(Seq::<T>(std::marker::PhantomData))?,
            std::marker::PhantomData,
        ))
    }
}

impl<T> Default for Each<T> {
    fn default() -> Self {
        Each(Counts::default(), std::marker::PhantomData)
    }
}

/// An element counted as one, whatever it holds.
#[derive(serde::Deserialize)]
struct One(#[allow(dead_code)] IgnoredAny);

impl Counted for One {
    fn counts(&self) -> Counts {
        Counts {
            spans: 0,
            elements: 1,
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonAttributed {
    attributes: Each<One>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonResourceSpans {
    resource: Option<JsonAttributed>,
    scope_spans: Each<JsonScopeSpans>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonScopeSpans {
    scope: Option<JsonAttributed>,
    spans: Each<JsonSpan>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonSpan {
    attributes: Each<One>,
    events: Each<JsonAttributedElement>,
    links: Each<JsonAttributedElement>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonAttributedElement {
    attributes: Each<One>,
}

impl Counted for JsonResourceSpans {
    fn counts(&self) -> Counts {
        let mut c = Counts {
            spans: 0,
            elements: 1 + self
                .resource
                .as_ref()
                .map_or(0, |r| r.attributes.0.elements),
        };
        c.add(self.scope_spans.0);
        c
    }
}

impl Counted for JsonScopeSpans {
    fn counts(&self) -> Counts {
        let mut c = Counts {
            spans: 0,
            elements: 1 + self.scope.as_ref().map_or(0, |r| r.attributes.0.elements),
        };
        c.add(self.spans.0);
        c
    }
}

impl Counted for JsonSpan {
    fn counts(&self) -> Counts {
        Counts {
            spans: 1,
            elements: self.attributes.0.elements + self.events.0.elements + self.links.0.elements,
        }
    }
}

impl Counted for JsonAttributedElement {
    fn counts(&self) -> Counts {
        Counts {
            spans: 0,
            elements: 1 + self.attributes.0.elements,
        }
    }
}

impl<'de> Deserialize<'de> for JsonRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Request {
            resource_spans: Each<JsonResourceSpans>,
        }
        let request = Request::deserialize(d)?;
        Ok(JsonRequest(request.resource_spans.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn request(spans: usize) -> ExportTraceServiceRequest {
        let attr = KeyValue {
            key: "a".into(),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|_| Span {
                            attributes: vec![attr.clone(), attr.clone()],
                            events: vec![Event {
                                attributes: vec![attr.clone()],
                                ..Default::default()
                            }],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn protobuf_and_json_count_alike() {
        let req = request(7);
        let want = Counts {
            spans: 7,
            // resource spans + scope spans + 7 × (2 attributes + event + its attribute)
            elements: 2 + 7 * 4,
        };
        assert_eq!(protobuf(&req.encode_to_vec()).unwrap(), want);
        assert_eq!(json(&serde_json::to_vec(&req).unwrap()).unwrap(), want);
    }

    #[test]
    fn a_truncated_body_is_named() {
        let bytes = request(3).encode_to_vec();
        let err = protobuf(&bytes[..bytes.len() - 5]).unwrap_err();
        assert!(
            err.contains("truncated") || err.contains("cut short"),
            "{err}"
        );
    }

    #[test]
    fn two_byte_spans_are_counted_without_decoding() {
        // ScopeSpans { spans: [empty; n] } as raw bytes: 0x12 0x00 per span.
        let n = 100_000usize;
        let mut scope = Vec::with_capacity(2 * n);
        for _ in 0..n {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let resource = [vec![0x12], varint(scope.len()), scope].concat();
        let body = [vec![0x0a], varint(resource.len()), resource].concat();
        assert_eq!(protobuf(&body).unwrap().spans, n);
    }

    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}
