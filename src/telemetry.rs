//! Logging and tracing of the pipeline itself: `tracing` to stderr, and
//! OpenTelemetry (OTLP/HTTP) export of spans when an endpoint is configured.
//! Exported spans carry the resource attribute `service.name` of the role
//! (`tollgate-proxy`, `tollgate-process`, `tollgate-ingest`, `tollgate-api`)
//! unless `OTEL_SERVICE_NAME` or a `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES` names the service: the environment wins, as
//! it does in every OpenTelemetry SDK.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Key;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::resource::{EnvResourceDetector, Resource, ResourceDetector};
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

/// The resource attribute naming the service (OpenTelemetry semantic
/// conventions).
const SERVICE_NAME: &str = "service.name";

/// Keeps the tracer provider alive; flushes spans on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("opentelemetry shutdown failed: {err}");
            }
        }
    }
}

/// The resource of the spans of `service` (the role's default name): what
/// the SDK's detectors find (`OTEL_RESOURCE_ATTRIBUTES`, the
/// `telemetry.sdk.*` attributes), with `service.name` from
/// `OTEL_SERVICE_NAME`, else from `OTEL_RESOURCE_ATTRIBUTES`, else
/// `service` (the specification's order, with the role in place of
/// `unknown_service`).
pub fn resource(service: &str) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            EnvResourceDetector::new()
                .detect()
                .get(&Key::new(SERVICE_NAME))
                .map(|name| name.to_string())
        });
    Resource::builder()
        .with_service_name(named.unwrap_or_else(|| service.to_string()))
        .build()
}

/// Start logging, and span export when `telemetry.otlp_endpoint` is set,
/// for the process that runs as `service` ([`resource`]); `TOLLGATE_LOG`
/// filters the log, else `default_filter`.
pub fn init(
    config: &TelemetryConfig,
    service: &str,
    default_filter: &str,
) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal: a log file or a pipe gets
    // plain text (a trial found escape codes in `2> key.err`).
    let colours = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()?;
            // Exported from a tokio task: the exporter's HTTP client needs
            // the runtime (the SDK's default processor thread has none, and
            // its exports panicked there, losing every span).
            let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource(service))
                .with_span_processor(processor)
                .build();
            let tracer = provider.tracer("tollgate");
            // The proxy's GenAI spans are made with the OpenTelemetry API
            // directly (`tollgate_proxy::trace`), through the global provider.
            opentelemetry::global::set_tracer_provider(provider.clone());
            registry
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .try_init()?;
            Ok(Telemetry {
                provider: Some(provider),
            })
        }
        None => {
            registry.try_init()?;
            Ok(Telemetry { provider: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_name(resource: &Resource) -> String {
        resource
            .get(&Key::new(SERVICE_NAME))
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// The one test that sets these variables (the others of this binary
    /// never read them); each case restores them.
    #[test]
    fn the_role_names_the_service_unless_the_environment_does() {
        std::env::remove_var("OTEL_SERVICE_NAME");
        std::env::remove_var("OTEL_RESOURCE_ATTRIBUTES");
        let plain = resource("tollgate-proxy");
        assert_eq!(service_name(&plain), "tollgate-proxy");
        assert_eq!(
            plain
                .get(&Key::new("telemetry.sdk.name"))
                .map(|v| v.to_string()),
            Some("opentelemetry".to_string())
        );

        std::env::set_var(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,service.name=edge-proxy",
        );
        let from_attributes = resource("tollgate-proxy");
        assert_eq!(service_name(&from_attributes), "edge-proxy");
        assert_eq!(
            from_attributes
                .get(&Key::new("deployment.environment"))
                .map(|v| v.to_string()),
            Some("prod".to_string())
        );

        std::env::set_var("OTEL_SERVICE_NAME", "gateway");
        assert_eq!(service_name(&resource("tollgate-proxy")), "gateway");

        std::env::remove_var("OTEL_RESOURCE_ATTRIBUTES");
        assert_eq!(service_name(&resource("tollgate-api")), "gateway");
        std::env::set_var("OTEL_SERVICE_NAME", "");
        assert_eq!(service_name(&resource("tollgate-api")), "tollgate-api");
        std::env::remove_var("OTEL_SERVICE_NAME");
    }
}
