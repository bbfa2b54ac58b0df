//! One navigation for every page: the areas the signed-in caller may open
//! (Overview, SRE, Finance, Compliance, Admin), the org switcher for people
//! who see several orgs, and sign-out; and the sub-navigation of the SRE,
//! Compliance and Admin areas. Links carry the current filters each target reads
//! ([`crate::carry`]).
//!
//! Pages do not build them: `base.html` holds a marker the [`inject`]
//! layer replaces with the navigation of the identity the gate admitted
//! (it rides on the response), so no page can forget it or show a link
//! its reader may not open; `subnav_slot.html` holds the sub-navigation's
//! marker.

use askama::Template;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use tollgate_access::{Identity, ADMINS, AUDITORS, COST_READERS, READERS};
use tollgate_control::accounts::Role;

use crate::carry;

/// The marker in `base.html`.
const MARKER: &str = "<!--tollgate:nav-->";
/// The marker in `subnav_slot.html`.
const SUBNAV_MARKER: &str = "<!--tollgate:subnav-->";
/// The largest page the layer rewrites.
const MAX_PAGE_BYTES: usize = 32 << 20;

pub struct NavLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

pub struct OrgChoice {
    pub name: String,
    /// Where choosing it leads: this page with the org changed, or, on a
    /// page of one object (which belongs to one org), the list of such
    /// objects ([`switch_path`]); the filters are kept.
    pub href: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "nav.html")]
pub struct Nav {
    pub links: Vec<NavLink>,
    pub signed_in: bool,
    pub name: String,
    pub who: String,
    pub csrf: String,
    pub orgs: Vec<OrgChoice>,
}

/// The areas: label, home, path prefix, roles that open it.
const AREAS: [(&str, &str, &str, &[Role]); 5] = [
    ("Overview", "/overview", "/overview", READERS),
    ("SRE", "/sre/latency", "/sre", SRE_OR_ALERTS),
    ("Finance", "/finance/cost", "/finance", COST_READERS),
    ("Compliance", "/compliance/search", "/compliance", AUDITORS),
    ("Admin", "/admin", "/admin", ADMINS),
];

/// A sub-navigation: path prefix, label, pages `(path, label)` in order.
type Area = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const SUBNAVS: [Area; 3] = [
    (
        "/sre",
        "SRE pages",
        &[
            ("/sre/latency", "Latency"),
            ("/sre/errors", "Errors"),
            ("/sre/breakers", "Breakers"),
            ("/sre/alerts", "Alerts"),
        ],
    ),
    (
        "/compliance",
        "Compliance pages",
        &[
            ("/compliance/search", "Search"),
            ("/compliance/verify", "Verification"),
        ],
    ),
    (
        "/admin",
        "Admin pages",
        &[
            ("/admin/users", "People"),
            ("/admin/keys", "API keys"),
            ("/admin/budgets", "Budgets"),
            ("/admin/prices", "Prices"),
        ],
    ),
];

/// The answer to an area's root (`/finance`, `/sre`, …): a redirect to
/// its home page with the same query, so a link such as
/// `/finance?org=acme&from=…` keeps its org and window.
pub async fn to_home(home: &'static str, uri: axum::http::Uri) -> axum::response::Redirect {
    match uri.query().filter(|q| !q.is_empty()) {
        Some(query) => axum::response::Redirect::to(&format!("{home}?{query}")),
        None => axum::response::Redirect::to(home),
    }
}

/// Pages of one object, which belongs to one org, by path prefix, and the
/// page listing such objects: switching the org there leads to the list
/// (the object is not the other org's). An error pattern's page is not
/// among them: a pattern is the same shape in every org.
const ONE_OBJECT: [(&str, &str); 6] = [
    ("/finance/budgets/", "/finance/budgets"),
    ("/sre/alerts/rules/", "/sre/alerts/rules"),
    ("/compliance/entries/", "/compliance/search"),
    ("/admin/budgets/", "/admin/budgets"),
    ("/admin/users/", "/admin/users"),
    ("/admin/keys/", "/admin/keys"),
];

/// Pages under [`ONE_OBJECT`]'s prefixes that are forms, not objects:
/// the switcher keeps them.
const FORMS: [&str; 2] = ["new", "invite"];

/// The page the org switcher leads to from `path` (see [`ONE_OBJECT`]).
/// `/sre/alerts/rules/new` is a form, not an object: it stays.
pub fn switch_path(path: &str) -> &str {
    ONE_OBJECT
        .iter()
        .find(|(prefix, _)| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && !FORMS.contains(&rest))
        })
        .map_or(path, |(_, list)| list)
}

/// Whether `path` is the page `href` or one below it.
fn under(path: &str, href: &str) -> bool {
    path == href || path.starts_with(&format!("{href}/"))
}

#[derive(Template)]
#[template(path = "subnav.html")]
pub struct SubNav {
    pub label: &'static str,
    pub links: Vec<NavLink>,
}

impl SubNav {
    /// The sub-navigation of the area of `path` (none outside SRE,
    /// Compliance and Admin), its links carrying the filters of `query`.
    pub fn for_page(path: &str, query: &[(String, String)], now: DateTime<Utc>) -> Option<Self> {
        let (_, label, pages) = SUBNAVS.iter().find(|(prefix, _, _)| under(path, prefix))?;
        Some(Self {
            label,
            links: pages
                .iter()
                .map(|(href, label)| NavLink {
                    label,
                    href: carry::href(href, path, query, now),
                    active: under(path, href),
                })
                .collect(),
        })
    }
}

/// SRE pages: the reports' readers and alerting's (finance reads alerts).
const SRE_OR_ALERTS: &[Role] = &[Role::Admin, Role::Sre, Role::Viewer, Role::Finance];

impl Nav {
    /// The navigation of `identity` (none: signed out) on the page at
    /// `path` with query pairs `query`, at `now` (a preset window becomes
    /// days for pages that read days).
    pub fn for_identity(
        identity: Option<&Identity>,
        path: &str,
        query: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Self {
        let Some(identity) = identity else {
            return Self {
                links: Vec::new(),
                signed_in: false,
                name: String::new(),
                who: String::new(),
                csrf: String::new(),
                orgs: Vec::new(),
            };
        };
        let links = AREAS
            .iter()
            .filter(|(_, _, _, roles)| identity.org_scope(roles).is_some())
            .map(|(label, home, prefix, _)| NavLink {
                label,
                href: carry::href(home, path, query, now),
                active: under(path, prefix),
            })
            .collect();
        let named = identity.named_orgs();
        let current = query
            .iter()
            .find(|(k, _)| k == "org")
            .map(|(_, v)| v.clone())
            .or_else(|| identity.scope().map(str::to_string))
            .or_else(|| named.first().cloned());
        let orgs = if identity.is_admin() {
            Vec::new()
        } else {
            named
                .into_iter()
                .map(|org| {
                    let mut pairs: Vec<(String, String)> =
                        query.iter().filter(|(k, _)| k != "org").cloned().collect();
                    pairs.push(("org".into(), org.clone()));
                    OrgChoice {
                        current: current.as_deref() == Some(org.as_str()),
                        href: format!("{}?{}", switch_path(path), encode(&pairs)),
                        name: org,
                    }
                })
                .collect()
        };
        Self {
            links,
            signed_in: true,
            name: identity.name.clone(),
            who: identity.who(),
            csrf: identity.csrf.clone().unwrap_or_default(),
            orgs,
        }
    }
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Replace the marker of an HTML page with the navigation of the caller
/// the gate admitted.
pub async fn inject(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !is_html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PAGE_BYTES).await else {
        tracing::error!(%path, "page too large for the navigation layer");
        return Response::from_parts(parts, Body::empty());
    };
    let page = String::from_utf8_lossy(&bytes);
    if !page.contains(MARKER) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let now = Utc::now();
    let identity = parts.extensions.get::<Identity>();
    let nav = Nav::for_identity(identity, &path, &query, now)
        .render()
        .unwrap_or_else(|err| {
            tracing::error!(%err, "navigation rendering failed");
            String::new()
        });
    let mut page = page.replacen(MARKER, &nav, 1);
    if page.contains(SUBNAV_MARKER) {
        let subnav = SubNav::for_page(&path, &query, now)
            .map(|s| s.render())
            .transpose()
            .unwrap_or_else(|err| {
                tracing::error!(%err, "sub-navigation rendering failed");
                None
            })
            .unwrap_or_default();
        page = page.replacen(SUBNAV_MARKER, &subnav, 1);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(page))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::carry::tests::{now, pairs};
    use tollgate_control::accounts::Grant;
    use uuid::Uuid;

    fn hrefs(links: &[NavLink]) -> Vec<(&str, &str, bool)> {
        links
            .iter()
            .map(|l| (l.label, l.href.as_str(), l.active))
            .collect()
    }

    #[test]
    fn the_areas_carry_what_each_home_reads() {
        let ada = Identity::user(
            Uuid::nil(),
            "ada@example.com",
            "Ada",
            vec![
                Grant::new(Some("acme"), Role::Sre),
                Grant::new(Some("globex"), Role::Finance),
            ],
            "t".into(),
        );
        let query = pairs(&[
            ("range", "6h"),
            ("provider", "openai"),
            ("group_by", "model"),
            ("org", "globex"),
        ]);
        let nav = Nav::for_identity(Some(&ada), "/sre/latency", &query, now());
        assert_eq!(
            hrefs(&nav.links),
            [
                ("Overview", "/overview?org=globex", false),
                (
                    "SRE",
                    "/sre/latency?range=6h&org=globex&provider=openai&group_by=model",
                    true
                ),
                (
                    "Finance",
                    "/finance/cost?from=2026-03-15&to=2026-03-16&org=globex&provider=openai",
                    false
                ),
            ]
        );
        // The switcher keeps every filter and changes the org.
        let choices: Vec<(&str, &str, bool)> = nav
            .orgs
            .iter()
            .map(|o| (o.name.as_str(), o.href.as_str(), o.current))
            .collect();
        assert_eq!(
            choices,
            [
                (
                    "acme",
                    "/sre/latency?range=6h&provider=openai&group_by=model&org=acme",
                    false
                ),
                (
                    "globex",
                    "/sre/latency?range=6h&provider=openai&group_by=model&org=globex",
                    true
                ),
            ]
        );
        // On a page of one object, the switcher leads to the list.
        let on_budget = Nav::for_identity(Some(&ada), "/finance/budgets/7", &[], now());
        assert_eq!(on_budget.orgs[0].href, "/finance/budgets?org=acme");
    }

    #[test]
    fn the_switcher_leads_from_one_object_to_its_list() {
        for (path, target) in [
            ("/finance/budgets/7", "/finance/budgets"),
            ("/finance/budgets", "/finance/budgets"),
            ("/sre/alerts/rules/12", "/sre/alerts/rules"),
            ("/sre/alerts/rules/12/edit", "/sre/alerts/rules"),
            ("/sre/alerts/rules/new", "/sre/alerts/rules/new"),
            ("/admin/users/invite", "/admin/users/invite"),
            ("/compliance/entries/search/3", "/compliance/search"),
            ("/admin/budgets/4/edit", "/admin/budgets"),
            ("/admin/users/9/grants", "/admin/users"),
            ("/admin/keys/key-1/revoke", "/admin/keys"),
            (
                "/sre/errors/00000000000000ff",
                "/sre/errors/00000000000000ff",
            ),
            ("/overview", "/overview"),
        ] {
            assert_eq!(switch_path(path), target, "{path}");
        }
    }

    #[test]
    fn the_sub_navigations_carry_the_filters_and_mark_the_page() {
        let query = pairs(&[
            ("range", "custom"),
            ("from", "2026-03-01T10:00"),
            ("to", "2026-03-01T11:00"),
            ("team", "search"),
            ("org", "acme"),
        ]);
        let sre = SubNav::for_page("/sre/errors/00000000000000ff", &query, now()).unwrap();
        assert_eq!(sre.label, "SRE pages");
        let window = "range=custom&from=2026-03-01T10%3A00&to=2026-03-01T11%3A00";
        assert_eq!(
            hrefs(&sre.links),
            [
                (
                    "Latency",
                    format!("/sre/latency?{window}&org=acme&team=search").as_str(),
                    false
                ),
                (
                    "Errors",
                    format!("/sre/errors?{window}&org=acme&team=search").as_str(),
                    true
                ),
                (
                    "Breakers",
                    format!("/sre/breakers?{window}&org=acme").as_str(),
                    false
                ),
                (
                    "Alerts",
                    format!("/sre/alerts?{window}&org=acme").as_str(),
                    false
                ),
            ]
        );
        let admin =
            SubNav::for_page("/admin/budgets/7/edit", &pairs(&[("org", "acme")]), now()).unwrap();
        assert_eq!(
            hrefs(&admin.links),
            [
                ("People", "/admin/users?org=acme", false),
                ("API keys", "/admin/keys?org=acme", false),
                ("Budgets", "/admin/budgets?org=acme", true),
                ("Prices", "/admin/prices?org=acme", false),
            ]
        );
        // An entry's page (its link carries the entry's org): the search
        // and the verification of that org.
        let compliance = SubNav::for_page(
            "/compliance/entries/acme%2Fsearch/3",
            &pairs(&[("org", "acme")]),
            now(),
        )
        .unwrap();
        assert_eq!(
            hrefs(&compliance.links),
            [
                ("Search", "/compliance/search?org=acme", false),
                ("Verification", "/compliance/verify?org=acme", false),
            ]
        );
        assert!(SubNav::for_page("/finance/cost", &query, now()).is_none());
        // `/sre` is not `/sreport`.
        assert!(SubNav::for_page("/sreport", &query, now()).is_none());
    }
}
