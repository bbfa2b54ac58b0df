//! A TCP proxy in front of a server (ClickHouse, in the fault tests) that a
//! test can break two ways:
//!
//! - [`TcpProxy::cut`]: every open connection is dropped (the client sees
//!   a reset or an end of stream) and new ones are refused until
//!   [`TcpProxy::restore`];
//! - [`TcpProxy::freeze`]: every open connection goes silent for good
//!   without being closed (nothing forwarded either way, no FIN, no RST:
//!   a network path that started dropping everything), and new ones are
//!   accepted and held silent too, until [`TcpProxy::thaw`], after which
//!   new connections are forwarded again while the frozen ones stay dead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

pub struct TcpProxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    frozen: watch::Sender<bool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

/// Returns once `frozen` holds `true` (never, if its sender is gone).
async fn until_frozen(mut frozen: watch::Receiver<bool>) {
    loop {
        if *frozen.borrow_and_update() {
            return;
        }
        if frozen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl TcpProxy {
    /// Listen on a free port of 127.0.0.1, forwarding to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let (frozen, frozen_rx) = watch::channel(false);
        let connections = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let accept = tokio::spawn({
            let (open, connections) = (open.clone(), connections.clone());
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let frozen = frozen_rx.clone();
                    let task = tokio::spawn(async move {
                        if *frozen.borrow() {
                            // Held open, never answered.
                            std::future::pending::<()>().await;
                        }
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            () = until_frozen(frozen) => {
                                // Both sockets stay open and silent.
                                std::future::pending::<()>().await;
                            }
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Self {
            port,
            open,
            frozen,
            connections,
            accept,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// New connections are forwarded again; the frozen ones stay silent.
    pub fn thaw(&self) {
        // The connections made from here on see `false`; those already
        // frozen have stopped watching.
        self.frozen.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
