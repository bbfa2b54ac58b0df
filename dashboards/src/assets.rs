//! Static assets, embedded in the binary so a deployment is one file and the
//! pages work without internet access (no CDN).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// `(file name, content type, body)` of everything under `/static/`.
const ASSETS: [(&str, &str, &str); 6] = [
    (
        "chart.umd.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/chart.umd.js"),
    ),
    (
        "chart.js.LICENSE.md",
        "text/plain; charset=utf-8",
        include_str!("../static/chart.js.LICENSE.md"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../static/dashboard.css"),
    ),
    (
        "finance.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/finance.js"),
    ),
    (
        "local-time.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/local-time.js"),
    ),
    (
        "latency.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/latency.js"),
    ),
];

/// The embedded asset called `name`, if any.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, content_type, body)| (*content_type, *body))
}

pub async fn serve(Path(file): Path<String>) -> Response {
    match asset(&file) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                // Assets change only with the binary; an hour keeps reloads
                // cheap without pinning a stale script for long.
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn chart_js_is_embedded() {
        let (content_type, body) = asset("chart.umd.js").unwrap();
        assert!(content_type.starts_with("text/javascript"));
        assert!(body.contains("Chart.js v4"));
        assert!(asset("../Cargo.toml").is_none());
    }
}
