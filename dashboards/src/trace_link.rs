//! Links from a call to its trace in the user's tracing backend (Tempo,
//! Jaeger, Honeycomb, …): `api.trace_url`, a URL template in which
//! `{trace_id}` and `{span_id}` are replaced by the call's ids, each
//! percent-encoded (a trace id from another producer may be any text).
//! No template, or a call without a trace id: no link.

use crate::sre_form::percent_encode;

/// The configured template, checked once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceLinks {
    template: Option<String>,
}

/// Why `api.trace_url` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api.trace_url {reason} (got {template:?}; e.g. \"https://tempo.example.com/explore?traceId={{trace_id}}&spanId={{span_id}}\")")]
pub struct InvalidTraceUrl {
    pub template: String,
    pub reason: &'static str,
}

impl TraceLinks {
    /// Check `template` (empty or absent: no links).
    pub fn new(template: Option<&str>) -> Result<Self, InvalidTraceUrl> {
        let Some(template) = template.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        let invalid = |reason| InvalidTraceUrl {
            template: template.to_string(),
            reason,
        };
        if !(template.starts_with("https://") || template.starts_with("http://")) {
            return Err(invalid("must start with http:// or https://"));
        }
        if !template.contains("{trace_id}") {
            return Err(invalid("must contain {trace_id}"));
        }
        if template
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("must not contain spaces or control characters"));
        }
        Ok(Self {
            template: Some(template.to_string()),
        })
    }

    /// The link to the trace `trace_id` (at span `span_id`, possibly
    /// empty), or `None`.
    pub fn link(&self, trace_id: &str, span_id: &str) -> Option<String> {
        let template = self.template.as_deref()?;
        if trace_id.is_empty() {
            return None;
        }
        Some(
            template
                .replace("{trace_id}", &percent_encode(trace_id))
                .replace("{span_id}", &percent_encode(span_id)),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEMPO: &str = "https://tempo.example.com/explore?traceId={trace_id}&spanId={span_id}";

    #[test]
    fn ids_fill_the_template_escaped() {
        let links = TraceLinks::new(Some(TEMPO)).unwrap();
        assert_eq!(
            links
                .link("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
                .as_deref(),
            Some("https://tempo.example.com/explore?traceId=4bf92f3577b34da6a3ce929d0e0e4736&spanId=00f067aa0ba902b7")
        );
        // Another producer's trace id cannot break out of its parameter.
        assert_eq!(
            links.link("run 7/a&b=\"<x>\"", "").as_deref(),
            Some(
                "https://tempo.example.com/explore?traceId=run%207%2Fa%26b%3D%22%3Cx%3E%22&spanId="
            )
        );
    }

    #[test]
    fn no_template_or_no_trace_id_means_no_link() {
        assert_eq!(TraceLinks::new(None).unwrap().link("abc", "def"), None);
        assert_eq!(TraceLinks::new(Some("  ")).unwrap().link("abc", ""), None);
        assert_eq!(TraceLinks::new(Some(TEMPO)).unwrap().link("", "def"), None);
    }

    #[test]
    fn bad_templates_are_named() {
        for (template, reason) in [
            (
                "javascript:alert({trace_id})",
                "must start with http:// or https://",
            ),
            (
                "https://tempo.example.com/explore",
                "must contain {trace_id}",
            ),
            (
                "https://t.example.com/{trace_id} x",
                "must not contain spaces or control characters",
            ),
        ] {
            let err = TraceLinks::new(Some(template)).unwrap_err();
            assert_eq!(err.reason, reason);
            assert!(err.to_string().starts_with("api.trace_url "), "{err}");
        }
    }
}
