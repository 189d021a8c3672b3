//! The proxies whose forwarding headers are believed.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::ConfigError;

// `new_assert` in a constant: an invalid preset would fail to compile, never panic at run time.
const LOOPBACK: [IpNet; 2] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
];

const PRIVATE: [IpNet; 4] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16)),
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
    )),
];

const LINK_LOCAL: [IpNet; 2] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16)),
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
    )),
];

/// The networks whose connections may tell the layer who the client is.
///
/// Empty by default: no peer is trusted and forwarding headers are never read. Presets
/// combine with the `add_*` methods, and any network can be added as a CIDR string
/// (checked when the configuration is built) or as an [`IpNet`]:
///
/// ```
/// use wsguard_client_ip::TrustedProxies;
///
/// let trusted = TrustedProxies::private()
///     .add_link_local()
///     .add_cidr("203.0.113.0/24")?
///     .add_cidr("2001:db8:ffff::1")?; // a single address is a /32 or /128
/// assert!(trusted.contains("10.1.2.3".parse()?));
/// assert!(trusted.contains("::ffff:10.1.2.3".parse()?)); // IPv4-mapped counts as IPv4
/// assert!(!trusted.contains("198.51.100.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Trust only what sits in front of you. `private()` trusts every host of your private
/// networks, which is right when anything on them may act as your proxy and wrong when
/// untrusted machines (office clients, other tenants) share them; then list the proxies'
/// addresses instead.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// The IPv4 networks as (network, mask), for a lookup without per-call arithmetic.
    v4: Vec<(u32, u32)>,
    /// The IPv6 networks as (network, mask).
    v6: Vec<(u128, u128)>,
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.nets).finish()
    }
}

impl TrustedProxies {
    /// No trusted proxy.
    pub const fn new() -> Self {
        Self {
            nets: Vec::new(),
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// Loopback: `127.0.0.0/8` and `::1/128`, for a proxy on the same host.
    pub fn loopback() -> Self {
        Self::new().add_loopback()
    }

    /// Private networks and loopback: RFC 1918 (`10.0.0.0/8`, `172.16.0.0/12`,
    /// `192.168.0.0/16`), IPv6 unique local addresses (`fc00::/7`, RFC 4193), `127.0.0.0/8`
    /// and `::1/128`. Right when your proxies sit on your private network (containers,
    /// Kubernetes, a VPC) and nothing else on it sends you traffic.
    ///
    /// Link-local addresses are not included: add them with
    /// [`add_link_local`](Self::add_link_local) when your proxy really connects from one.
    pub fn private() -> Self {
        Self::new().add_private()
    }

    /// Link-local networks: `169.254.0.0/16` and `fe80::/10`.
    ///
    /// Rarely what a proxy connects from, and every machine on the same link has such an
    /// address; kept out of [`private`](Self::private) for that reason.
    pub fn link_local() -> Self {
        Self::new().add_link_local()
    }

    /// Adds the [`loopback`](Self::loopback) networks.
    #[must_use]
    pub fn add_loopback(self) -> Self {
        self.add_nets(LOOPBACK)
    }

    /// Adds the [`private`](Self::private) networks (RFC 1918, `fc00::/7` and loopback).
    #[must_use]
    pub fn add_private(self) -> Self {
        self.add_nets(PRIVATE).add_loopback()
    }

    /// Adds the [`link_local`](Self::link_local) networks.
    #[must_use]
    pub fn add_link_local(self) -> Self {
        self.add_nets(LINK_LOCAL)
    }

    /// Adds a network (`10.0.0.0/8`, `2001:db8::/32`) or a single address (`192.0.2.7`).
    /// Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`); an IPv4-mapped IPv6 network
    /// (`::ffff:10.0.0.0/104`) is stored as the IPv4 network it maps.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidCidr`] when `cidr` is neither.
    pub fn add_cidr(self, cidr: &str) -> Result<Self, ConfigError> {
        let trimmed = cidr.trim();
        let net = trimmed
            .parse::<IpNet>()
            .or_else(|_| trimmed.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| ConfigError::InvalidCidr {
                input: cidr.to_owned(),
            })?;
        Ok(self.add_net(net))
    }

    /// Adds every network of `cidrs`, as [`add_cidr`](Self::add_cidr) does.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidCidr`] for the first entry that is not a network or address.
    pub fn add_cidrs<I, S>(self, cidrs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        cidrs
            .into_iter()
            .try_fold(self, |acc, cidr| acc.add_cidr(cidr.as_ref()))
    }

    /// Adds a network.
    #[must_use]
    pub fn add_net(mut self, net: impl Into<IpNet>) -> Self {
        let net = canonical(net.into().trunc());
        if !self.nets.contains(&net) {
            self.nets.push(net);
            match net {
                IpNet::V4(v4) => self
                    .v4
                    .push((u32::from(v4.network()), u32::from(v4.netmask()))),
                IpNet::V6(v6) => self
                    .v6
                    .push((u128::from(v6.network()), u128::from(v6.netmask()))),
            }
        }
        self
    }

    fn add_nets<const N: usize>(self, nets: [IpNet; N]) -> Self {
        nets.into_iter().fold(self, Self::add_net)
    }

    /// Whether `ip` belongs to a trusted network. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`) are looked up as the IPv4 address they map.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                let ip = u32::from(ip);
                self.v4.iter().any(|&(net, mask)| ip & mask == net)
            }
            IpAddr::V6(ip) => {
                let ip = u128::from(ip);
                self.v6.iter().any(|&(net, mask)| ip & mask == net)
            }
        }
    }

    /// The trusted networks, in the order they were added.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether no network is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// `::ffff:a.b.c.d/n` (n >= 96) as `a.b.c.d/(n - 96)`, so that it matches the canonical
/// (IPv4) form every address is looked up in.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

impl FromStr for TrustedProxies {
    type Err = ConfigError;

    /// Parses a comma-separated list of networks and addresses, as an environment variable
    /// would hold them (`"10.0.0.0/8, 2001:db8::/32"`). Empty entries are skipped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new().add_cidrs(s.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn presets() {
        let private = TrustedProxies::private();
        for inside in [
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
            "fc00::1",
        ] {
            assert!(private.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "172.32.0.1",
            "11.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "2001:db8::1",
            "100.64.0.1",
        ] {
            assert!(!private.contains(ip(outside)), "{outside}");
        }
        let link = TrustedProxies::link_local();
        assert!(link.contains(ip("169.254.169.254")) && link.contains(ip("fe80::1")));
        assert!(!TrustedProxies::new().contains(ip("127.0.0.1")));
        assert!(TrustedProxies::new().is_empty());
    }

    #[test]
    fn contains_agrees_with_ipnet() {
        let t: TrustedProxies =
            "0.0.0.0/0, 10.0.0.0/8, 192.0.2.7/32, 172.16.0.0/12, ::/0, fc00::/7, 2001:db8::1/128"
                .parse()
                .unwrap();
        for prefix_set in [
            TrustedProxies::new(),
            TrustedProxies::private(),
            TrustedProxies::link_local(),
            t,
        ] {
            for addr in [
                "0.0.0.0",
                "255.255.255.255",
                "10.255.255.255",
                "11.0.0.0",
                "172.15.255.255",
                "172.16.0.0",
                "192.0.2.7",
                "192.0.2.8",
                "::",
                "::1",
                "fbff:ffff::1",
                "fc00::",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "fe00::",
                "2001:db8::1",
                "2001:db8::2",
                "::ffff:10.0.0.1",
            ] {
                let ip = ip(addr);
                let expected = prefix_set
                    .networks()
                    .iter()
                    .any(|net| net.contains(&ip.to_canonical()));
                assert_eq!(
                    prefix_set.contains(ip),
                    expected,
                    "{addr} in {prefix_set:?}"
                );
            }
        }
    }

    #[test]
    fn cidrs() {
        let t = TrustedProxies::new()
            .add_cidr(" 10.1.2.3/8 ")
            .unwrap()
            .add_cidr("::ffff:192.0.2.0/120")
            .unwrap()
            .add_cidr("2001:db8::7")
            .unwrap();
        assert_eq!(
            t.networks(),
            &[
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::7/128".parse().unwrap(),
            ]
        );
        assert!(t.contains(ip("192.0.2.9")) && t.contains(ip("::ffff:192.0.2.9")));
        assert!(t.contains(ip("2001:db8::7")) && !t.contains(ip("2001:db8::8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/8/8",
            "10.0.0",
        ] {
            assert_eq!(
                TrustedProxies::new().add_cidr(bad),
                Err(ConfigError::InvalidCidr {
                    input: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
        let parsed: TrustedProxies = "10.0.0.0/8, ,::1".parse().unwrap();
        assert_eq!(parsed.networks().len(), 2);
        assert!("10.0.0.0/8, nope".parse::<TrustedProxies>().is_err());
        // Adding the same network twice keeps one entry.
        assert_eq!(
            TrustedProxies::loopback().add_loopback().networks().len(),
            2
        );
    }
}
