//! Signing in to the pages with an API key: the compliance pages
//! (`/compliance`) and the alerting pages (`/sre/alerts`) each have a
//! login form that checks the key and keeps it in an HttpOnly,
//! `SameSite=Strict` cookie scoped to that area's path, so a key given to
//! one area is not sent to the other. `Authorization: Bearer` works too,
//! for scripts.
//!
//! Forms that change something carry a CSRF token derived from the key
//! ([`csrf_token`]: SHA-256 of a fixed label and the key's secret). A page
//! of another site can neither read it (it is only in our pages) nor
//! compute it (it would need the key), and `SameSite=Strict` already keeps
//! the cookie off cross-site requests in current browsers; the token covers
//! older ones. It needs no server-side state, and signing in again with
//! another key changes it.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::InvalidParameter;

/// The cookie holding the API key.
pub const COOKIE: &str = "tollgate_key";

/// The name of the CSRF token field in forms.
pub const CSRF_FIELD: &str = "csrf";

/// One area of pages behind a sign-in.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    /// The path the area's pages live under and its cookie is scoped to.
    pub path: &'static str,
    /// Where a login without a (safe) `next` goes.
    pub home: &'static str,
}

impl Area {
    /// Only local paths inside the area, so a login cannot redirect away.
    pub fn safe_next(&self, next: Option<&str>) -> String {
        match next {
            Some(n) if n.starts_with(self.path) && !n.starts_with("//") => n.to_string(),
            _ => self.home.to_string(),
        }
    }

    /// The `Set-Cookie` value keeping `key` for this area.
    pub fn cookie(&self, key: &str) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path={}",
            key.trim(),
            self.path
        )
    }

    /// The `Set-Cookie` value forgetting it.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path={}; Max-Age=0",
            self.path
        )
    }

    pub fn login(&self) -> String {
        format!("{}/login", self.path)
    }

    pub fn logout(&self) -> String {
        format!("{}/logout", self.path)
    }
}

/// The key's secret from `Authorization: Bearer`, or from the cookie.
pub fn secret(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// The CSRF token of the session whose key is `secret`.
pub fn csrf_token(secret: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tollgate-page-csrf\0");
    hash.update(secret.trim().as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// Whether `token` (a form's) belongs to the request's session.
pub fn csrf_ok(headers: &HeaderMap, token: Option<&str>) -> bool {
    match (secret(headers), token) {
        (Some(secret), Some(token)) => {
            let want = csrf_token(&secret);
            // Compared in full whatever the first difference: the token
            // must not be guessable byte by byte from timings.
            want.len() == token.len()
                && want
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }
        _ => false,
    }
}

/// The login form's fields (a query string, or the form's body).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoginParams {
    pub key: Option<String>,
    pub next: Option<String>,
}

impl LoginParams {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, InvalidParameter> {
        let params = QueryParams::parse(pairs, &Expected::names(&["key", "next"]))?;
        Ok(Self {
            key: params.get("key").map(str::to_string),
            next: params.get("next").map(str::to_string),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const COMPLIANCE: Area = Area {
        path: "/compliance",
        home: "/compliance/search",
    };

    #[test]
    fn key_from_cookie_or_bearer() {
        let mut headers = HeaderMap::new();
        assert_eq!(secret(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; tollgate_key=tg_abc_def ; x=1"),
        );
        assert_eq!(secret(&headers).as_deref(), Some("tg_abc_def"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tg_bearer_1"),
        );
        assert_eq!(secret(&headers).as_deref(), Some("tg_bearer_1"));
    }

    #[test]
    fn login_redirects_only_inside_the_area() {
        assert_eq!(
            COMPLIANCE.safe_next(Some("/compliance/verify")),
            "/compliance/verify"
        );
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil"),
            Some("/sre"),
        ] {
            assert_eq!(COMPLIANCE.safe_next(bad), "/compliance/search");
        }
        assert!(COMPLIANCE.cookie("k").contains("Path=/compliance"));
    }

    #[test]
    fn csrf_tokens_belong_to_one_key() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("tollgate_key=tg_a"),
        );
        let token = csrf_token("tg_a");
        assert_eq!(token.len(), 32);
        assert!(csrf_ok(&headers, Some(&token)));
        assert!(!csrf_ok(&headers, Some(&csrf_token("tg_b"))));
        assert!(!csrf_ok(&headers, None));
        assert!(!csrf_ok(&HeaderMap::new(), Some(&token)));
    }
}
