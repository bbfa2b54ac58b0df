//! A request body's `Content-Encoding` undone, the same for `POST
//! /v1/events` and OTLP/HTTP `POST /v1/traces`: gzip or none; anything
//! else is a 415 naming the encoding. The decompressed size is held to the
//! body's limit (`ingest.max_body_bytes`), so a small bomb is a 413, not
//! an allocation of its inflated size.

use std::io::Read;

use axum::http::{header, HeaderMap};
use bytes::Bytes;

use crate::error::IngestError;

/// `raw` with the `Content-Encoding` of `headers` undone, at most `limit`
/// bytes once decompressed.
pub(crate) fn decode(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            // Every member: a body may be several gzip members back to
            // back (`cat a.gz b.gz`, a shipper appending chunks), and
            // `GzDecoder` stops after the first without an error, so the
            // events of the others were answered 200 and dropped.
            flate2::read::MultiGzDecoder::new(raw.as_ref())
                .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|err| {
                    IngestError::bad_request(
                        "content-encoding",
                        format!("the gzip body could not be decompressed: {err}"),
                    )
                })?;
            if out.len() > limit {
                return Err(IngestError::BodyTooLarge { limit });
            }
            Ok(out.into())
        }
        other => Err(IngestError::UnsupportedEncoding {
            encoding: other.chars().take(64).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write;

    fn headers(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap(),
        );
        headers
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap().into()
    }

    #[test]
    fn gzip_is_undone_and_none_is_kept() {
        let body = gzip(b"[1,2,3]");
        assert_eq!(
            decode(&headers("gzip"), body, 100).unwrap().as_ref(),
            b"[1,2,3]"
        );
        assert_eq!(
            decode(&HeaderMap::new(), Bytes::from_static(b"x"), 100)
                .unwrap()
                .as_ref(),
            b"x"
        );
    }

    #[test]
    fn every_member_of_a_multi_member_body_is_read() {
        let mut body = gzip(b"{\"a\":1}\n").to_vec();
        body.extend_from_slice(&gzip(b"{\"b\":2}\n"));
        assert_eq!(
            decode(&headers("gzip"), Bytes::from(body), 1_000).unwrap(),
            Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n")
        );
        // Bytes after the last member that are not a member are refused,
        // not dropped.
        let mut trailing = gzip(b"[1]").to_vec();
        trailing.extend_from_slice(b"not gzip");
        assert!(decode(&headers("gzip"), Bytes::from(trailing), 1_000).is_err());
    }

    #[test]
    fn a_bomb_is_held_to_the_limit() {
        let body = gzip(&vec![b' '; 10_000]);
        assert!(matches!(
            decode(&headers("gzip"), body, 1_000),
            Err(IngestError::BodyTooLarge { limit: 1_000 })
        ));
    }

    #[test]
    fn other_encodings_are_415_naming_them() {
        for encoding in ["br", "deflate", "zstd"] {
            let err = decode(&headers(encoding), Bytes::from_static(b"x"), 100).unwrap_err();
            assert_eq!(
                err.status_code(),
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
            assert!(err.to_string().contains(&format!("{encoding:?}")), "{err}");
            assert_eq!(err.to_json()["field"], "content-encoding");
        }
        let err = decode(&headers("gzip"), Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert_eq!(err.to_json()["field"], "content-encoding");
    }
}
