//! The pipeline's own `/metrics` (`docs/metrics.md`): one Prometheus
//! registry per process, prefixed `tollgate_`, into which each crate
//! registers the metrics it owns and updates (`tollgate_ingest::metrics`,
//! `tollgate_proxy::metrics`, `tollgate_processors::metrics`,
//! `tollgate_alerting::metrics`), plus the
//! request metrics this module measures for every HTTP role alike
//! ([`http`]). It is served in the Prometheus text format (0.0.4) on the
//! role's own port (`ingest`, `api`, `proxy`) or on a listener of its own
//! (`process`, `alerts evaluate`: [`listener`]).
//!
//! The crate is `prometheus-client`, the Prometheus project's own Rust
//! client (see docs/metrics.md, "Why prometheus-client").

pub mod http;
pub mod listener;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use self::http::HttpMetrics;

/// A process's registry while the roles' metrics are registered.
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// The registry of one role (`ingest`, `process`, `api`, `proxy`,
    /// `alerts`), with `tollgate_build_info{role, version}`.
    pub fn new(role: &str) -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        registry.register(
            "build",
            "The running tollgate: its role and version",
            Info::new(vec![
                ("role", role.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        Self { registry }
    }

    /// Where a crate registers its metrics: names get `tollgate_<prefix>_`.
    pub fn section(&mut self, prefix: &str) -> &mut Registry {
        self.registry.sub_registry_with_prefix(prefix)
    }

    /// The request metrics of an HTTP role (`tollgate_http_*`).
    pub fn http(&mut self) -> HttpMetrics {
        HttpMetrics::register(self.section("http"))
    }

    /// Nothing more is registered: the exposition that serves it.
    pub fn into_exposition(self) -> Exposition {
        Exposition {
            registry: Arc::new(self.registry),
        }
    }
}

/// The text `GET /metrics` answers.
#[derive(Clone)]
pub struct Exposition {
    registry: Arc<Registry>,
}

impl Exposition {
    pub fn text(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_text::encode(&mut text, &self.registry) {
            // Only a failing `fmt::Write`, which a `String` never is.
            tracing::error!(%err, "cannot encode the metrics");
        }
        text
    }

    /// The `GET /metrics` handler.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let exposition = self.clone();
        get(move || {
            let text = exposition.text();
            async move {
                (
                    [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
                    text,
                )
                    .into_response()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_says_what_it_is() {
        let text = MetricsRegistry::new("ingest").into_exposition().text();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.lines()
                .any(|l| l
                    == format!("tollgate_build_info{{role=\"ingest\",version=\"{version}\"}} 1")),
            "{text}"
        );
    }
}
