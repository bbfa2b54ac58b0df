//! Registering routes with their access rule. Only [`Routes::route`] adds
//! a route, and it wraps it in the gate's check of that rule, so a route
//! cannot be served without one; [`Routes::table`] lists every route with
//! its rule for the test that walks them all.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::Router;
use tollgate_control::accounts::Role;

/// Where a route's org comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgFrom {
    /// The `org` query parameter: the gate fills it in for a caller who
    /// sees only some orgs and answers 404 for one they do not see.
    Query,
    /// Ids in the path: the handler reads the row and checks its org
    /// (`Identity::check_org`), answering 404 for another org's.
    Handler,
    /// Not per-org data (the price catalog, sign-in, static files).
    None,
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Anyone, signed in or not.
    pub public: bool,
    /// Roles that may GET (and HEAD).
    pub read: &'static [Role],
    /// Roles that may use any other method (none: read-only).
    pub write: &'static [Role],
    pub org: OrgFrom,
}

impl Access {
    /// Anyone: sign-in pages, static files, health checks.
    pub const fn public() -> Self {
        Self {
            public: true,
            read: &[],
            write: &[],
            org: OrgFrom::None,
        }
    }

    /// Readable by `roles`; changes need [`Access::write`].
    pub const fn read(roles: &'static [Role]) -> Self {
        Self {
            public: false,
            read: roles,
            write: &[],
            org: OrgFrom::Query,
        }
    }

    pub const fn write(self, roles: &'static [Role]) -> Self {
        Self {
            write: roles,
            ..self
        }
    }

    pub const fn org(self, org: OrgFrom) -> Self {
        Self { org, ..self }
    }

    /// The roles a request with `method` needs.
    pub fn roles_for(&self, method: &axum::http::Method) -> &'static [Role] {
        if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
            self.read
        } else {
            self.write
        }
    }
}

/// One registered route and its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    pub path: String,
    pub access: Access,
    /// The methods it serves (`GET` stands for `HEAD` too), in the order
    /// of [`METHODS`].
    pub methods: Vec<&'static str>,
}

/// The methods a route may serve, as [`served_methods`] names them.
pub const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The methods `router` serves. axum exposes no accessor for them; its
/// `Debug` names each method's endpoint (`None` when there is none), and
/// the unit test below breaks if that ever changes.
fn served_methods<S>(router: &MethodRouter<S>) -> Vec<&'static str> {
    let debug = format!("{router:?}");
    METHODS
        .into_iter()
        .filter(|method| {
            let field = format!("{}: ", method.to_lowercase());
            debug
                .split_once(&field)
                .is_some_and(|(_, rest)| !rest.starts_with("None"))
        })
        .collect()
}

/// A function every request of some routes goes through ([`Routes::through`]).
pub type Middleware =
    fn(Request, Next) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A router whose every route has an access rule.
pub struct Routes<S = ()> {
    router: Router<S>,
    table: Vec<RouteAccess>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Add `path` served by `methods` under `access`.
    pub fn route(mut self, path: &str, access: Access, methods: MethodRouter<S>) -> Self {
        let served = served_methods(&methods);
        let guarded = methods.layer(axum::middleware::from_fn_with_state(access, enforce));
        self.router = self.router.route(path, guarded);
        self.table.push(RouteAccess {
            path: path.to_string(),
            access,
            methods: served,
        });
        self
    }

    /// Both sets of routes.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every route added so far served through `middleware` (as
    /// `axum::middleware::from_fn` runs it), outside its access rule and
    /// inside the gate; routes merged later are not.
    pub fn through(mut self, middleware: Middleware) -> Self {
        self.router = self.router.layer(axum::middleware::from_fn(middleware));
        self
    }

    /// Every route with its rule.
    pub fn table(&self) -> &[RouteAccess] {
        &self.table
    }

    /// The router, with `state` given to its handlers, and the table.
    pub fn with_state<S2>(self, state: S) -> Routes<S2>
    where
        S2: Clone + Send + Sync + 'static,
    {
        Routes {
            router: self.router.with_state(state),
            table: self.table,
        }
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }

    /// The router and the table, for the binary (which keeps the table to
    /// list routes) and tests.
    pub fn into_parts(self) -> (Router<S>, Vec<RouteAccess>) {
        (self.router, self.table)
    }
}

async fn enforce(State(access): State<Access>, request: Request, next: Next) -> Response {
    crate::gate::enforce(access, request, next).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    #[test]
    fn the_table_names_the_methods_each_route_serves() {
        let routes: Routes = Routes::new()
            .route(
                "/a/{id}",
                Access::read(&[Role::Admin]),
                get(|| async {}).put(|| async {}).delete(|| async {}),
            )
            .route("/b", Access::public(), post(|| async {}))
            .route(
                "/c",
                Access::public(),
                get(|| async {}).patch(|| async {}).options(|| async {}),
            );
        let methods: Vec<(&str, Vec<&str>)> = routes
            .table()
            .iter()
            .map(|r| (r.path.as_str(), r.methods.clone()))
            .collect();
        assert_eq!(
            methods,
            [
                ("/a/{id}", vec!["GET", "PUT", "DELETE"]),
                ("/b", vec!["POST"]),
                ("/c", vec!["GET", "PATCH", "OPTIONS"]),
            ]
        );
    }
}
