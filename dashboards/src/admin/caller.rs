//! Who is administering: a person or key with the `admin` role, of every
//! org or of some. They administer what belongs to an org they are admin
//! of, and what belongs to no org (keys of every org, budgets without an
//! org) only as an admin of every org; lists follow the org the request is
//! pinned to (`?org=`). The access gate admitted them (role `admin` on
//! some org, the session's form token on every change); every change
//! names them as its actor.

use axum::http::StatusCode;
use axum::response::Response;
use tollgate_access::{Identity, OrgScope, ADMINS};

use super::page::{message, Head};

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Admin {
    pub identity: Identity,
    /// For the page head.
    pub who: String,
    /// The session's form token (empty for API keys, which need none).
    pub csrf: String,
}

impl Admin {
    pub fn of(identity: Identity) -> Self {
        Self {
            who: identity.who(),
            csrf: identity.csrf.clone().unwrap_or_default(),
            identity,
        }
    }

    /// The head of an admin page.
    pub fn head(&self) -> Head {
        let org_query = match self.pinned() {
            Some(org) => format!(
                "?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("org", org)
                    .finish()
            ),
            None => String::new(),
        };
        Head {
            org_query,
            who: self.who.clone(),
            csrf: self.csrf.clone(),
        }
    }

    /// How admin events and stored records name this admin.
    pub fn actor(&self) -> &str {
        &self.identity.actor
    }

    /// The org the request is pinned to (`None`: every org).
    pub fn pinned(&self) -> Option<&str> {
        self.identity.scope()
    }

    /// Whether this admin administers what belongs to `org` (`None`: to
    /// no org, or to all of them).
    pub fn administers(&self, org: Option<&str>) -> bool {
        match org {
            Some(org) => self.identity.sees(ADMINS, org),
            None => self.identity.org_scope(ADMINS) == Some(OrgScope::All),
        }
    }

    /// Whether lists show what belongs to `org`: administered, and of the
    /// pinned org if the request is pinned.
    pub fn lists(&self, org: Option<&str>) -> bool {
        self.administers(org) && self.pinned().is_none_or(|pinned| org == Some(pinned))
    }

    /// What belongs to every org at once (the price catalog, from which
    /// every org's costs are computed) is changed by an admin of every org
    /// only, as the admin API says; the 403 page for anyone else.
    pub fn of_every_org(&self, changing: &str) -> Result<(), Response> {
        if self.identity.is_admin() {
            return Ok(());
        }
        Err(message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!(
                "{} may not change {changing}: it is every org's, so that needs role admin in every org",
                self.who
            ),
        ))
    }

    /// The 404 page for something this admin may not see: as if it did not
    /// exist.
    pub fn not_found(&self, what: String) -> Response {
        message(StatusCode::NOT_FOUND, "Not found", what)
    }
}
