//! The shared page layout (`templates/base.html`: the top bar, whose
//! navigation [`crate::nav`] fills in for the signed-in caller) and
//! rendering a page.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Top-level sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Sre,
    Finance,
    Compliance,
    Admin,
    /// Sign-in and account pages.
    Account,
}

impl Section {
    /// Used by `base.html` to mark the active tab.
    pub fn name(self) -> &'static str {
        match self {
            Self::Overview => "overview",
            Self::Sre => "sre",
            Self::Finance => "finance",
            Self::Compliance => "compliance",
            Self::Admin => "admin",
            Self::Account => "account",
        }
    }
}

/// Render a page, or a plain 500 if the template fails (it cannot fail for
/// the data we pass, but the error must not be swallowed).
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(err) => {
            tracing::error!(%err, "page rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed").into_response()
        }
    }
}
