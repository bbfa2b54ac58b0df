//! Who is calling: the API key behind a secret (a bearer token, or the
//! pages' sign-in cookie) and whether its role may do what it asks. One
//! rule for the audit endpoints and pages (`audit::access`, roles
//! `compliance`/`admin`) and the alerting pages (`admin`/`sre` write,
//! `finance` reads too), so a page and its API refuse the same keys.

use tollgate_control::keys::{ApiKey, KeyStore};

/// Why a caller may not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no key, or not a valid one.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a valid key whose role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the key is scoped to another org.
    #[error("{0}")]
    NotFound(String),
    /// 503: the key store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// The key behind `secret` if its role is one of `roles`; `doing` names
/// the action in the refusal (`read audit trails`).
pub async fn authenticate(
    keys: Option<&KeyStore>,
    secret: Option<&str>,
    roles: &[&str],
    doing: &str,
) -> Result<ApiKey, Denied> {
    let Some(keys) = keys else {
        return Err(Denied::Unavailable(
            "api keys are unavailable (postgresql was unreachable when the server started)".into(),
        ));
    };
    let Some(secret) = secret.map(str::trim).filter(|s| !s.is_empty()) else {
        return Err(Denied::Unauthenticated(
            "missing API key: send Authorization: Bearer <key>".into(),
        ));
    };
    let key = match keys.verify(secret).await {
        Ok(Some(key)) => key,
        Ok(None) => return Err(Denied::Unauthenticated("invalid API key".into())),
        Err(err) => {
            tracing::error!(%err, "cannot check an API key");
            return Err(Denied::Unavailable("cannot check the API key".into()));
        }
    };
    may(&key, roles, doing)?;
    Ok(key)
}

/// Whether `key`'s role is one of `roles` (403 naming them otherwise).
pub fn may(key: &ApiKey, roles: &[&str], doing: &str) -> Result<(), Denied> {
    if roles.contains(&key.role.as_str()) {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!(
            "role {} may not {doing} ({} may)",
            key.role,
            roles.join(" or ")
        )))
    }
}
