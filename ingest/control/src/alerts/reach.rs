//! Which addresses a receiver may reach. Receivers are created by the
//! admins and SREs of each org, and the evaluator sends from inside the
//! operator's network: a receiver at `http://127.0.0.1:8123/?query=…` made
//! it run a ClickHouse query (a trial did), one at `169.254.169.254` would
//! read a cloud's instance metadata. So a receiver reaches public addresses
//! only, unless its host is one the operator listed in
//! `alerting.receiver_private_hosts` (an Alertmanager on the internal
//! network; `"*"` trusts every host).
//!
//! The same policy judges a receiver twice: when it is saved
//! ([`check_receiver_url`], so the person saving it hears at once), and
//! when the evaluator connects (the processors' `notify::destination`, so
//! a name re-pointed to a private address after the save reaches
//! nothing).

use std::net::IpAddr;
use std::time::Duration;

use tollgate_contract::validate::Rejection;

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
        let Ok(parsed) = url::Url::parse(url) else {
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
    url::Url::parse(url)
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
    pub host: String,
    pub ip: IpAddr,
}

/// How long the save-time check waits for a receiver's name to resolve;
/// a name that does not resolve in time (or at all) is accepted, and
/// judged again at every connection.
const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// Whether a receiver at `url` may be saved: a host the operator listed is
/// accepted; an address written in the URL must be public; a name that
/// resolves must have a public address (one that does not resolve yet is
/// accepted, and judged again when the evaluator connects). The refusal
/// names `url` and the setting that would allow it.
pub async fn check_receiver_url(url: &str, private_hosts: &PrivateHosts) -> Result<(), Rejection> {
    if private_hosts.trusts(url) {
        return Ok(());
    }
    if let Some(why) = refused_address(url) {
        return Err(Rejection::new("url", why));
    }
    let host = host_of(url);
    if host.is_empty() || host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let resolved =
        tokio::time::timeout(RESOLVE_WAIT, tokio::net::lookup_host((host.clone(), 0))).await;
    let Ok(Ok(addresses)) = resolved else {
        return Ok(());
    };
    let all: Vec<IpAddr> = addresses.map(|a| a.ip()).collect();
    // The addresses are not named: a tenant could map the operator's
    // internal names by saving receivers.
    if !all.is_empty() && !all.iter().any(|a| is_public(*a)) {
        return Err(Rejection::new(
            "url",
            format!(
                "{host} resolves to no public address; receivers reach private addresses only on the hosts listed in alerting.receiver_private_hosts"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receiver_to_a_private_address_is_refused_when_saved() {
        let none = PrivateHosts::default();
        for url in [
            "http://127.0.0.1:8123/?query=SELECT%201",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9093/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let refusal = check_receiver_url(url, &none).await.unwrap_err();
            assert_eq!(refusal.field, "url", "{url}");
            assert!(
                refusal.reason.contains("not a public address")
                    && refusal.reason.contains("alerting.receiver_private_hosts"),
                "{url}: {}",
                refusal.reason
            );
        }
        // A name is refused without naming its addresses (a tenant could
        // map the operator's internal names so).
        let by_name = check_receiver_url("http://localhost:8123/", &none)
            .await
            .unwrap_err();
        assert_eq!(
            by_name.reason,
            "localhost resolves to no public address; receivers reach private addresses only on the hosts listed in alerting.receiver_private_hosts"
        );
        assert_eq!(
            check_receiver_url("http://127.0.0.1:8123/", &none).await.unwrap_err().reason,
            "127.0.0.1 is 127.0.0.1, not a public address; receivers reach private addresses only on the hosts listed in alerting.receiver_private_hosts"
        );
        // Public addresses, listed hosts, and names that do not resolve.
        check_receiver_url("https://8.8.8.8/hook", &none)
            .await
            .unwrap();
        check_receiver_url("https://hooks.invalid/x", &none)
            .await
            .unwrap();
        let listed = PrivateHosts::new(&["127.0.0.1:9093".into()]);
        check_receiver_url("http://127.0.0.1:9093/", &listed)
            .await
            .unwrap();
        assert!(check_receiver_url("http://127.0.0.1:8123/", &listed)
            .await
            .is_err());
    }
}
