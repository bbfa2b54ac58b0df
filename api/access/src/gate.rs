//! The gate in front of every route ([`enforce`], run by each route that
//! [`crate::Routes`] registered): find the caller, check the route's rule,
//! pin the org, check the form token of browser changes.
//!
//! The binary puts one [`Gate`] in every request's extensions
//! ([`Gate::layer`]); a route reached without one refuses with 500, so a
//! misassembled server fails closed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use futures::future::BoxFuture;
use tollgate_control::accounts::SessionStore;
use tollgate_control::keys::KeyStore;

use crate::identity::{Identity, OrgScope};
use crate::refusal::Refusal;
use crate::routes::Access;

/// The cookie holding a person's session token.
pub const SESSION_COOKIE: &str = "tollgate_session";
/// The form field (or `X-CSRF-Token` header) carrying the session's form token.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form body the gate reads for its token.
const MAX_FORM_BYTES: usize = 4 << 20;

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <api key>`.
    Bearer(String),
    /// The session cookie.
    Session(String),
    None,
}

impl Credentials {
    /// A bearer key wins over a cookie (scripts may run in a browser).
    pub fn of(headers: &HeaderMap) -> Self {
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return Self::Bearer(bearer.to_string());
        }
        match cookie(headers, SESSION_COOKIE) {
            Some(token) if !token.is_empty() => Self::Session(token),
            _ => Self::None,
        }
    }
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_string())
}

/// Finds the identity behind credentials.
pub trait Authenticator: Send + Sync {
    /// `Ok(None)`: the credentials are not (or no longer) valid.
    fn identify<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<Option<Identity>, Refusal>>;
}

/// API keys and sessions in PostgreSQL.
#[derive(Clone)]
pub struct StoreAuthenticator {
    pub keys: Option<KeyStore>,
    pub sessions: Option<SessionStore>,
}

impl Authenticator for StoreAuthenticator {
    fn identify<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<Option<Identity>, Refusal>> {
        Box::pin(async move {
            let unavailable = || {
                Refusal::Unavailable(
                    "sign-in is unavailable: PostgreSQL was unreachable when the server started"
                        .into(),
                )
            };
            match credentials {
                Credentials::None => Ok(None),
                Credentials::Bearer(secret) => {
                    let keys = self.keys.as_ref().ok_or_else(unavailable)?;
                    match keys.verify(secret).await {
                        Ok(key) => Ok(key.map(|k| Identity::key(&k))),
                        Err(err) => {
                            tracing::error!(%err, "cannot check an API key");
                            Err(Refusal::Unavailable("cannot check the API key".into()))
                        }
                    }
                }
                Credentials::Session(token) => {
                    let sessions = self.sessions.as_ref().ok_or_else(unavailable)?;
                    match sessions.resolve(token).await {
                        Ok(signed_in) => Ok(signed_in.map(|s| {
                            Identity::user(
                                s.user.id,
                                &s.user.email,
                                &s.user.display_name,
                                s.grants,
                                s.csrf,
                            )
                        })),
                        Err(err) => {
                            tracing::error!(%err, "cannot read a session");
                            Err(Refusal::Unavailable("cannot check the session".into()))
                        }
                    }
                }
            }
        })
    }
}

/// What every request needs to be checked: put in its extensions by
/// [`Gate::layer`].
#[derive(Clone)]
pub struct Gate {
    authenticator: Arc<dyn Authenticator>,
}

impl Gate {
    pub fn new(authenticator: impl Authenticator + 'static) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
        }
    }

    /// The layer that hands this gate to every route.
    pub fn layer(self) -> axum::Extension<Gate> {
        axum::Extension(self)
    }
}

/// Check `request` against `access`; on success it goes on with the
/// caller's [`Identity`] in its extensions (and, for a route whose org
/// comes from the query, an `org` parameter the caller may see).
pub async fn enforce(access: Access, request: Request, next: Next) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if access.public {
        return next.run(request).await;
    }
    let credentials = Credentials::of(request.headers());
    let browser_get =
        request.method() == Method::GET && !matches!(credentials, Credentials::Bearer(_));
    match admit(access, credentials, request).await {
        Ok((request, identity)) => {
            let mut response = next.run(request).await;
            // For layers outside the route (the pages' navigation).
            response.extensions_mut().insert(identity);
            response
        }
        Err(refusal) => refusal.respond(&path_and_query, browser_get),
    }
}

async fn admit(
    access: Access,
    credentials: Credentials,
    request: Request,
) -> Result<(Request, Identity), Refusal> {
    let Some(gate) = request.extensions().get::<Gate>().cloned() else {
        tracing::error!(path = %request.uri().path(), "a route was reached without the access gate");
        return Err(Refusal::Misconfigured(
            "this server was assembled without its access gate".into(),
        ));
    };
    let mut identity = match credentials {
        Credentials::None => {
            return Err(Refusal::Unauthenticated(
                "sign in first, or send Authorization: Bearer <API key>".into(),
            ))
        }
        ref c => gate.authenticator.identify(c).await?.ok_or_else(|| {
            Refusal::Unauthenticated(match c {
                Credentials::Bearer(_) => "invalid API key: unknown or revoked".into(),
                _ => "the session has ended: sign in again".into(),
            })
        })?,
    };
    let roles = access.roles_for(request.method());
    let needs = || {
        format!(
            "{} may not {} {}: that needs role {}",
            identity.who(),
            verb(request.method()),
            request.uri().path(),
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    let Some(scope) = identity.org_scope(roles) else {
        return Err(Refusal::Forbidden(if roles.is_empty() {
            format!("{} is read-only", request.uri().path())
        } else {
            needs()
        }));
    };
    // Every `org` of the query: a handler may read another one than the
    // gate (`org=&org=globex`), so a second is refused.
    let mut given = query_values(request.uri(), "org");
    if given.len() > 1 {
        return Err(Refusal::InvalidParameter {
            parameter: "org".into(),
            reason: "is given more than once".into(),
        });
    }
    // An empty `org` (`org=`, or a bare `org`) names no org: for a caller
    // of every org it means every org, as before; for a caller limited to
    // some, it is their org as when absent. (It read as "no pinned org",
    // and handlers read that as every org: any org's finance person saw
    // every org's budgets with `?org=`.)
    let requested = given.pop();
    let named = requested.clone().filter(|org| !org.is_empty());
    if let Some(org) = named.as_deref() {
        let doing = format!("{} {}", verb(request.method()), request.uri().path());
        identity.require_org(roles, org, &doing)?;
    }
    let (mut parts, body) = request.into_parts();
    identity.org = match (&scope, named) {
        (_, Some(org)) => Some(org),
        (OrgScope::All, None) => None,
        (OrgScope::Only(orgs), None) => {
            let first = orgs.first().cloned().unwrap_or_default();
            // The query says it too, wherever the route reads its org
            // from: a handler reading the query's empty `org` would
            // otherwise take it for every org.
            if access.org == crate::routes::OrgFrom::Query || requested.is_some() {
                parts.uri = with_query_value(&parts.uri, "org", &first)?;
            }
            Some(first)
        }
    };
    let body = match (&credentials, &identity.csrf) {
        (Credentials::Session(_), Some(csrf)) if !is_safe(&parts.method) => {
            check_csrf(&parts, body, csrf).await?
        }
        _ => body,
    };
    parts.extensions.insert(identity.clone());
    Ok((Request::from_parts(parts, body), identity))
}

fn verb(method: &Method) -> &'static str {
    if is_safe(method) {
        "read"
    } else {
        "change"
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session's form token must come with every change made from a
/// browser: in `X-CSRF-Token`, the urlencoded form's `csrf` field, or (for
/// multipart uploads) the query's `csrf`. The body is read and handed on.
async fn check_csrf(
    parts: &axum::http::request::Parts,
    body: Body,
    want: &str,
) -> Result<Body, Refusal> {
    let forbidden = || {
        Refusal::Forbidden(
            "the form's token does not belong to this session: reload the page and try again"
                .into(),
        )
    };
    // No token at all is another mistake (a script that signed in with a
    // cookie and forgot the header), and is named as such.
    let missing = || {
        Refusal::Forbidden(format!(
            "no form token: a change made with a session cookie must send the session's token \
             (the `X-CSRF-Token` header, or the form's `{CSRF_FIELD}` field)"
        ))
    };
    if let Some(token) = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if same(token, want) {
            Ok(body)
        } else {
            Err(forbidden())
        };
    }
    let in_query = query_values(&parts.uri, CSRF_FIELD).into_iter().next();
    if in_query.as_deref().is_some_and(|t| same(t, want)) {
        return Ok(body);
    }
    // A token sent and wrong, or none sent at all.
    let refused = |sent: bool| if sent { forbidden() } else { missing() };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused(in_query.is_some()));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| Refusal::Forbidden(format!("form larger than {MAX_FORM_BYTES} bytes")))?;
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned());
    match token {
        Some(token) if same(&token, want) => Ok(Body::from(bytes)),
        Some(_) => Err(forbidden()),
        None => Err(refused(in_query.is_some())),
    }
}

/// Whether two tokens are equal, compared in full whatever the first
/// difference (no timing hint of how much of a guess was right).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn query_values(uri: &Uri, name: &str) -> Vec<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// `uri` with its query's `name` set to `value` (any `name` it had taken
/// out).
fn with_query_value(uri: &Uri, name: &str, value: &str) -> Result<Uri, Refusal> {
    let others = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != name);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(others);
    query.append_pair(name, value);
    let path_and_query = format!("{}?{}", uri.path(), query.finish());
    path_and_query
        .parse()
        .map_err(|_| Refusal::Misconfigured("cannot pin the request's org".into()))
}
