//! A client that is always signed in: a small forwarder in front of
//! `tollgate api` that adds `Authorization: Bearer <key>` to every request
//! that has none (as a script or a browser extension with an API key
//! would). Tests of reports and pages reach the server through it as an
//! admin of every org; tests of sign-in itself use the server directly
//! (`TestEnv::direct_api_url`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;

/// Start a forwarder to `target` adding `key`; returns its base URL. It
/// runs on its own thread and runtime, so a test that blocks its own
/// runtime (Chromium run synchronously) does not stall it.
pub fn forward_with_key(target: String, key: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let app = axum::Router::new().fallback(move |request: Request| {
                let (client, target, key) = (client.clone(), target.clone(), key.clone());
                async move { forward(&client, &target, &key, request).await }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let address = rx.recv().unwrap();
    format!("http://{address}")
}

async fn forward(client: &reqwest::Client, target: &str, key: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut outgoing = client
        .request(parts.method.clone(), format!("{target}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST {
            outgoing = outgoing.header(name, value);
        }
    }
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        outgoing = outgoing.bearer_auth(key);
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(err) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("forwarder: {err}")))
                .unwrap()
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}
