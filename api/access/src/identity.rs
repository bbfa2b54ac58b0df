//! The caller of one request: a person (session) or a program (API key),
//! their grants, and the org the request is pinned to.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tollgate_control::accounts::{Grant, Role};
use tollgate_control::keys::ApiKey;
use uuid::Uuid;

use crate::refusal::Refusal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    /// A person signed in with a session cookie.
    User { id: Uuid, email: String },
    /// A program with an API key.
    Key { prefix: String },
}

/// Which orgs a caller may see for some roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgScope {
    All,
    /// These orgs, sorted.
    Only(Vec<String>),
}

/// Who is calling, what they may do, and the org this request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user:<email>` or `key:<prefix>`: how changes and records name them.
    pub actor: String,
    /// For people to read (page head).
    pub name: String,
    pub kind: IdentityKind,
    pub grants: Vec<Grant>,
    /// The session's form token; `None` for API keys (their requests carry
    /// no ambient credential, so they need none).
    pub csrf: Option<String>,
    /// The org this request is pinned to (`None`: every org the caller
    /// sees, i.e. an all-orgs caller without an `org` filter). Set by the
    /// gate from the route's rule.
    pub org: Option<String>,
}

impl Identity {
    /// A person's identity from their session.
    pub fn user(id: Uuid, email: &str, name: &str, grants: Vec<Grant>, csrf: String) -> Self {
        Self {
            actor: format!("user:{email}"),
            name: name.to_string(),
            kind: IdentityKind::User {
                id,
                email: email.to_string(),
            },
            grants,
            csrf: Some(csrf),
            org: None,
        }
    }

    /// A program's identity from its API key: its role (when it is one a
    /// person can have; `ingest` and `proxy` keys read nothing) in its org,
    /// or in every org.
    pub fn key(key: &ApiKey) -> Self {
        let grants = Role::parse(&key.role)
            .ok()
            .map(|role| Grant {
                org_id: key.org_id.clone(),
                role,
            })
            .into_iter()
            .collect();
        Self {
            actor: key.actor(),
            name: format!("key {} ({})", key.prefix, key.name),
            kind: IdentityKind::Key {
                prefix: key.prefix.clone(),
            },
            grants,
            csrf: None,
            org: None,
        }
    }

    /// The orgs where this caller holds one of `roles` (`None`: nowhere).
    pub fn org_scope(&self, roles: &[Role]) -> Option<OrgScope> {
        let mut orgs = BTreeSet::new();
        for grant in self.grants.iter().filter(|g| roles.contains(&g.role)) {
            match &grant.org_id {
                None => return Some(OrgScope::All),
                Some(org) => {
                    orgs.insert(org.clone());
                }
            }
        }
        (!orgs.is_empty()).then(|| OrgScope::Only(orgs.into_iter().collect()))
    }

    /// Whether this caller holds one of `roles` for `org`.
    pub fn sees(&self, roles: &[Role], org: &str) -> bool {
        match self.org_scope(roles) {
            Some(OrgScope::All) => true,
            Some(OrgScope::Only(orgs)) => orgs.iter().any(|o| o == org),
            None => false,
        }
    }

    /// Whether this caller holds one of `roles` for the org this request
    /// is pinned to (for every org when it is not pinned).
    pub fn may(&self, roles: &[Role]) -> bool {
        self.grants.iter().any(|g| {
            roles.contains(&g.role)
                && match (&g.org_id, &self.org) {
                    (None, _) => true,
                    (Some(granted), Some(org)) => granted == org,
                    (Some(_), None) => false,
                }
        })
    }

    /// The org this request is pinned to (`None`: every org).
    pub fn scope(&self) -> Option<&str> {
        self.org.as_deref()
    }

    /// An admin of every org.
    pub fn is_admin(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.role == Role::Admin && g.org_id.is_none())
    }

    /// `Ada (finance in acme)` for the page head.
    pub fn who(&self) -> String {
        let grants: Vec<String> = self.grants.iter().map(Grant::describe).collect();
        if grants.is_empty() {
            self.name.clone()
        } else {
            format!("{} ({})", self.name, grants.join(", "))
        }
    }

    /// Every org named in a grant (for the org switcher), sorted; empty
    /// for an all-orgs caller.
    pub fn named_orgs(&self) -> Vec<String> {
        let orgs: BTreeSet<String> = self
            .grants
            .iter()
            .filter_map(|g| g.org_id.clone())
            .collect();
        orgs.into_iter().collect()
    }

    /// Refuse `org` unless this caller holds one of `roles` there. A
    /// caller who holds another role in it knows of it (their org switcher
    /// offers it): a 403 saying they may not `doing` in it and which role
    /// that needs. Any other org is a 404, "no org", so other orgs' names
    /// do not leak. The gate's rule for `?org=` and the handlers' for an
    /// org named in a body.
    pub fn require_org(&self, roles: &[Role], org: &str, doing: &str) -> Result<(), Refusal> {
        if self.sees(roles, org) {
            return Ok(());
        }
        if !self.named_orgs().iter().any(|o| o == org) {
            return Err(Refusal::NotFound(format!("no org {org}")));
        }
        let needs: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(Refusal::Forbidden(format!(
            "{} may not {doing} in org {org}: that needs role {}",
            self.who(),
            needs.join(" or ")
        )))
    }

    /// Refuse `org` unless this caller holds one of `roles` there: a 404
    /// naming `what`, so other orgs' ids do not leak.
    pub fn check_org(&self, roles: &[Role], org: &str, what: &str) -> Result<(), Refusal> {
        if self.sees(roles, org) {
            Ok(())
        } else {
            Err(Refusal::NotFound(format!("no {what}")))
        }
    }
}

/// Handlers take `identity: Identity`; the gate put it there. A route
/// without a gate in front refuses (500), it never runs unprotected.
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
            Refusal::Misconfigured("no identity: the route has no access gate".into())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ada(grants: Vec<Grant>) -> Identity {
        Identity::user(Uuid::nil(), "ada@example.com", "Ada", grants, "t".into())
    }

    #[test]
    fn another_role_in_an_org_is_a_403_naming_the_role_and_no_role_a_404() {
        let id = ada(vec![
            Grant::new(Some("acme"), Role::Finance),
            Grant::new(Some("globex"), Role::Sre),
        ]);
        assert!(id.require_org(&[Role::Sre], "globex", "x").is_ok());
        match id.require_org(&[Role::Admin, Role::Sre], "acme", "change alerting") {
            Err(Refusal::Forbidden(m)) => assert_eq!(
                m,
                "Ada (finance in acme, sre in globex) may not change alerting in org acme: \
                 that needs role admin or sre"
            ),
            other => panic!("{other:?}"),
        }
        match id.require_org(&[Role::Sre], "initech", "change alerting") {
            Err(Refusal::NotFound(m)) => assert_eq!(m, "no org initech"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scope_follows_the_grants_of_the_roles_asked() {
        let id = ada(vec![
            Grant::new(Some("globex"), Role::Sre),
            Grant::new(Some("acme"), Role::Finance),
            Grant::new(Some("initech"), Role::Finance),
        ]);
        assert_eq!(
            id.org_scope(&[Role::Finance]),
            Some(OrgScope::Only(vec!["acme".into(), "initech".into()]))
        );
        assert_eq!(id.org_scope(&[Role::Admin]), None);
        assert!(id.sees(&[Role::Sre], "globex"));
        assert!(!id.sees(&[Role::Sre], "acme"));
        let admin = ada(vec![Grant::new(None, Role::Admin)]);
        assert_eq!(admin.org_scope(&[Role::Admin]), Some(OrgScope::All));
        assert!(admin.is_admin() && !id.is_admin());
    }

    #[test]
    fn may_is_about_the_pinned_org() {
        let mut id = ada(vec![
            Grant::new(Some("acme"), Role::Sre),
            Grant::new(Some("globex"), Role::Viewer),
        ]);
        id.org = Some("acme".into());
        assert!(id.may(&[Role::Sre]));
        id.org = Some("globex".into());
        assert!(!id.may(&[Role::Sre]));
        id.org = None;
        assert!(!id.may(&[Role::Sre]), "an org grant is not every org");
    }
}
