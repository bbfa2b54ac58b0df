//! Logging and tracing of the pipeline itself: `tracing` to stderr, and
//! OpenTelemetry (OTLP/HTTP) export of spans when an endpoint is configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

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

pub fn init(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
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
