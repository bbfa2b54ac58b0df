//! `[auth.oidc]` (`tollgate_control::accounts::OidcConfig`) checked at
//! start ([`SsoSettings`]), so a malformed URL or grant entry stops
//! `tollgate api` with the key's name instead of failing the first sign-in.

use std::collections::BTreeMap;
use std::time::Duration;

use openidconnect::{ClientId, ClientSecret, IssuerUrl, RedirectUrl, Scope};
use tollgate_control::accounts::{Grant, OidcConfig};

use super::role_claim::RoleClaim;

/// The path of the callback route; `redirect_url` must end with it.
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";

/// A setting of `[auth.oidc]` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid `auth.oidc.{key}`: {reason}")]
pub struct SsoConfigError {
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SsoConfigError {
    SsoConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `[auth.oidc]`, checked.
#[derive(Debug, Clone)]
pub struct SsoSettings {
    pub issuer: IssuerUrl,
    pub client_id: ClientId,
    pub client_secret: Option<ClientSecret>,
    pub redirect_url: RedirectUrl,
    /// Without `openid` (the client adds it).
    pub scopes: Vec<Scope>,
    pub roles: RoleClaim,
    pub login_timeout: Duration,
}

impl SsoSettings {
    pub fn from_config(config: &OidcConfig) -> Result<Self, SsoConfigError> {
        let issuer = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| invalid("issuer_url", e.to_string()))?;
        if config.client_id.trim().is_empty() {
            return Err(invalid("client_id", "empty"));
        }
        let redirect_url = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| invalid("redirect_url", e.to_string()))?;
        if redirect_url.url().path() != CALLBACK_PATH {
            return Err(invalid(
                "redirect_url",
                format!(
                    "the path must be {CALLBACK_PATH} (the route that finishes a sign-in), not {}",
                    redirect_url.url().path()
                ),
            ));
        }
        let mut table: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        for (value, entries) in &config.grants {
            let grants = entries
                .iter()
                .map(|entry| Grant::parse(entry))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| invalid(format!("grants.{value}"), reason))?;
            table.insert(value.clone(), grants);
        }
        if config.roles_claim.trim().is_empty() {
            return Err(invalid("roles_claim", "empty"));
        }
        if config.login_timeout_secs == 0 {
            return Err(invalid("login_timeout_secs", "must be at least 1"));
        }
        Ok(Self {
            issuer,
            client_id: ClientId::new(config.client_id.clone()),
            client_secret: config.client_secret.clone().map(ClientSecret::new),
            redirect_url,
            scopes: config
                .scopes
                .iter()
                .filter(|s| s.as_str() != "openid")
                .map(|s| Scope::new(s.clone()))
                .collect(),
            roles: RoleClaim::new(config.roles_claim.clone(), table),
            login_timeout: Duration::from_secs(config.login_timeout_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig::new(
            "https://id.example.com",
            "tollgate",
            "https://tollgate.example.com/auth/oidc/callback",
        )
    }

    #[test]
    fn a_complete_section_is_accepted_and_openid_is_left_to_the_client(
    ) -> Result<(), SsoConfigError> {
        let settings = SsoSettings::from_config(&config())?;
        assert_eq!(
            settings.scopes,
            vec![Scope::new("email".into()), Scope::new("profile".into())]
        );
        assert_eq!(settings.login_timeout, Duration::from_secs(600));
        Ok(())
    }

    #[test]
    fn a_redirect_url_elsewhere_than_the_callback_route_names_the_key() {
        let mut c = config();
        c.redirect_url = "https://tollgate.example.com/callback".into();
        let err = SsoSettings::from_config(&c).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid `auth.oidc.redirect_url`: the path must be /auth/oidc/callback (the route that finishes a sign-in), not /callback")
        );
    }

    #[test]
    fn a_grant_entry_with_an_unknown_role_names_the_claim_value() {
        let mut c = config();
        c.grants
            .insert("okta-finance".into(), vec!["acme:accountant".into()]);
        let err = SsoSettings::from_config(&c).err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("grants.okta-finance"));
    }
}
