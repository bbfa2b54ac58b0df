//! Who is calling and what they may do (docs/sign-in.md).
//!
//! Every route of the API and the pages is registered through [`Routes`]
//! with its [`Access`] rule: who may read (GET), who may change (any other
//! method), and where its org comes from. [`Routes::table`] lists them all,
//! so a test walks every route and a new one cannot be forgotten.
//!
//! The [`gate`] runs in front of every route: it finds the caller
//! ([`Identity`]: a person's session cookie or an API key in
//! `Authorization: Bearer`), refuses what the rule does not allow (401 or a
//! redirect to the sign-in page, 403 for a role that may not, 404 for an org
//! the caller does not see), checks the form token of every change made
//! from a browser session (CSRF), and pins the request to the caller's org.

pub mod browser_headers;
pub mod gate;
pub mod identity;
pub mod refusal;
pub mod routes;

pub use browser_headers::with_browser_headers;
pub use gate::{Authenticator, Credentials, Gate, StoreAuthenticator, SESSION_COOKIE};
pub use identity::{Identity, IdentityKind, OrgScope};
pub use refusal::Refusal;
pub use routes::{Access, OrgFrom, RouteAccess, Routes};
pub use tollgate_control::accounts::{Grant, Role};

/// Roles that read reports: everyone but programs.
pub const READERS: &[Role] = &[
    Role::Admin,
    Role::Finance,
    Role::Sre,
    Role::Compliance,
    Role::Viewer,
];
/// Roles that read cost: finance and admins (and viewers).
pub const COST_READERS: &[Role] = &[Role::Admin, Role::Finance, Role::Viewer];
/// Roles that read latency, errors and breakers.
pub const SRE_READERS: &[Role] = &[Role::Admin, Role::Sre, Role::Viewer];
/// Roles that read alerting (rules, silences, states).
pub const ALERT_READERS: &[Role] = &[Role::Admin, Role::Sre, Role::Finance];
/// Roles that change alerting.
pub const ALERT_WRITERS: &[Role] = &[Role::Admin, Role::Sre];
/// Roles that read audit trails.
pub const AUDITORS: &[Role] = &[Role::Admin, Role::Compliance];
/// Administration: keys, people, budgets, prices.
pub const ADMINS: &[Role] = &[Role::Admin];
