//! How long sessions and invitations live and when repeated failures lock
//! an account: `[auth]` in the configuration (docs/sign-in.md); and single
//! sign-on's provider, `[auth.oidc]` (checked and used by
//! `tollgate_dashboards::sign_in_sso`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthPolicy {
    /// A session ends this long after sign-in, however active (seconds).
    pub session_ttl_secs: u64,
    /// A session ends after this long without a request (seconds).
    pub session_idle_secs: u64,
    /// Failed passwords in a row that lock an account.
    pub lockout_attempts: u32,
    /// How long a locked account stays locked (seconds).
    pub lockout_secs: u64,
    /// How long an invitation can be accepted (seconds).
    pub invitation_ttl_secs: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Leave on
    /// behind a TLS-terminating proxy; off only for plain-HTTP development.
    pub secure_cookies: bool,
    /// Single sign-on with OpenID Connect; off when absent.
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            session_idle_secs: 2 * 3600,
            lockout_attempts: 5,
            lockout_secs: 15 * 60,
            invitation_ttl_secs: 7 * 24 * 3600,
            secure_cookies: true,
            oidc: None,
        }
    }
}

impl AuthPolicy {
    pub fn session_ttl(&self) -> chrono::Duration {
        secs(self.session_ttl_secs)
    }

    pub fn session_idle(&self) -> chrono::Duration {
        secs(self.session_idle_secs)
    }

    pub fn lockout(&self) -> chrono::Duration {
        secs(self.lockout_secs)
    }

    pub fn invitation_ttl(&self) -> chrono::Duration {
        secs(self.invitation_ttl_secs)
    }
}

/// `[auth.oidc]`: the OpenID provider people sign in at
/// (docs/sign-in.md, "Single sign-on").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer; its discovery document is
    /// `<issuer_url>/.well-known/openid-configuration`.
    pub issuer_url: String,
    pub client_id: String,
    /// Absent for a public client (PKCE alone).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// This server's callback as the provider knows it:
    /// `https://<host>/auth/oidc/callback`.
    pub redirect_url: String,
    /// Scopes asked for; `openid` is always asked for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim (ID token, or else the userinfo answer) whose values say
    /// which orgs and roles a person has.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim value -> grants (`"<org>:<role>"`, `"*:<role>"` for every org).
    /// Empty: each claim value is itself such a grant.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    /// How long a started sign-in may take at the provider (seconds).
    #[serde(default = "default_login_timeout_secs")]
    pub login_timeout_secs: u64,
}

impl OidcConfig {
    /// A provider's section with every optional key at its default.
    pub fn new(issuer_url: &str, client_id: &str, redirect_url: &str) -> Self {
        Self {
            issuer_url: issuer_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            redirect_url: redirect_url.into(),
            scopes: default_scopes(),
            roles_claim: default_roles_claim(),
            grants: BTreeMap::new(),
            login_timeout_secs: default_login_timeout_secs(),
        }
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_roles_claim() -> String {
    "tollgate_roles".into()
}

fn default_login_timeout_secs() -> u64 {
    600
}

fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}
