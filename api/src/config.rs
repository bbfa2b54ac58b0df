//! Settings owned by the API crate.

use serde::{Deserialize, Serialize};

/// The report API and dashboard server (`tollgate api`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: String,
    /// Link from a call on the SRE pages to its trace in the user's
    /// tracing backend: a URL with `{trace_id}` and `{span_id}`, e.g.
    /// `https://tempo.example.com/explore?traceId={trace_id}&spanId={span_id}`.
    /// Unset: no trace links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            trace_url: None,
        }
    }
}
