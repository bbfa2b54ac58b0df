//! How the roles serve HTTP: an axum router on hyper's HTTP/1.1
//! connections, with the read timeouts `axum::serve` does not have. A
//! client that never finishes its request headers, or announces a body
//! and stops sending it, would otherwise hold its connection (a socket, a
//! task, the buffers) forever, and a thousand such clients need no key
//! (slowloris).
//!
//! - Headers: hyper's `header_read_timeout`, from the connection's first
//!   byte of a request (or its opening) to the end of the headers; on
//!   expiry the connection is closed.
//! - Body: tower-http's [`RequestBodyTimeoutLayer`], the longest wait for
//!   the next piece of a request's body while a handler reads it; on
//!   expiry the read fails and the handler answers (the ingest API with a
//!   408 naming the setting), and the connection is closed. Responses are
//!   not bounded: the proxy streams long answers.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// The longest a client may take over its request's headers, and to send
/// each next piece of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTimeouts {
    pub headers: Duration,
    pub body: Duration,
}

/// 10 s for the headers (a client sends them at once), 30 s between two
/// pieces of a body.
pub const DEFAULT_READ_TIMEOUTS: ReadTimeouts = ReadTimeouts {
    headers: Duration::from_secs(10),
    body: Duration::from_secs(30),
};

impl Default for ReadTimeouts {
    fn default() -> Self {
        DEFAULT_READ_TIMEOUTS
    }
}

impl ReadTimeouts {
    /// From settings in seconds; 0 takes the default (a server without a
    /// read timeout is the defect this exists for).
    pub fn from_secs(headers: u64, body: u64) -> Self {
        let or = |secs: u64, default: Duration| {
            if secs == 0 {
                default
            } else {
                Duration::from_secs(secs)
            }
        };
        Self {
            headers: or(headers, DEFAULT_READ_TIMEOUTS.headers),
            body: or(body, DEFAULT_READ_TIMEOUTS.body),
        }
    }

    /// `router` with every request body read under [`Self::body`].
    pub fn bound_bodies(&self, router: Router) -> Router {
        router.layer(RequestBodyTimeoutLayer::new(self.body))
    }
}

/// Whether a refused read of a request body was [`ReadTimeouts::body`]
/// running out (the error an extractor or a body stream reports).
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Options of [`serve`] beyond the timeouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Set `TCP_NODELAY` on every connection (a server that writes its
    /// responses in pieces: without it Nagle and the client's delayed ACK
    /// add ~40 ms).
    pub nodelay: bool,
}

/// Serve `router` on `listener` until `shutdown` completes, closing any
/// connection whose request headers take longer than `headers_timeout`;
/// then stop accepting and finish the requests in flight. Request bodies
/// are bounded by the router ([`ReadTimeouts::bound_bodies`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    headers_timeout: Duration,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(headers_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of descriptors and the like: wait rather than spin
                // (as `axum::serve` does).
                tracing::error!(%err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if options.nodelay {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
        }
        let connection =
            http1.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Everything the server sent before it closed `stream`, or `None`
    /// while it is still open at `deadline`.
    async fn until_closed(
        stream: &mut tokio::net::TcpStream,
        deadline: Duration,
    ) -> Option<String> {
        let mut got = Vec::new();
        tokio::time::timeout(deadline, async {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn unfinished_headers_and_stalled_bodies_are_cut_off() {
        let timeouts = ReadTimeouts {
            headers: Duration::from_millis(300),
            body: Duration::from_millis(300),
        };
        let router = Router::new().route(
            "/",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            timeouts.bound_bodies(router),
            timeouts.headers,
            ServeOptions { nodelay: true },
            async move {
                let _ = stopped.await;
            },
        ));

        let mut partial = tokio::net::TcpStream::connect(address).await.unwrap();
        partial
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
        stalled
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
            .await
            .unwrap();
        for stream in [&mut partial, &mut silent] {
            assert!(until_closed(stream, Duration::from_secs(10))
                .await
                .is_some());
        }
        // The extractor's read failed: axum answers it with a 4xx, and
        // the connection is closed.
        let answer = until_closed(&mut stalled, Duration::from_secs(10))
            .await
            .expect("a stalled body is still open");
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");

        // A whole request is still served.
        let mut whole = tokio::net::TcpStream::connect(address).await.unwrap();
        whole
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
            )
            .await
            .unwrap();
        let answer = until_closed(&mut whole, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn zero_takes_the_default() {
        assert_eq!(ReadTimeouts::from_secs(0, 0), DEFAULT_READ_TIMEOUTS);
        assert_eq!(
            ReadTimeouts::from_secs(2, 3),
            ReadTimeouts {
                headers: Duration::from_secs(2),
                body: Duration::from_secs(3)
            }
        );
    }
}
