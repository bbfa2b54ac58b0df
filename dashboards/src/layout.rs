//! The shared page layout (`templates/base.html`: top bar and the SRE /
//! Finance / Compliance navigation) and the placeholder pages for sections
//! that are not built yet.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Top-level sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Sre,
    Finance,
    Compliance,
}

impl Section {
    /// Used by `base.html` to mark the active tab.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sre => "sre",
            Self::Finance => "finance",
            Self::Compliance => "compliance",
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

/// The sign-in form of an area of pages behind an API key
/// (`session::Area`).
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub section: Section,
    /// The area's name, above the title.
    pub crumb: &'static str,
    /// The roles that may sign in, as prose.
    pub roles: &'static str,
    /// How to create such a key.
    pub create: &'static str,
    /// Where the form posts.
    pub action: String,
    pub message: String,
    pub next: String,
}
