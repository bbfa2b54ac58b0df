//! What the alerting pages (`/sre/alerts/...`) share: the caller (admitted
//! by the sign-in gate, `tollgate-access`: `admin`, `sre` and `finance`
//! read; `admin` and `sre` change), the org the request is pinned to, the
//! message page and the CSV download every table links to.

// A refused request is answered with the page that says why; these helpers
// hand that response back in `Err` (once per request, so its size does not
// matter).
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_access::{Identity, ALERT_WRITERS};
use tollgate_control::alerts::{AlertStore, AlertStoreError};
use tollgate_queries::InvalidParameter;

use crate::layout::{render, Section};
use crate::DashboardState;

/// Where the alerting pages live.
pub struct AlertArea {
    pub path: &'static str,
    pub home: &'static str,
}

pub const AREA: AlertArea = AlertArea {
    path: "/sre/alerts",
    home: "/sre/alerts",
};

/// The signed-in caller of a page (the gate admitted them: a reader of
/// alerting, `tollgate_access::ALERT_READERS`).
pub struct Caller {
    pub identity: Identity,
    /// The form token of this session (empty for API keys).
    pub csrf: String,
}

impl Caller {
    /// `name (role in org, ...)` for the page head.
    pub fn who(&self) -> String {
        self.identity.who()
    }

    /// Whether this caller may change rules and silences here.
    pub fn writes(&self) -> bool {
        self.identity.may(ALERT_WRITERS)
    }

    /// The org this request is pinned to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.identity.scope()
    }

    /// The org a page is filtered to from its `org` parameter (`text`,
    /// empty when absent): a caller pinned to an org sees only it (another
    /// is refused, naming `org`); an unpinned caller sees every org unless
    /// one is given.
    pub fn org_filter(&self, text: &str) -> Result<Option<String>, InvalidParameter> {
        match (self.scope(), text) {
            (Some(scope), "") => Ok(Some(scope.to_string())),
            (Some(scope), org) if org != scope => {
                Err(InvalidParameter::new("org", format!("no org {org}")))
            }
            (_, "") => Ok(None),
            (_, org) => Ok(Some(org.to_string())),
        }
    }

    /// Refuse a change unless the role may make it.
    pub fn may_write(&self, doing: &str) -> Result<(), Response> {
        if self.writes() {
            Ok(())
        } else {
            Err(message(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("{} may not {doing} (admin or sre may)", self.who()),
            ))
        }
    }

    /// Refuse a change in an org where the caller may not change
    /// alerting (404, as the API: another org's is as if it did not exist).
    pub fn check_org(&self, org: &str) -> Result<(), Response> {
        if self.identity.sees(ALERT_WRITERS, org) {
            Ok(())
        } else {
            Err(message(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no org {org}"),
            ))
        }
    }
}

/// The caller of an alerting page (the gate checked who they are and
/// their role; `_next` is kept for the call sites' symmetry).
pub async fn signed_in(
    _state: &DashboardState,
    identity: &Identity,
    _next: &str,
) -> Result<Caller, Response> {
    Ok(Caller {
        identity: identity.clone(),
        csrf: identity.csrf.clone().unwrap_or_default(),
    })
}

/// A form post: the gate already refused one without this session's form
/// token (403, before anything was read or changed).
pub async fn signed_in_form(
    state: &DashboardState,
    identity: &Identity,
    _token: Option<&str>,
) -> Result<Caller, Response> {
    signed_in(state, identity, AREA.home).await
}

/// A change from a form: a role that may make it (`doing` names it in the
/// refusal), and the store.
pub async fn signed_in_writer<'a>(
    state: &'a DashboardState,
    identity: &Identity,
    token: Option<&str>,
    doing: &str,
) -> Result<(Caller, &'a AlertStore), Response> {
    let caller = signed_in_form(state, identity, token).await?;
    caller.may_write(doing)?;
    Ok((caller, store(state)?))
}

/// The alerting store, or a 503 page.
pub fn store(state: &DashboardState) -> Result<&AlertStore, Response> {
    state.alerts.as_ref().ok_or_else(|| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "alerting needs PostgreSQL; this server runs without it".into(),
        )
    })
}

/// A store error as a page: 404, 409 or 503 as the API answers them.
pub fn store_failed(err: AlertStoreError) -> Response {
    let status = match err {
        AlertStoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        AlertStoreError::Conflict { .. }
        | AlertStoreError::NameTaken { .. }
        | AlertStoreError::InUse { .. }
        | AlertStoreError::AlreadyExpired { .. } => StatusCode::CONFLICT,
        AlertStoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        AlertStoreError::Postgres(_)
        | AlertStoreError::Control(_)
        | AlertStoreError::Corrupt { .. } => {
            tracing::error!(%err, "alerting page cannot read the store");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Cannot do that",
    };
    message(status, title, err.to_string())
}

#[derive(Template)]
#[template(path = "sre_alerts_message.html")]
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
            section: Section::Sre,
            title,
            message,
        },
    )
}

/// A query string or form the pages cannot read: 400, naming the field.
pub fn bad_request(err: InvalidParameter) -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "Bad request",
        format!("invalid parameter `{}`: {}", err.field, err.reason),
    )
}

/// The caller (as [`signed_in`]) and the alerting store.
pub async fn signed_in_store<'a>(
    state: &'a DashboardState,
    identity: &Identity,
    next: &str,
) -> Result<(Caller, &'a AlertStore), Response> {
    let caller = signed_in(state, identity, next).await?;
    Ok((caller, store(state)?))
}

/// The value of the form field `name`, if given once or more (the first).
pub fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
