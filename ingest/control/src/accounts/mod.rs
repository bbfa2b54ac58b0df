//! People's accounts (docs/sign-in.md): who they are ([`users`]: password
//! or single sign-on, lockout), what they may do in which org ([`Grant`]),
//! their sessions ([`sessions`]) and the invitations that create them
//! ([`invitations`]). Programs use API keys ([`crate::keys`]); a key's role
//! and org scope read like one grant.

pub mod invitations;
pub mod password;
pub mod policy;
pub mod sessions;
pub mod users;

use serde::{Deserialize, Serialize};

pub use invitations::{CreatedInvitation, Invitation};
pub use policy::{AuthPolicy, OidcConfig};
pub use sessions::{Session, SessionStore, SignedIn};
pub use users::{AccountStore, SignIn, User, UserWithGrants};

/// What a person (or a key) may do. Keys have two more, `ingest` and
/// `proxy`, that only programs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including keys, users, budgets and prices.
    Admin,
    /// Cost reports, statements, budgets.
    Finance,
    /// Latency, errors, breakers, alerts.
    Sre,
    /// Audit trail search, verification and export.
    Compliance,
    /// Reads the reports (cost, latency, errors), changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Finance,
        Role::Sre,
        Role::Compliance,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Finance => "finance",
            Self::Sre => "sre",
            Self::Compliance => "compliance",
            Self::Viewer => "viewer",
        }
    }

    /// A role's name, or why not (naming the ones there are).
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown role {name:?}; expected one of {}",
                    Self::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role in one org, or in every org (`org_id: None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub org_id: Option<String>,
    pub role: Role,
}

impl Grant {
    pub fn new(org_id: Option<&str>, role: Role) -> Self {
        Self {
            org_id: org_id.map(str::to_string),
            role,
        }
    }

    /// `admin in every org`, `finance in acme`.
    pub fn describe(&self) -> String {
        match &self.org_id {
            Some(org) => format!("{} in {org}", self.role),
            None => format!("{} in every org", self.role),
        }
    }

    /// `"<org>:<role>"` or `"*:<role>"`, the form the CLI and single
    /// sign-on's claim mapping use.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (org, role) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not <org>:<role> (or *:<role>)"))?;
        let role = Role::parse(role)?;
        let org = org.trim();
        if org.is_empty() {
            return Err(format!("{text:?} names no org (use * for every org)"));
        }
        Ok(Self::new((org != "*").then_some(org), role))
    }
}

/// An email address as stored: trimmed and lowercased, or why it is not
/// one (`field` names the form field in the error).
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(format!("{raw:?} is not an email address"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_from_claims_and_flags() {
        assert_eq!(
            Grant::parse("acme:finance").unwrap(),
            Grant::new(Some("acme"), Role::Finance)
        );
        assert_eq!(
            Grant::parse("*:admin").unwrap(),
            Grant::new(None, Role::Admin)
        );
        assert!(Grant::parse("acme")
            .unwrap_err()
            .contains("not <org>:<role>"));
        assert!(Grant::parse("acme:root")
            .unwrap_err()
            .contains("unknown role"));
        assert!(Grant::parse(":sre").unwrap_err().contains("names no org"));
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in ["", "ada", "@x", "ada@", "a da@x"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
