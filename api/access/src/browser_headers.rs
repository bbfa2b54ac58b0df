//! Headers every answer of `tollgate api` carries for browsers, unless the
//! handler set its own: its pages, CSVs and JSON hold one org's costs and
//! people, behind a session cookie.
//!
//! - `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors
//!   'none'`: no other page frames ours (a page of a sibling subdomain is
//!   same-site, so `SameSite=Lax` alone would let it frame the admin
//!   forms);
//! - `X-Content-Type-Options: nosniff`: a CSV or JSON is never read as a
//!   page or a script;
//! - `Referrer-Policy: same-origin`: a link out does not carry our paths
//!   and their filters;
//! - `Cache-Control: no-store`: what a signed-in person saw is not kept by
//!   the browser or a shared cache (the static assets set their own).

use axum::http::{header, HeaderName, HeaderValue};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

/// The headers and their values.
pub const BROWSER_HEADERS: [(HeaderName, &str); 5] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CACHE_CONTROL, "no-store"),
];

/// `router` answering with [`BROWSER_HEADERS`] where its handler set none.
pub fn with_browser_headers(router: Router) -> Router {
    BROWSER_HEADERS
        .into_iter()
        .fold(router, |router, (name, value)| {
            router.layer(SetResponseHeaderLayer::if_not_present(
                name,
                HeaderValue::from_static(value),
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn every_answer_carries_them_unless_it_set_its_own() {
        let router = with_browser_headers(
            Router::new()
                .route("/page", get(|| async { "page" }))
                .route(
                    "/static/x.css",
                    get(|| async { ([(header::CACHE_CONTROL, "public, max-age=3600")], "css") }),
                ),
        );
        let page = router
            .clone()
            .oneshot(Request::get("/page").body(Body::empty()).unwrap())
            .await
            .unwrap();
        for (name, value) in BROWSER_HEADERS {
            assert_eq!(page.headers()[&name], value, "{name}");
        }
        let css = router
            .oneshot(Request::get("/static/x.css").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(css.headers()[header::CACHE_CONTROL], "public, max-age=3600");
        assert_eq!(css.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
