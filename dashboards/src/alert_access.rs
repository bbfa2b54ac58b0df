//! Who may use the alerting pages (`/sre/alerts/...`) and what they share:
//! the sign-in area (`session::Area`: the key in an HttpOnly cookie scoped
//! to `/sre/alerts`), the role check (the API's rule, `admin`, `sre` and
//! `finance` read; `admin` and `sre` change), the org a scoped key is
//! pinned to, the CSRF check of every form, the message page and the CSV
//! download every table links to.

// A refused request is answered with the page that says why; these helpers
// hand that response back in `Err` (once per request, so its size does not
// matter).
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use tollgate_control::alerts::{AlertStore, AlertStoreError, READ_ROLES, WRITE_ROLES};
use tollgate_control::keys::ApiKey;
use tollgate_queries::access::{authenticate, may, Denied};
use tollgate_queries::InvalidParameter;

use crate::layout::{render, LoginPage, Section};
use crate::session::{csrf_ok, csrf_token, secret, Area, LoginParams};
use crate::sre_form::{sre_nav, NavLink};
use crate::DashboardState;

/// The alerting pages' sign-in area.
pub const AREA: Area = Area {
    path: "/sre/alerts",
    home: "/sre/alerts",
};

/// The signed-in caller of a page.
pub struct Caller {
    pub key: ApiKey,
    /// The form token of this session (`session::csrf_token`).
    pub csrf: String,
}

impl Caller {
    /// `name (role, org X)` for the page head.
    pub fn who(&self) -> String {
        match &self.key.org_id {
            Some(org) => format!("{} ({}, org {org})", self.key.name, self.key.role),
            None => format!("{} ({}, all orgs)", self.key.name, self.key.role),
        }
    }

    /// Whether this key may change rules and silences.
    pub fn writes(&self) -> bool {
        WRITE_ROLES.contains(&self.key.role.as_str())
    }

    /// The org the key is pinned to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.key.org_id.as_deref()
    }

    /// Refuse a change unless the role may make it.
    pub fn may_write(&self, doing: &str) -> Result<(), Response> {
        may(&self.key, &WRITE_ROLES, doing).map_err(|why| denied(why, AREA.home))
    }

    /// Refuse an org a scoped key does not see (404, as the API).
    pub fn check_org(&self, org: &str) -> Result<(), Response> {
        match self.scope() {
            Some(scope) if scope != org => Err(message(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no org {org}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The caller if signed in with a key that may read alerting; otherwise
/// the login form (401), a 403 or a 503 page.
pub async fn signed_in(
    state: &DashboardState,
    headers: &HeaderMap,
    next: &str,
) -> Result<Caller, Response> {
    let secret = secret(headers);
    let key = authenticate(
        state.keys.as_ref(),
        secret.as_deref(),
        &READ_ROLES,
        "read alerting",
    )
    .await
    .map_err(|why| denied(why, next))?;
    Ok(Caller {
        key,
        csrf: secret.as_deref().map(csrf_token).unwrap_or_default(),
    })
}

/// A form post: signed in, and carrying this session's CSRF token
/// (403 otherwise, before anything is read or changed).
pub async fn signed_in_form(
    state: &DashboardState,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Caller, Response> {
    let caller = signed_in(state, headers, AREA.home).await?;
    if !csrf_ok(headers, token) {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "the form's token does not belong to this session: reload the page and try again"
                .into(),
        ));
    }
    Ok(caller)
}

/// A change from a form: signed in with the session's token, a role that
/// may make it (`doing` names it in the refusal), and the store.
pub async fn signed_in_writer<'a>(
    state: &'a DashboardState,
    headers: &HeaderMap,
    token: Option<&str>,
    doing: &str,
) -> Result<(Caller, &'a AlertStore), Response> {
    let caller = signed_in_form(state, headers, token).await?;
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
        AlertStoreError::Postgres(_) | AlertStoreError::Corrupt { .. } => {
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
    nav: Vec<NavLink>,
    title: &'static str,
    message: String,
}

/// A page with one message (errors and refusals).
pub fn message(status: StatusCode, title: &'static str, message: String) -> Response {
    render(
        status,
        &MessagePage {
            section: Section::Sre,
            nav: sre_nav(AREA.path),
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
    headers: &HeaderMap,
    next: &str,
) -> Result<(Caller, &'a AlertStore), Response> {
    let caller = signed_in(state, headers, next).await?;
    Ok((caller, store(state)?))
}

fn login_form(status: StatusCode, text: &str, next: &str) -> Response {
    render(
        status,
        &LoginPage {
            section: Section::Sre,
            crumb: "SRE · Alerts",
            roles: "sre, admin or finance (finance reads only)",
            create: "tollgate keys create --role sre [--org ORG]",
            action: AREA.login(),
            message: text.to_string(),
            next: next.to_string(),
        },
    )
}

fn denied(why: Denied, next: &str) -> Response {
    match why {
        Denied::Unauthenticated(text) => login_form(StatusCode::UNAUTHORIZED, &text, next),
        Denied::Forbidden(text) => message(StatusCode::FORBIDDEN, "Not allowed", text),
        Denied::NotFound(text) => message(StatusCode::NOT_FOUND, "Not found", text),
        Denied::Unavailable(text) => message(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", text),
    }
}

async fn set_key(state: &DashboardState, key: &str, next: &str) -> Response {
    match authenticate(state.keys.as_ref(), Some(key), &READ_ROLES, "read alerting").await {
        Ok(_) => ([(header::SET_COOKIE, AREA.cookie(key))], Redirect::to(next)).into_response(),
        Err(why) => denied(why, next),
    }
}

/// `GET /sre/alerts/login`: the form; with `?key=` (for scripted
/// browsers) it signs in at once.
pub async fn login_page(
    State(state): State<DashboardState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let params = match LoginParams::parse(&pairs) {
        Ok(params) => params,
        Err(err) => return bad_request(err),
    };
    let next = AREA.safe_next(params.next.as_deref());
    match params.key.as_deref().filter(|k| !k.trim().is_empty()) {
        Some(key) => set_key(&state, key, &next).await,
        None => login_form(StatusCode::OK, "", &next),
    }
}

/// `POST /sre/alerts/login`.
pub async fn login_submit(
    State(state): State<DashboardState>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let params = match LoginParams::parse(&pairs) {
        Ok(params) => params,
        Err(err) => return bad_request(err),
    };
    let next = AREA.safe_next(params.next.as_deref());
    set_key(&state, params.key.as_deref().unwrap_or(""), &next).await
}

/// `GET /sre/alerts/logout`.
pub async fn logout() -> Response {
    (
        [(header::SET_COOKIE, AREA.clear_cookie())],
        Redirect::to(&AREA.login()),
    )
        .into_response()
}

/// The value of the form field `name`, if given once or more (the first).
pub fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
