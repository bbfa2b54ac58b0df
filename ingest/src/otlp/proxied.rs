//! Spans of calls a Tollgate proxy already records. An application whose
//! OpenAI or Anthropic client is instrumented and points at the proxy
//! makes each call known twice: the proxy's event and the client's span.
//! Kept both, every such call would be billed twice. The receiver drops a
//! model-call span whose server is one of `ingest.otlp_proxy_addresses`
//! (counted `dropped_proxied`), as read from the span:
//!
//! - `server.address` and `server.port` (OpenTelemetry's GenAI conventions:
//!   the official OpenAI instrumentation, OpenLIT); a missing port is the
//!   scheme's default, 443 or 80, as the conventions leave it out then;
//! - else `gen_ai.openai.api_base`, the client's base URL (Traceloop).
//!
//! Hosts compare without regard to case; an address given without a port
//! matches any port of that host.

use opentelemetry_proto::tonic::trace::v1::Span;

use super::attributes::Attributes;

pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const API_BASE: &str = "gen_ai.openai.api_base";

/// One address clients reach a proxy at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    host: String,
    port: Option<u16>,
}

/// The addresses clients reach Tollgate proxies at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyAddresses(Vec<Address>);

/// An entry of `ingest.otlp_proxy_addresses` that is no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ingest.otlp_proxy_addresses: {entry:?} is not host, host:port or a URL ({reason})")]
pub struct InvalidAddress {
    pub entry: String,
    pub reason: String,
}

impl ProxyAddresses {
    /// Read `host`, `host:port`, `[v6]:port` or a URL (`http://proxy:8082/v1`).
    pub fn parse(entries: &[String]) -> Result<Self, InvalidAddress> {
        entries
            .iter()
            .map(|entry| {
                let invalid = |reason: &str| InvalidAddress {
                    entry: entry.clone(),
                    reason: reason.into(),
                };
                let trimmed = entry.trim();
                let url = if trimmed.contains("://") {
                    url::Url::parse(trimmed)
                } else {
                    url::Url::parse(&format!("tollgate://{trimmed}"))
                }
                .map_err(|e| invalid(&e.to_string()))?;
                let host = url.host_str().filter(|h| !h.is_empty());
                let host = host.ok_or_else(|| invalid("no host"))?;
                Ok(Address {
                    host: bare(host),
                    port: url.port_or_known_default(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `span` is of a call made through one of the proxies.
    pub fn reached_by(&self, span: &Span) -> bool {
        if self.0.is_empty() {
            return false;
        }
        match server_of(span) {
            Some((host, port)) => self.0.iter().any(|a| {
                a.host == host
                    && match (a.port, port) {
                        (None, _) => true,
                        (Some(want), Some(got)) => want == got,
                        (Some(want), None) => want == 443 || want == 80,
                    }
            }),
            None => false,
        }
    }
}

/// The server a span's call went to: host (lower case, no brackets) and
/// port when known.
fn server_of(span: &Span) -> Option<(String, Option<u16>)> {
    let attrs = Attributes(&span.attributes);
    if let Ok(Some(host)) = attrs.string(SERVER_ADDRESS) {
        let port = attrs
            .integer(SERVER_PORT)
            .ok()
            .flatten()
            .and_then(|p| u16::try_from(p).ok());
        return Some((bare(host), port));
    }
    let base = attrs.string(API_BASE).ok().flatten()?;
    let url = url::Url::parse(base).ok()?;
    Some((bare(url.host_str()?), url.port_or_known_default()))
}

fn bare(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

    use super::*;

    fn span(attributes: &[(&str, Value)]) -> Span {
        Span {
            attributes: attributes
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: Some(AnyValue {
                        value: Some(v.clone()),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn text(s: &str) -> Value {
        Value::StringValue(s.into())
    }

    fn addresses(entries: &[&str]) -> ProxyAddresses {
        ProxyAddresses::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_span_is_proxied_when_its_server_is_a_proxy() {
        let proxies = addresses(&[
            "127.0.0.1:8082",
            "LLM.internal",
            "https://gw.example.com/v1",
        ]);
        let v2 = span(&[
            (SERVER_ADDRESS, text("127.0.0.1")),
            (SERVER_PORT, Value::IntValue(8082)),
        ]);
        assert!(proxies.reached_by(&v2));
        let other_port = span(&[
            (SERVER_ADDRESS, text("127.0.0.1")),
            (SERVER_PORT, Value::IntValue(8090)),
        ]);
        assert!(!proxies.reached_by(&other_port));
        let any_port = span(&[
            (SERVER_ADDRESS, text("llm.INTERNAL")),
            (SERVER_PORT, Value::IntValue(1)),
        ]);
        assert!(proxies.reached_by(&any_port));
        // The conventions leave out the default port: 443 for the URL given.
        let default_port = span(&[(SERVER_ADDRESS, text("gw.example.com"))]);
        assert!(proxies.reached_by(&default_port));
        let traceloop = span(&[(API_BASE, text("http://127.0.0.1:8082/v1/"))]);
        assert!(proxies.reached_by(&traceloop));
        let upstream = span(&[(API_BASE, text("https://api.openai.com/v1"))]);
        assert!(!proxies.reached_by(&upstream));
        assert!(!proxies.reached_by(&span(&[])));
        assert!(!ProxyAddresses::default().reached_by(&v2));
    }

    #[test]
    fn ipv6_and_bad_entries() {
        let proxies = addresses(&["[::1]:8082"]);
        let v6 = span(&[
            (SERVER_ADDRESS, text("::1")),
            (SERVER_PORT, Value::IntValue(8082)),
        ]);
        assert!(proxies.reached_by(&v6));
        for bad in ["", "http://", "host:notaport", "host:99999"] {
            let err = ProxyAddresses::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.entry, bad);
        }
    }
}
