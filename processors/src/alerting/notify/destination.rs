//! Which addresses a receiver may reach. Receivers are created by the
//! admins and SREs of each org, and the evaluator sends from inside the
//! operator's network: a receiver at `http://127.0.0.1:8123/?query=…` made
//! it run a ClickHouse query (a trial did), one at `169.254.169.254` would
//! read a cloud's instance metadata. So a receiver reaches public addresses
//! only, unless its host is one the operator listed in
//! `alerting.receiver_private_hosts` (an Alertmanager on the internal
//! network; `"*"` trusts every host).
//!
//! The check is made where the connection is made: a host name is resolved
//! by [`PublicOnly`], which drops every address that is not public (so a
//! name that resolves to one, or is changed to after the receiver was
//! saved, reaches nothing), and an address written in the URL is checked
//! before the request. Redirects are not followed (a 3xx is the answer).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address of the public internet. IPv4: not
/// loopback, private (RFC 1918), link-local, shared (RFC 6598, `100.64/10`),
/// `0/8`, IETF protocol assignments (`192.0.0/24`), benchmarking
/// (`198.18/15`), documentation, multicast, reserved (`240/4`) or
/// broadcast. IPv6: global unicast (`2000::/3`) only, less documentation
/// (`2001:db8::/32`), Teredo (`2001::/32`) and 6to4 (`2002::/16`), which
/// tunnel to IPv4 addresses this cannot see; an IPv4-mapped address
/// (`::ffff:a.b.c.d`) is judged as its IPv4 address. Everything outside
/// `2000::/3` (loopback, unique local, link- and site-local, NAT64's
/// `64:ff9b::/96`, IPv4-compatible `::a.b.c.d`, multicast) is not public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let [first, second, ..] = v6.segments();
                (first & 0xe000) == 0x2000
                    && !(first == 0x2001 && (second == 0x0db8 || second == 0))
                    && first != 0x2002
            }
        },
    }
}

/// The hosts the operator lets receivers reach on private addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateHosts {
    hosts: Vec<String>,
}

impl PrivateHosts {
    pub fn new(hosts: &[String]) -> Self {
        Self {
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `url`'s host is listed, alone (any port) or as
    /// `host:port` (that port only; `[::1]:9093` for an IPv6 address), or
    /// `"*"` is.
    pub fn trusts(&self, url: &str) -> bool {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return false;
        };
        let Some(host) = parsed.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let bare = host.trim_matches(|c| c == '[' || c == ']');
        let with_port = parsed
            .port_or_known_default()
            .map(|port| format!("{host}:{port}"));
        self.hosts
            .iter()
            .any(|h| h == "*" || h == bare || Some(h) == with_port.as_ref())
    }
}

/// The lowercase host of `url` (an IPv6 address without its brackets);
/// empty when it has none.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| {
                h.trim_matches(|c| c == '[' || c == ']')
                    .to_ascii_lowercase()
            })
        })
        .unwrap_or_default()
}

/// Why `url` may not be sent to, when its host is an address that is not
/// public (a name is judged by [`PublicOnly`] when it is resolved).
pub fn refused_address(url: &str) -> Option<String> {
    let host = host_of(url);
    let ip: IpAddr = host.parse().ok()?;
    (!is_public(ip)).then(|| NotPublic { host, ip }.to_string())
}

/// A receiver's host resolved to an address that is not public: final, not
/// a network error worth retrying ([`refused_in`] finds it in an error's
/// causes).
#[derive(Debug, thiserror::Error)]
#[error("{host} is {ip}, not a public address; receivers reach private addresses only on the hosts listed in alerting.receiver_private_hosts")]
pub struct NotPublic {
    host: String,
    ip: IpAddr,
}

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
