//! Trusted proxies, header sources, and the walk that resolves the client IP.

use std::{fmt, net::IpAddr, str::FromStr};

use http::{header::HeaderName, HeaderMap};
use ipnet::IpNet;

use crate::parse::{forwarded_for, parse_node};

/// The networks whose connections are allowed to tell us who the client is.
///
/// Empty by default: no peer is trusted and forwarding headers are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// A trusted-proxy entry that is neither a CIDR network nor an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCidr(String);

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a CIDR network or an IP address", self.0)
    }
}

impl std::error::Error for InvalidCidr {}

impl TrustedProxies {
    /// No trusted proxy.
    pub const fn new() -> Self {
        Self { nets: Vec::new() }
    }

    /// Loopback: `127.0.0.0/8` and `::1/128` (a proxy on the same host).
    pub fn loopback() -> Self {
        Self::new().with_nets(["127.0.0.0/8", "::1/128"])
    }

    /// Private networks: loopback, RFC 1918 (`10.0.0.0/8`, `172.16.0.0/12`,
    /// `192.168.0.0/16`), unique local IPv6 (`fc00::/7`), and link-local (`169.254.0.0/16`,
    /// `fe80::/10`). Right when every proxy in front of you, and nothing else, sits on your
    /// private network.
    pub fn private() -> Self {
        Self::loopback().with_nets([
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "fc00::/7",
            "fe80::/10",
        ])
    }

    fn with_nets<const N: usize>(mut self, nets: [&str; N]) -> Self {
        // Constant, valid networks.
        self.nets
            .extend(nets.iter().filter_map(|n| n.parse::<IpNet>().ok()));
        self
    }

    /// Adds a network (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
    ///
    /// # Errors
    ///
    /// [`InvalidCidr`] when `cidr` is neither.
    pub fn add_cidr(mut self, cidr: &str) -> Result<Self, InvalidCidr> {
        let net = cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| InvalidCidr(cidr.to_owned()))?;
        self.nets.push(net.trunc());
        Ok(self)
    }

    /// Adds a network.
    pub fn add_net(mut self, net: IpNet) -> Self {
        self.nets.push(net.trunc());
        self
    }

    /// Whether `ip` belongs to a trusted network (IPv4-mapped addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no network is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = InvalidCidr;

    /// Parses a comma-separated list of networks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .try_fold(Self::new(), |acc, cidr| acc.add_cidr(cidr))
    }
}

/// Where the client IP is read from when the peer is a trusted proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Only the peer address; headers are never read.
    Peer,
    /// `X-Forwarded-For`, walked right to left over all its lines, skipping trusted proxies,
    /// stopping at the first untrusted address (nginx `real_ip_recursive on`).
    XForwardedFor,
    /// `X-Forwarded-For` with a fixed number of trusted hops: the address `hops` places
    /// left of the peer (Envoy's `xff_num_trusted_hops` with `use_remote_address: true`).
    XForwardedForHops(usize),
    /// `Forwarded` (RFC 7239), its `for=` nodes walked like `X-Forwarded-For`.
    Forwarded,
    /// A header holding exactly one address, set by the proxy: `X-Real-IP`,
    /// `CF-Connecting-IP`, `True-Client-IP`, `Fly-Client-IP`, ...
    SingleHeader(HeaderName),
}

impl Source {
    /// `X-Real-IP`.
    pub fn x_real_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("x-real-ip"))
    }

    /// Cloudflare's `CF-Connecting-IP`.
    pub fn cf_connecting_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("cf-connecting-ip"))
    }

    /// Akamai's and Cloudflare Enterprise's `True-Client-IP`.
    pub fn true_client_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("true-client-ip"))
    }

    /// Fly.io's `Fly-Client-IP`.
    pub fn fly_client_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("fly-client-ip"))
    }
}

/// How a resolution ended, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The peer is not trusted, or the source is the peer: headers were not read.
    Peer,
    /// The headers named the client.
    Header,
    /// The headers were present but unusable (garbage, duplicated, too long); the walk
    /// stopped at the last good address.
    Stopped,
}

/// The resolution rules: trusted proxies, source and work bounds.
#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    pub(crate) trusted: TrustedProxies,
    pub(crate) source: Source,
    pub(crate) max_elements: usize,
}

impl Resolver {
    /// The client IP of a request from `peer` with `headers`.
    pub(crate) fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, Outcome) {
        let peer = peer.to_canonical();
        if matches!(self.source, Source::Peer) || !self.trusted.contains(peer) {
            return (peer, Outcome::Peer);
        }
        match &self.source {
            Source::Peer => (peer, Outcome::Peer),
            Source::XForwardedFor | Source::XForwardedForHops(_) => {
                let lines = headers.get_all("x-forwarded-for").iter().rev();
                let nodes = lines.flat_map(|line| {
                    // A line that is not UTF-8 is one unparsable element.
                    let text = std::str::from_utf8(line.as_bytes()).unwrap_or("\u{0}");
                    text.rsplit(',').map(parse_node)
                });
                self.walk(peer, nodes)
            }
            Source::Forwarded => {
                let lines = headers
                    .get_all(http::header::FORWARDED)
                    .iter()
                    .map(|v| v.as_bytes());
                match forwarded_for(lines, self.max_elements) {
                    Some(nodes) => self.walk(
                        peer,
                        nodes.into_iter().rev().map(|n| n.and_then(parse_node)),
                    ),
                    None => (peer, Outcome::Stopped),
                }
            }
            Source::SingleHeader(name) => {
                let mut values = headers.get_all(name).iter();
                let (Some(value), None) = (values.next(), values.next()) else {
                    // Missing: the proxy did not set it. Duplicated: someone else added one.
                    let outcome = if headers.contains_key(name) {
                        Outcome::Stopped
                    } else {
                        Outcome::Peer
                    };
                    return (peer, outcome);
                };
                match std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(parse_node)
                {
                    Some(ip) => (ip, Outcome::Header),
                    None => (peer, Outcome::Stopped),
                }
            }
        }
    }

    /// Walks `nodes` (right to left) from a trusted `peer`. In recursive mode it skips
    /// trusted addresses and stops at the first untrusted one; in hop mode it steps exactly
    /// `hops` places. An unparsable node, or the element cap, stops the walk: the last good
    /// address wins. Running out of nodes leaves the leftmost address.
    fn walk(&self, peer: IpAddr, nodes: impl Iterator<Item = Option<IpAddr>>) -> (IpAddr, Outcome) {
        let hops = match self.source {
            Source::XForwardedForHops(hops) => Some(hops),
            _ => None,
        };
        let mut last = peer;
        let mut outcome = Outcome::Peer;
        for (i, node) in nodes.enumerate() {
            if hops.is_some_and(|hops| i >= hops) {
                return (last, outcome);
            }
            if i >= self.max_elements {
                return (last, Outcome::Stopped);
            }
            let Some(ip) = node else {
                return (last, Outcome::Stopped);
            };
            last = ip;
            outcome = Outcome::Header;
            if hops.is_none() && !self.trusted.contains(ip) {
                return (ip, Outcome::Header);
            }
        }
        (last, outcome)
    }
}
