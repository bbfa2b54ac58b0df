//! The form token of the forms used before there is a session: sign-in
//! (`/login`) and accepting an invitation (`/invitations/{token}`). Without
//! it another site could post its own credentials into someone's browser
//! and sign them in as the attacker (login CSRF), so what they then enter
//! would land in the attacker's account.
//!
//! A double-submit token: the page sets a random value in the
//! `tollgate_login_csrf` cookie (HttpOnly, `SameSite=Strict`, `Secure` as
//! the session cookie) and puts the same value in the form's `csrf` field;
//! a post is accepted only when both are there and equal. Another site can
//! neither read the cookie nor make the browser send it with its own post
//! (`Strict`), so it cannot produce a matching pair. Once signed in, the
//! session's own form token takes over (`tollgate-access`'s gate).

use axum::http::HeaderMap;
use rand::TryRngCore;

/// The cookie holding the token.
pub const COOKIE: &str = "tollgate_login_csrf";

/// The form field holding it (the same name as the session's token).
pub const FIELD: &str = tollgate_access::gate::CSRF_FIELD;

/// How long a sign-in page's form stays usable: a day.
pub const MAX_AGE_SECS: u64 = 86_400;

/// Random bytes in a token (hex: twice as many characters).
const BYTES: usize = 32;

/// Why a post was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "the sign-in form's token is missing: this browser sent no `tollgate_login_csrf` \
         cookie (cookies blocked, or the form was opened more than a day ago); \
         the form below has a new one, try again"
    )]
    NoCookie,
    #[error(
        "the sign-in form's token is missing from the form: \
         use the form below, which has one"
    )]
    NoField,
    #[error(
        "the sign-in form's token does not match this browser's: the form was not \
         the one this site gave this browser (another site's, or altered); \
         use the form below"
    )]
    Mismatch,
}

/// The operating system gave no random bytes for a new token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("operating system RNG failed: {0}")]
pub struct NoRandomness(String);

/// A token for one browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginToken(String);

impl LoginToken {
    /// The browser's token when it has a well-formed one (several open
    /// sign-in tabs share it), else a new random one.
    pub fn for_browser(headers: &HeaderMap) -> Result<Self, NoRandomness> {
        match Self::of_cookie(headers) {
            Some(token) => Ok(token),
            None => Self::new(),
        }
    }

    fn new() -> Result<Self, NoRandomness> {
        let mut bytes = [0u8; BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|err| NoRandomness(err.to_string()))?;
        Ok(Self(hex::encode(bytes)))
    }

    fn of_cookie(headers: &HeaderMap) -> Option<Self> {
        tollgate_access::gate::cookie(headers, COOKIE)
            .filter(|v| v.len() == BYTES * 2 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(Self)
    }

    /// Check a post: the cookie and the form's field must both be there
    /// and equal.
    pub fn check(headers: &HeaderMap, form: &[(String, String)]) -> Result<(), Refused> {
        let cookie = Self::of_cookie(headers).ok_or(Refused::NoCookie)?;
        let field = form
            .iter()
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or(Refused::NoField)?;
        if tollgate_access::gate::same(field, &cookie.0) {
            Ok(())
        } else {
            Err(Refused::Mismatch)
        }
    }

    /// The value for the form's hidden field.
    pub fn value(&self) -> &str {
        &self.0
    }

    /// The `Set-Cookie` value that gives the browser this token.
    pub fn cookie(&self, secure: bool) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={MAX_AGE_SECS}{}",
            self.0,
            if secure { "; Secure" } else { "" }
        )
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

    fn form(token: &str) -> Vec<(String, String)> {
        vec![
            ("email".into(), "a@b.example".into()),
            (FIELD.into(), token.into()),
        ]
    }

    #[test]
    fn a_new_token_is_random_hex_and_a_browser_keeps_its_own() {
        let a = LoginToken::for_browser(&HeaderMap::new()).unwrap();
        let b = LoginToken::for_browser(&HeaderMap::new()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.value().len(), 64);
        assert!(a.value().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(LoginToken::for_browser(&with_cookie(a.value())).unwrap(), a);
        // A malformed cookie is replaced.
        assert_ne!(
            LoginToken::for_browser(&with_cookie("short"))
                .unwrap()
                .value(),
            "short"
        );
    }

    #[test]
    fn a_post_needs_the_cookie_and_the_same_field() {
        let t = LoginToken::new().unwrap();
        let other = LoginToken::new().unwrap();
        let headers = with_cookie(t.value());
        assert_eq!(LoginToken::check(&headers, &form(t.value())), Ok(()));
        assert_eq!(
            LoginToken::check(&HeaderMap::new(), &form(t.value())),
            Err(Refused::NoCookie)
        );
        assert_eq!(
            LoginToken::check(&headers, &form("")),
            Err(Refused::NoField)
        );
        assert_eq!(
            LoginToken::check(&headers, &form(other.value())),
            Err(Refused::Mismatch)
        );
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let t = LoginToken(String::from("ab"));
        assert_eq!(
            t.cookie(true),
            "tollgate_login_csrf=ab; HttpOnly; SameSite=Strict; Path=/; Max-Age=86400; Secure"
        );
        assert!(!t.cookie(false).contains("Secure"));
    }
}
