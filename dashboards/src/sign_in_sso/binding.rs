//! A sign-in bound to the browser that started it. Without the binding,
//! someone could start a sign-in, stop before the callback, and send the
//! callback's URL to someone else, whose browser would then be signed in
//! to the first person's account (login CSRF, RFC 6749 §10.12): what they
//! then enter lands in that account.
//!
//! `/auth/oidc/start` sets the login's `state` in the `tollgate_sso_state`
//! cookie (HttpOnly, `SameSite=Lax` so that the provider's redirect back,
//! a top-level navigation from another site, carries it; `Path` the
//! callback's; expiring with the login); the callback goes on only when
//! the cookie is there and equal to the `state` it was given. Another site
//! can neither read nor set the cookie, so it cannot hand over a callback
//! this browser will take. With secure cookies (`[auth] secure_cookies`,
//! the default) it is `__Host-tollgate_sso_state` with `Path=/`: the
//! browser then takes it only from this host over HTTPS, so a sibling
//! subdomain cannot plant its own state for this domain.

use axum::http::HeaderMap;

use super::config::CALLBACK_PATH;

/// The cookie holding the state of the sign-in this browser started.
pub const COOKIE: &str = "tollgate_sso_state";
/// Its name with secure cookies: a `__Host-` cookie is accepted only with
/// `Secure`, `Path=/` and no `Domain`, so no other host can set it.
pub const SECURE_COOKIE: &str = "__Host-tollgate_sso_state";

fn name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}

/// Why a callback is not this browser's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotThisBrowser {
    #[error(
        "this browser sent no `tollgate_sso_state` cookie: the sign-in was started in \
         another browser, more than the login timeout ago, or with cookies blocked; \
         start the sign-in again here"
    )]
    NoCookie,
    #[error(
        "this sign-in was started in another browser (or another tab started a newer \
         one): start the sign-in again here"
    )]
    Mismatch,
}

/// The `Set-Cookie` value binding `state` to the browser, for `max_age_secs`.
pub fn cookie(state: &str, max_age_secs: u64, secure: bool) -> String {
    if secure {
        format!("{SECURE_COOKIE}={state}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}; Secure")
    } else {
        format!(
            "{COOKIE}={state}; HttpOnly; SameSite=Lax; Path={CALLBACK_PATH}; Max-Age={max_age_secs}"
        )
    }
}

/// The `Set-Cookie` value removing the binding once the callback used it.
pub fn cleared(secure: bool) -> String {
    cookie("", 0, secure)
}

/// Whether the callback's `state` is the one this browser started.
pub fn check(headers: &HeaderMap, state: &str, secure: bool) -> Result<(), NotThisBrowser> {
    let bound = tollgate_access::gate::cookie(headers, name(secure))
        .filter(|v| !v.is_empty())
        .ok_or(NotThisBrowser::NoCookie)?;
    if tollgate_access::gate::same(state, &bound) {
        Ok(())
    } else {
        Err(NotThisBrowser::Mismatch)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::header;

    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={value}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn only_the_browser_holding_the_state_goes_on() {
        let plain = |state: &str| check(&with_cookie("s1"), state, false);
        assert_eq!(plain("s1"), Ok(()));
        assert_eq!(plain("s2"), Err(NotThisBrowser::Mismatch));
        assert_eq!(
            check(&with_cookie(""), "s1", false),
            Err(NotThisBrowser::NoCookie)
        );
        assert_eq!(
            check(&HeaderMap::new(), "s1", false),
            Err(NotThisBrowser::NoCookie)
        );
        // With secure cookies only the `__Host-` cookie binds: one a
        // sibling subdomain planted under the plain name does not.
        assert_eq!(
            check(&with_cookie("s1"), "s1", true),
            Err(NotThisBrowser::NoCookie)
        );
        let mut secure = HeaderMap::new();
        secure.insert(
            header::COOKIE,
            format!("{SECURE_COOKIE}=s1").parse().unwrap(),
        );
        assert_eq!(check(&secure, "s1", true), Ok(()));
    }

    #[test]
    fn the_cookie_is_lax_http_only_and_scoped_to_the_callback() {
        assert_eq!(
            cookie("abc", 600, false),
            "tollgate_sso_state=abc; HttpOnly; SameSite=Lax; Path=/auth/oidc/callback; Max-Age=600"
        );
        assert_eq!(
            cookie("abc", 600, true),
            "__Host-tollgate_sso_state=abc; HttpOnly; SameSite=Lax; Path=/; Max-Age=600; Secure"
        );
        assert!(cleared(false).contains("Max-Age=0"));
        assert!(!cleared(false).contains("Secure"));
        assert!(cleared(true).starts_with("__Host-tollgate_sso_state=;"));
    }
}
