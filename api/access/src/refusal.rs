//! Why a request may not go on, and how that is answered: JSON for the
//! API (`{"error": …}`), for pages a redirect to the sign-in page (401) or
//! a short page that says why.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401: no identity, or not a valid one.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a role that may not do this, or a change without the
    /// session's form token.
    #[error("{0}")]
    Forbidden(String),
    /// 404: another org's, or nothing there.
    #[error("{0}")]
    NotFound(String),
    /// 400: a query parameter the gate reads is unusable (`org` twice).
    #[error("invalid parameter `{parameter}`: {reason}")]
    InvalidParameter { parameter: String, reason: String },
    /// 503: the account or key store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a route served without the gate.
    #[error("{0}")]
    Misconfigured(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer for a request to `path_and_query` (API paths get JSON).
    pub fn respond(self, path_and_query: &str, browser_get: bool) -> Response {
        let path = path_and_query.split('?').next().unwrap_or_default();
        if is_api(path) {
            return self.into_response();
        }
        match self {
            Self::Unauthenticated(_) if browser_get => {
                Redirect::to(&sign_in_url(path_and_query)).into_response()
            }
            refusal => refusal.page(),
        }
    }

    /// A short page saying why (pages' refusals without the layout: the
    /// gate does not know the pages' templates).
    pub fn page(self) -> Response {
        let status = self.status();
        let title = match self {
            Self::Unauthenticated(_) => "Sign in needed",
            Self::Forbidden(_) => "Not allowed",
            Self::NotFound(_) => "Not found",
            Self::InvalidParameter { .. } => "Invalid request",
            Self::Unavailable(_) | Self::Misconfigured(_) => "Unavailable",
        };
        let sign_in = if status == StatusCode::UNAUTHORIZED {
            r#"<p><a href="/login">Sign in</a></p>"#
        } else {
            r#"<p><a href="/">Back to the overview</a></p>"#
        };
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · Tollgate</title>\
             <link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head><body><main>\
             <h1>{title}</h1><p class=\"refusal\">{}</p>{sign_in}</main></body></html>",
            escape(&self.to_string())
        );
        (status, Html(body)).into_response()
    }
}

/// The JSON answer: `{"error": "..."}` with the status.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({ "error": self.to_string() });
        // As the API's own 400s name theirs.
        if let Self::InvalidParameter { parameter, .. } = &self {
            body["parameter"] = parameter.as_str().into();
        }
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tollgate\""),
            );
        }
        response
    }
}

/// Paths answered in JSON.
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/healthz" || path == "/readyz"
}

/// The sign-in page, coming back to `path_and_query` afterwards.
pub fn sign_in_url(path_and_query: &str) -> String {
    let next: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    format!("/login?next={next}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
