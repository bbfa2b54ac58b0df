//! Signing in and out (docs/sign-in.md): `/login` (email and password;
//! single sign-on when configured), `/logout`, and accepting an invitation
//! (`/invitations/{token}`). A successful sign-in starts a session whose
//! token lives only in the `tollgate_session` cookie (HttpOnly,
//! SameSite=Lax, Secure unless `[auth] secure_cookies = false`); the gate
//! (`tollgate-access`) reads it on every request. The two forms posted
//! before there is a session carry a pre-session token ([`LoginToken`]);
//! a post without it, or with another, is a 403 naming why.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use tollgate_access::{Identity, SESSION_COOKIE};
use tollgate_control::accounts::{AccountStore, SessionStore, SignIn};

use crate::layout::{render, Section};
use crate::login_token::LoginToken;
use crate::DashboardState;

/// Where a sign-in goes without a (safe) `next`.
pub const HOME: &str = "/";

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    section: Section,
    message: String,
    email: String,
    next: String,
    next_encoded: String,
    sso: bool,
    /// The pre-session form token.
    csrf: String,
}

#[derive(Template)]
#[template(path = "sign_out.html")]
struct SignOutPage {
    section: Section,
    csrf: String,
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    section: Section,
    message: String,
    open: bool,
    email: String,
    grant: String,
    token: String,
    /// The address has an account: the form asks for its current password
    /// (it is not changed) instead of a new one.
    existing: bool,
    /// The pre-session form token.
    csrf: String,
}

/// Only local paths, so a sign-in cannot send anyone to another site;
/// and none with control characters, which no `Location` header can carry.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => HOME.to_string(),
    }
}

/// The `Set-Cookie` value holding a session's token.
pub fn session_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

fn clear_cookie(secure: bool) -> String {
    session_cookie("", 0, secure)
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// Whether cookies are marked `Secure` (`[auth] secure_cookies`; yes
/// when the server runs without sessions).
fn secure_cookies(state: &DashboardState) -> bool {
    state
        .sessions
        .as_ref()
        .is_none_or(|s| s.policy().secure_cookies)
}

/// A page holding a pre-session form: `render` gets the browser's token
/// (set in its cookie with the answer).
fn with_login_token(
    state: &DashboardState,
    headers: &HeaderMap,
    render: impl FnOnce(String) -> Response,
) -> Response {
    match LoginToken::for_browser(headers) {
        Ok(token) => (
            [(header::SET_COOKIE, token.cookie(secure_cookies(state)))],
            render(token.value().to_string()),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "cannot make a sign-in form token");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("sign-in is unavailable: {err}\n"),
            )
                .into_response()
        }
    }
}

fn page(
    status: StatusCode,
    state: &DashboardState,
    headers: &HeaderMap,
    message: &str,
    email: &str,
    next: &str,
) -> Response {
    with_login_token(state, headers, |csrf| {
        render(
            status,
            &SignInPage {
                section: Section::Account,
                message: message.to_string(),
                email: email.to_string(),
                next: next.to_string(),
                next_encoded: form_urlencoded::byte_serialize(next.as_bytes()).collect(),
                sso: state.sso,
                csrf,
            },
        )
    })
}

fn stores(state: &DashboardState) -> Option<(&AccountStore, &SessionStore)> {
    Some((state.accounts.as_ref()?, state.sessions.as_ref()?))
}

fn unavailable(state: &DashboardState, headers: &HeaderMap, next: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        state,
        headers,
        "sign-in is unavailable: PostgreSQL was unreachable when the server started",
        "",
        next,
    )
}

/// `GET /login?next=`
pub async fn sign_in_page(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let next = safe_next(Some(field(&pairs, "next")).filter(|n| !n.is_empty()));
    page(StatusCode::OK, &state, &headers, "", "", &next)
}

/// `POST /login`: email, password, next and the pre-session `csrf`.
pub async fn sign_in_submit(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let next = safe_next(Some(field(&pairs, "next")).filter(|n| !n.is_empty()));
    let email = field(&pairs, "email");
    if let Err(refused) = LoginToken::check(&headers, &pairs) {
        tracing::info!(email, %refused, "sign-in form refused");
        return page(
            StatusCode::FORBIDDEN,
            &state,
            &headers,
            &refused.to_string(),
            email,
            &next,
        );
    }
    let Some((accounts, sessions)) = stores(&state) else {
        return unavailable(&state, &headers, &next);
    };
    let outcome = match accounts.sign_in(email, field(&pairs, "password")).await {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::error!(%err, "sign-in failed");
            return unavailable(&state, &headers, &next);
        }
    };
    let user = match outcome {
        SignIn::Ok(user) => user,
        SignIn::Refused => {
            tracing::info!(email, "sign-in refused");
            return page(
                StatusCode::UNAUTHORIZED,
                &state,
                &headers,
                "wrong email or password",
                email,
                &next,
            );
        }
        SignIn::Locked(until) => {
            return page(
                StatusCode::TOO_MANY_REQUESTS,
                &state,
                &headers,
                &format!(
                    "too many failed attempts: this account is locked until {} UTC",
                    until.format("%Y-%m-%d %H:%M:%S")
                ),
                email,
                &next,
            )
        }
        SignIn::Disabled => {
            return page(
                StatusCode::FORBIDDEN,
                &state,
                &headers,
                "this account is disabled: ask an admin",
                email,
                &next,
            )
        }
    };
    start_session(sessions, user.id, &next).await
}

/// Start a session for `user_id` and go to `next` with its cookie set.
pub async fn start_session(sessions: &SessionStore, user_id: uuid::Uuid, next: &str) -> Response {
    match sessions.start(user_id).await {
        Ok(session) => {
            let policy = sessions.policy();
            (
                [(
                    header::SET_COOKIE,
                    session_cookie(
                        &session.token,
                        policy.session_ttl_secs,
                        policy.secure_cookies,
                    ),
                )],
                Redirect::to(next),
            )
                .into_response()
        }
        Err(err) => {
            tracing::error!(%err, "cannot start a session");
            (StatusCode::SERVICE_UNAVAILABLE, "cannot start a session").into_response()
        }
    }
}

/// `GET /logout`: a button (signing out changes state, so it is a POST
/// with the form token).
pub async fn sign_out_page(identity: Identity) -> Response {
    render(
        StatusCode::OK,
        &SignOutPage {
            section: Section::Account,
            csrf: identity.csrf.unwrap_or_default(),
        },
    )
}

/// `POST /logout`: ends the session (the gate checked the form token).
pub async fn sign_out(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    let secure = secure_cookies(&state);
    if let (Some(sessions), Some(token)) = (
        state.sessions.as_ref(),
        tollgate_access::gate::cookie(&headers, SESSION_COOKIE),
    ) {
        if let Err(err) = sessions.end(&token).await {
            tracing::error!(%err, "cannot end a session");
        }
    }
    (
        [(header::SET_COOKIE, clear_cookie(secure))],
        Redirect::to("/login"),
    )
        .into_response()
}

/// `GET /invitations/{token}`
pub async fn invitation_page(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    invitation_view(&state, &headers, &token, StatusCode::OK, "").await
}

/// The invitation's form with `message` (answered with `status`), or a
/// 404 for an unknown, used or expired one.
async fn invitation_view(
    state: &DashboardState,
    headers: &HeaderMap,
    token: &str,
    status: StatusCode,
    message: &str,
) -> Response {
    let Some((accounts, _)) = stores(state) else {
        return unavailable(state, headers, HOME);
    };
    match accounts.invitation(token).await {
        Ok(Some(invitation)) => {
            let existing = match accounts.has_account(&invitation.email).await {
                Ok(existing) => existing,
                Err(err) => {
                    tracing::error!(%err, "cannot read an account");
                    return unavailable(state, headers, HOME);
                }
            };
            invitation_form(
                state,
                headers,
                status,
                message,
                &invitation.email,
                &invitation.grant.describe(),
                token,
                existing,
            )
        }
        Ok(None) => invitation_form(
            state,
            headers,
            StatusCode::NOT_FOUND,
            "this invitation is unknown, used or expired: ask an admin for a new one",
            "",
            "",
            "",
            false,
        ),
        Err(err) => {
            tracing::error!(%err, "cannot read an invitation");
            unavailable(state, headers, HOME)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn invitation_form(
    state: &DashboardState,
    headers: &HeaderMap,
    status: StatusCode,
    message: &str,
    email: &str,
    grant: &str,
    token: &str,
    existing: bool,
) -> Response {
    with_login_token(state, headers, |csrf| {
        render(
            status,
            &InvitationPage {
                section: Section::Account,
                message: message.to_string(),
                open: !email.is_empty(),
                email: email.to_string(),
                grant: grant.to_string(),
                token: token.to_string(),
                existing,
                csrf,
            },
        )
    })
}

/// `POST /invitations/{token}`: display_name, password and the
/// pre-session `csrf`.
pub async fn accept_invitation(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = LoginToken::check(&headers, &pairs) {
        tracing::info!(%refused, "invitation form refused");
        let message = refused
            .to_string()
            .replace("sign-in form", "invitation form");
        return invitation_view(&state, &headers, &token, StatusCode::FORBIDDEN, &message).await;
    }
    let Some((accounts, sessions)) = stores(&state) else {
        return unavailable(&state, &headers, HOME);
    };
    match accounts
        .accept_invitation(
            &token,
            field(&pairs, "display_name"),
            field(&pairs, "password"),
        )
        .await
    {
        Ok(Some(user)) => start_session(sessions, user.id, HOME).await,
        Ok(None) => invitation_view(&state, &headers, &token, StatusCode::OK, "").await,
        Err(tollgate_control::ControlError::InvalidInput { field, reason }) => {
            let status = StatusCode::BAD_REQUEST;
            let message = format!("{field}: {reason}");
            invitation_view(&state, &headers, &token, status, &message).await
        }
        Err(err) => {
            tracing::error!(%err, "cannot accept an invitation");
            unavailable(&state, &headers, HOME)
        }
    }
}

/// `GET /`: the overview, with the same query (`/?org=acme`).
pub async fn home(uri: axum::http::Uri) -> Redirect {
    crate::nav::to_home("/overview", uri).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_goes_back_only_to_local_paths() {
        assert_eq!(
            safe_next(Some("/finance/cost?org=a")),
            "/finance/cost?org=a"
        );
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil"),
            Some("/\\evil"),
            Some("/a\r\nSet-Cookie: x=1"),
        ] {
            assert_eq!(safe_next(bad), HOME);
        }
    }

    #[test]
    fn session_cookies_are_http_only_and_lax() {
        let cookie = session_cookie("tok", 60, true);
        assert_eq!(
            cookie,
            "tollgate_session=tok; HttpOnly; SameSite=Lax; Path=/; Max-Age=60; Secure"
        );
        assert!(!session_cookie("tok", 60, false).contains("Secure"));
    }
}
