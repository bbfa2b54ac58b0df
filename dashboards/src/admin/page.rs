//! What the admin pages share: the message page,
//! the field-by-field error of a refused form, and CSV downloads (a
//! stored table's from its own URL; a table that exists only in one
//! answer, such as an import's outcome, as a `data:` link in that page).

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_queries::Table;

use crate::layout::{render, Section};

/// What every admin page's head shows: who is signed in, and the
/// session's form token for its forms (the sub-navigation is
/// [`crate::nav`]'s).
pub struct Head {
    /// `?org=<org>` when the request is pinned to an org, else empty: the
    /// page's links to other admin pages keep it.
    pub org_query: String,
    pub who: String,
    pub csrf: String,
}

/// `page`, or the page that says why there is none.
pub fn respond<T: Template>(page: Result<T, Response>) -> Response {
    match page {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// The CSV of `table` as `filename`, or the page that says why there is
/// none.
pub fn respond_csv(table: Result<Table, Response>, filename: &str) -> Response {
    match table {
        Ok(table) => csv_download(&table, filename),
        Err(response) => response,
    }
}

#[derive(Template)]
#[template(path = "admin_message.html")]
struct MessagePage {
    section: Section,
    title: &'static str,
    message: String,
}

/// A page with one message (errors and refusals).
pub fn message(status: StatusCode, title: &'static str, message: String) -> Response {
    render(
        status,
        &MessagePage {
            section: Section::Admin,
            title,
            message,
        },
    )
}

/// The value of form field `name` (the first when given more than once).
pub use crate::alert_access::field;

/// A refused form's problem: the field it names (as the form names it)
/// and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

/// The message of `error` when it names `field` (the template puts it
/// next to that field).
pub fn error_for(error: &Option<FieldError>, field: &str) -> Option<String> {
    error
        .as_ref()
        .filter(|e| e.field == field || e.field.starts_with(&format!("{field}[")))
        .map(|e| e.reason.clone())
}

pub(crate) use crate::finance::csv_data_url;
use crate::finance::csv_download;
