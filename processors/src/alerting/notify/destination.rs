//! Where a delivery may connect, by the policy of
//! `tollgate_control::alerts::reach` (public addresses only, unless the
//! operator listed the host in `alerting.receiver_private_hosts`), which
//! also judges a receiver when it is saved.
//!
//! The check is made again where the connection is made: a host name is resolved
//! by [`PublicOnly`], which drops every address that is not public (so a
//! name that resolves to one, or is changed to after the receiver was
//! saved, reaches nothing), and an address written in the URL is checked
//! before the request. Redirects are not followed (a 3xx is the answer).

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
pub use tollgate_control::alerts::reach::{is_public, refused_address, NotPublic, PrivateHosts};

/// Whether `err`, or one of its causes, is the resolver's [`NotPublic`].
pub fn refused_in(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.is::<NotPublic>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A resolver that keeps a name's public addresses only, and fails when it
/// has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            match (public.is_empty(), all.first()) {
                (false, _) => Ok(Box::new(public.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(NotPublic {
                    host,
                    ip: first.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(format!("{host} has no address").into()),
            }
        })
    }
}

/// The clients a delivery goes out through: `any` for the operator's
/// listed hosts, `public` (through [`PublicOnly`]) for every other.
#[derive(Debug, Clone)]
pub struct Clients {
    pub any: reqwest::Client,
    pub public: reqwest::Client,
    pub private_hosts: PrivateHosts,
}

impl Clients {
    pub fn new(
        connect_timeout: std::time::Duration,
        private_hosts: PrivateHosts,
    ) -> Result<Self, reqwest::Error> {
        // No redirect is followed: a public receiver answering 3xx to
        // `http://127.0.0.1:…` would otherwise reach it (an address in a
        // URL is not resolved, so the resolver never sees it), and a
        // receiver that moved should be updated, not chased.
        // Nor through a proxy of the environment (`HTTPS_PROXY`): the
        // resolver would judge the proxy's address, and the proxy resolve
        // the receiver's name unjudged.
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        };
        Ok(Self {
            any: builder().build()?,
            public: builder().dns_resolver(Arc::new(PublicOnly)).build()?,
            private_hosts,
        })
    }

    /// The client for `url`, or why it may not be sent to.
    pub fn for_url(&self, url: &str) -> Result<&reqwest::Client, String> {
        if self.private_hosts.trusts(url) {
            return Ok(&self.any);
        }
        match refused_address(url) {
            Some(why) => Err(why),
            None => Ok(&self.public),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "2001:db8::1",
            "::a9fe:a9fe",
            "fec0::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn listed_hosts_reach_private_addresses_and_others_do_not() {
        let clients = Clients::new(
            std::time::Duration::from_secs(1),
            PrivateHosts::new(&["alertmanager.internal".into(), "10.0.0.5".into()]),
        )
        .unwrap();
        assert!(clients
            .for_url("http://Alertmanager.Internal:9093/")
            .is_ok());
        assert!(clients.for_url("http://10.0.0.5:9093/").is_ok());
        assert_eq!(
            clients
                .for_url("http://127.0.0.1:8123/?query=SELECT%201")
                .unwrap_err(),
            "127.0.0.1 is 127.0.0.1, not a public address; receivers reach private addresses only on the hosts listed in alerting.receiver_private_hosts"
        );
        assert!(clients.for_url("http://[::1]:80/").is_err());
        assert!(clients.for_url("http://169.254.169.254/latest").is_err());
        // A name is judged when it is resolved (PublicOnly).
        assert!(clients.for_url("https://hooks.example.com/x").is_ok());
        let any = Clients::new(
            std::time::Duration::from_secs(1),
            PrivateHosts::new(&["*".into()]),
        )
        .unwrap();
        assert!(any.for_url("http://127.0.0.1:8123/").is_ok());
        // host:port trusts that port only.
        let port = PrivateHosts::new(&["127.0.0.1:9093".into(), "[::1]:9093".into()]);
        assert!(port.trusts("http://127.0.0.1:9093/api/v2/alerts"));
        assert!(!port.trusts("http://127.0.0.1:8123/?query=SELECT%201"));
        assert!(port.trusts("http://[::1]:9093/"));
        assert!(!port.trusts("http://[::1]:8123/"));
        assert!(
            PrivateHosts::new(&["hooks.internal:443".into()]).trusts("https://hooks.internal/x")
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_private_address_reaches_nothing() {
        let name: Name = "localhost".parse().unwrap();
        let err = PublicOnly.resolve(name).await.err().unwrap();
        assert!(refused_in(err.as_ref()), "{err}");
        let err = err.to_string();
        assert!(err.starts_with("localhost is "), "{err}");
        assert!(err.contains("not a public address"), "{err}");
    }

    /// A receiver's 3xx is its answer: the redirect's target (here another
    /// loopback listener) is never asked, so a public receiver cannot send
    /// the evaluator to a private address.
    #[tokio::test]
    async fn a_redirect_is_the_answer_not_followed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let asked = Arc::new(AtomicBool::new(false));
        let seen = asked.clone();
        tokio::spawn(async move {
            if target.accept().await.is_ok() {
                seen.store(true, Ordering::SeqCst);
            }
        });
        let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = redirector.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = redirector.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target_addr}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let clients = Clients::new(
            std::time::Duration::from_secs(5),
            PrivateHosts::new(&["127.0.0.1".into()]),
        )
        .unwrap();
        let url = format!("http://{addr}/hook");
        let client = clients.for_url(&url).unwrap();
        let answer = client.post(&url).body("{}").send().await.unwrap();
        assert_eq!(answer.status(), 307);
        // A client that follows redirects returns only after the target.
        assert!(!asked.load(Ordering::SeqCst));
    }
}
