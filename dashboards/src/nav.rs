//! One navigation for every page: the areas the signed-in caller may open
//! (Overview, SRE, Finance, Compliance, Admin), the org switcher for people
//! who see several orgs, and sign-out. Links carry the current filters
//! (`org`, `from`, `to`).
//!
//! Pages do not build it: `base.html` holds a marker the [`inject`] layer
//! replaces with the navigation of the identity the gate admitted (it
//! rides on the response), so no page can forget it or show a link its
//! reader may not open.

use askama::Template;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use tollgate_access::{Identity, ADMINS, AUDITORS, COST_READERS, READERS};
use tollgate_control::accounts::Role;

/// The marker in `base.html`.
const MARKER: &str = "<!--tollgate:nav-->";
/// Filters a navigation link carries over.
const CARRIED: [&str; 3] = ["org", "from", "to"];
/// The largest page the layer rewrites.
const MAX_PAGE_BYTES: usize = 32 << 20;

pub struct NavLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

pub struct OrgChoice {
    pub name: String,
    /// The query string selecting it on this page.
    pub query: String,
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

/// SRE pages: the reports' readers and alerting's (finance reads alerts).
const SRE_OR_ALERTS: &[Role] = &[Role::Admin, Role::Sre, Role::Viewer, Role::Finance];

impl Nav {
    /// The navigation of `identity` (none: signed out) on the page at
    /// `path` with query pairs `query`.
    pub fn for_identity(
        identity: Option<&Identity>,
        path: &str,
        query: &[(String, String)],
    ) -> Self {
        let carried: Vec<(String, String)> = query
            .iter()
            .filter(|(k, v)| CARRIED.contains(&k.as_str()) && !v.is_empty())
            .cloned()
            .collect();
        let with_filters = |href: &str| {
            if carried.is_empty() {
                href.to_string()
            } else {
                format!("{href}?{}", encode(&carried))
            }
        };
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
                href: with_filters(home),
                active: path == *prefix || path.starts_with(&format!("{prefix}/")),
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
                        query: format!("?{}", encode(&pairs)),
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
    let identity = parts.extensions.get::<Identity>();
    let nav = Nav::for_identity(identity, &path, &query)
        .render()
        .unwrap_or_else(|err| {
            tracing::error!(%err, "navigation rendering failed");
            String::new()
        });
    let page = page.replacen(MARKER, &nav, 1);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(page))
}
