//! Single sign-on with OpenID Connect (docs/sign-in-sso.md): the
//! authorization code flow with PKCE, through the `openidconnect` crate.
//!
//! - `GET /auth/oidc/start?next=<local path>` remembers a new login in
//!   PostgreSQL (`tollgate_control::sso_logins`: PKCE verifier, nonce,
//!   `next`, an expiry) under its `state`, binds the state to the browser
//!   ([`binding`]: a cookie) and redirects to the provider.
//! - `GET /auth/oidc/callback?code&state` checks the state is the one this
//!   browser started, takes that login (once), exchanges
//!   the code, verifies the ID token, maps the roles claim to grants
//!   ([`role_claim`]), records the person ([`AccountStore::upsert_sso_user`]:
//!   their grants become the mapped ones), starts a session, sets its
//!   cookie and redirects to `next`.
//!
//! Every refusal is a page naming the reason: 400 for a sign-in that cannot
//! continue (unknown, expired or replayed state, the provider's error, a
//! token that fails verification), 403 for a person the provider vouches
//! for but who gets no grant here, 502 when the provider is unreachable.

pub mod binding;
pub mod config;
pub mod provider;
pub mod role_claim;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Deserialize;
use tollgate_access::{Access, Routes};
use tollgate_control::accounts::{AccountStore, SessionStore};
use tollgate_control::sso_logins::{PendingSsoLogin, SsoLoginError, SsoLoginStore};

use crate::layout::{render, Section};
use crate::sign_in::{safe_next, start_session};
use provider::{Provider, ProviderError};
use role_claim::RoleClaim;

/// What the sign-in routes need.
#[derive(Clone)]
pub struct SingleSignOn {
    pub provider: Provider,
    pub logins: SsoLoginStore,
    pub accounts: AccountStore,
    pub sessions: SessionStore,
}

/// `/auth/oidc/start` and `/auth/oidc/callback`, open to anyone (they
/// are how one signs in); without `[auth.oidc]` they answer 404, so the
/// route table is the same whether or not it is configured.
pub fn routes(sso: Option<SingleSignOn>) -> Routes {
    Routes::new()
        .route("/auth/oidc/start", Access::public(), get(start))
        .route(config::CALLBACK_PATH, Access::public(), get(callback))
        .with_state(sso)
}

#[derive(Debug, Deserialize)]
pub struct StartParams {
    next: Option<String>,
}

async fn start(
    State(sso): State<Option<SingleSignOn>>,
    Query(params): Query<StartParams>,
) -> Response {
    let Some(sso) = sso else {
        return not_configured();
    };
    let authorization = match sso.provider.authorize().await {
        Ok(a) => a,
        Err(err) => return provider_failed(err),
    };
    let login = PendingSsoLogin {
        pkce_verifier: authorization.pkce_verifier,
        nonce: authorization.nonce,
        next: safe_next(params.next.as_deref()),
        expires_at: Utc::now() + sso.provider.settings().login_timeout,
    };
    if let Err(err) = sso.logins.begin(&authorization.state, &login).await {
        tracing::error!(%err, "cannot record a single sign-on login");
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "the sign-in could not be recorded (PostgreSQL); try again later".into(),
        );
    }
    let bound = binding::cookie(
        authorization.state.as_str(),
        sso.provider.settings().login_timeout.as_secs().max(1),
        sso.sessions.policy().secure_cookies,
    );
    (
        [(header::SET_COOKIE, bound)],
        Redirect::to(&authorization.url),
    )
        .into_response()
}

/// What the provider sends back (OAuth 2.0 §4.1.2, RFC 9207 `iss`).
#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

async fn callback(
    State(sso): State<Option<SingleSignOn>>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let Some(sso) = sso else {
        return not_configured();
    };
    let Some(state) = params.state.clone().filter(|s| !s.is_empty()) else {
        return refused("the provider's answer has no `state`; start the sign-in again".into());
    };
    // Before the login is taken: another browser's callback neither signs
    // this one in nor spends the login.
    if let Err(err) = binding::check(&headers, &state, sso.sessions.policy().secure_cookies) {
        return refused(err.to_string());
    }
    let mut response = finish(&sso, params, &state).await;
    if let Ok(cleared) = binding::cleared(sso.sessions.policy().secure_cookies).parse() {
        response.headers_mut().append(header::SET_COOKIE, cleared);
    }
    response
}

/// The callback of a sign-in this browser started.
async fn finish(sso: &SingleSignOn, params: CallbackParams, state: &str) -> Response {
    // Taken before anything else, so a callback is used once whatever follows.
    let login = match sso.logins.take(state).await {
        Ok(login) => login,
        Err(err @ SsoLoginError::Postgres { .. }) => {
            tracing::error!(%err, "cannot read a single sign-on login");
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in unavailable",
                "the sign-in could not be read (PostgreSQL); try again later".into(),
            );
        }
        Err(err) => return refused(err.to_string()),
    };
    if let Some(error) = &params.error {
        let detail = params
            .error_description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return refused(format!("the provider refused the sign-in: {error}{detail}"));
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        return refused("the provider's answer has no `code`".into());
    };
    let person = match sso
        .provider
        .finish(
            params.iss.as_deref(),
            code,
            login.pkce_verifier,
            login.nonce,
        )
        .await
    {
        Ok(person) => person,
        Err(err) => return provider_failed(err),
    };
    let Some(email) = person.email.clone().filter(|e| e.contains('@')) else {
        return denied(
            "the provider sent no email address for this account (ask for the `email` scope in `[auth.oidc] scopes`)"
                .into(),
        );
    };
    if person.email_verified == Some(false) {
        return denied(format!(
            "the provider says {email} is not verified; verify it there and sign in again"
        ));
    }
    let settings = sso.provider.settings();
    let claim = &settings.roles;
    let values = RoleClaim::values(person.roles.as_ref());
    let grants = claim.grants(&values);
    if grants.is_empty() {
        let why = if values.is_empty() {
            format!("the provider sent no `{}` claim", claim.name)
        } else {
            format!(
                "the `{}` claim the provider sent ({}) maps to no org and role",
                claim.name,
                values.join(", ")
            )
        };
        return denied(format!(
            "{email} has no role in Tollgate: {why}; ask an administrator to grant one at the provider"
        ));
    }
    let display_name = person.name.clone().unwrap_or_else(|| email.clone());
    let user = match sso
        .accounts
        .upsert_sso_user(
            settings.issuer.as_str(),
            &person.subject,
            &email,
            &display_name,
            &grants,
        )
        .await
    {
        Ok(user) => user,
        Err(err) => {
            tracing::warn!(%err, %email, "single sign-on user not recorded");
            return denied(format!("{email} cannot sign in: {err}"));
        }
    };
    tracing::info!(%email, subject = %person.subject, grants = grants.len(), "signed in with single sign-on");
    start_session(&sso.sessions, user.id, &safe_next(Some(&login.next))).await
}

#[derive(Template)]
#[template(path = "sign_in_sso_error.html")]
struct SignInErrorPage {
    section: Section,
    title: &'static str,
    reason: String,
}

fn failure(status: StatusCode, title: &'static str, reason: String) -> Response {
    render(
        status,
        &SignInErrorPage {
            section: Section::Account,
            title,
            reason,
        },
    )
}

fn not_configured() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "Single sign-on is off",
        "this server has no `[auth.oidc]` provider; sign in with a password".into(),
    )
}

/// A sign-in that cannot continue (400).
fn refused(reason: String) -> Response {
    failure(StatusCode::BAD_REQUEST, "Sign-in failed", reason)
}

/// A person the provider vouches for but who may not use Tollgate (403).
fn denied(reason: String) -> Response {
    failure(StatusCode::FORBIDDEN, "No access", reason)
}

fn provider_failed(err: ProviderError) -> Response {
    match err {
        ProviderError::Refused(reason) => refused(reason),
        err @ ProviderError::Unavailable { .. } => {
            tracing::warn!(%err, "single sign-on provider unavailable");
            failure(
                StatusCode::BAD_GATEWAY,
                "Sign-in unavailable",
                err.to_string(),
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn without_a_provider_both_routes_answer_404_saying_so() {
        for path in [
            "/auth/oidc/start?next=/",
            "/auth/oidc/callback?state=x&code=y",
        ] {
            let response = super::routes(None)
                .into_router()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(
                String::from_utf8_lossy(&body)
                    .contains("this server has no `[auth.oidc]` provider"),
                "{path}"
            );
        }
    }
}
