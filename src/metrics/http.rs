//! Request rates and durations of the HTTP roles (`ingest`, `api`,
//! `proxy`), measured the same way for all three by a middleware the binary
//! puts around each role's router: `tollgate_http_requests_total` and
//! `tollgate_http_request_duration_seconds`, by route, method and status
//! class.
//!
//! The route is the router's pattern (`/api/v1/alerts/rules/{id}`), not
//! the path asked for, and an unknown path is `unmatched`, so a client
//! cannot grow the exposition. The duration ends when the response's head
//! is ready: for a streamed answer (the proxy's SSE) that is the time to
//! the first byte, not the whole stream.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: &'static str,
    pub status_class: &'static str,
}

/// 1 ms to 60 s: a report query, a batch of events, a proxied call's head.
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    /// Register both metrics in `registry` (prefixed `tollgate_http`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        };
        registry.register(
            "requests",
            "HTTP requests answered, by route pattern, method and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "From a request's arrival to its response head, by route pattern, method and status class",
            metrics.duration.clone(),
        );
        metrics
    }

    /// `router` with every request measured (routes added later are not).
    pub fn measure<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.layer(from_fn_with_state(self.clone(), record))
    }

    fn observe(&self, route: String, method: &Method, status: StatusCode, seconds: f64) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status_class: status_class(status),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }
}

async fn record(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| UNMATCHED.to_string());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(
        route,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The standard methods by name; anything else is `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use prometheus_client::encoding::prometheus_text::encode;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern_method_and_status_class() {
        let mut registry = Registry::with_prefix("tollgate");
        let metrics = HttpMetrics::register(registry.sub_registry_with_prefix("http"));
        let app = metrics.measure(
            Router::new()
                .route("/v1/items/{id}", get(|| async { "ok" }))
                .route(
                    "/v1/events",
                    post(|| async { (StatusCode::BAD_REQUEST, "no") }),
                ),
        );
        for (method, path) in [
            ("GET", "/v1/items/1"),
            ("GET", "/v1/items/2"),
            ("POST", "/v1/events"),
            ("GET", "/nowhere/7"),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE tollgate_http_requests_total counter",
            "tollgate_http_requests_total{route=\"/v1/items/{id}\",method=\"GET\",status_class=\"2xx\"} 2",
            "tollgate_http_requests_total{route=\"/v1/events\",method=\"POST\",status_class=\"4xx\"} 1",
            "tollgate_http_requests_total{route=\"unmatched\",method=\"GET\",status_class=\"4xx\"} 1",
            "# TYPE tollgate_http_request_duration_seconds histogram",
            "tollgate_http_request_duration_seconds_count{route=\"/v1/items/{id}\",method=\"GET\",status_class=\"2xx\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::BAD_GATEWAY), "5xx");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
