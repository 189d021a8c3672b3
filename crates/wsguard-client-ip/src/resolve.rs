//! Header sources and the walk that resolves the client IP.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use http::{
    header::{HeaderName, FORWARDED},
    Extensions, HeaderMap,
};

use crate::{
    parse::{forwarded_for, parse_node, trim_ows, Element, Elements},
    TrustedProxies,
};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where the client IP is read from when the peer is a trusted proxy.
///
/// One source per layer: read the header your outermost trusted proxy writes, and nothing
/// else (a second source is a second thing a client can forge). See the
/// [crate docs](crate#sources) for the exact rules of each.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Only the peer address; headers are never read.
    Peer,
    /// `X-Forwarded-For`, all lines as one list, walked right to left, skipping trusted
    /// addresses, stopping at the first untrusted one (nginx `real_ip_recursive on`).
    XForwardedFor,
    /// `X-Forwarded-For` with a fixed number of trusted hops: the `n`-th address from the
    /// right, whatever it is (Envoy's `xff_num_trusted_hops`; `0` is the peer).
    XForwardedForHops(usize),
    /// `Forwarded` (RFC 7239): the `for=` parameter of every element, walked like
    /// [`XForwardedFor`](Self::XForwardedFor).
    Forwarded,
    /// A header your proxy sets to exactly one address, overwriting any value the client
    /// sent: `X-Real-IP`, `CF-Connecting-IP`, `True-Client-IP`, `Fly-Client-IP`, or any
    /// other name.
    SingleHeader(HeaderName),
}

impl Source {
    /// `X-Real-IP` (nginx's `proxy_set_header X-Real-IP $remote_addr`).
    pub fn x_real_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("x-real-ip"))
    }

    /// Cloudflare's `CF-Connecting-IP`.
    pub fn cf_connecting_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("cf-connecting-ip"))
    }

    /// `True-Client-IP` (Akamai, Cloudflare Enterprise).
    pub fn true_client_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("true-client-ip"))
    }

    /// Fly.io's `Fly-Client-IP`.
    pub fn fly_client_ip() -> Self {
        Self::SingleHeader(HeaderName::from_static("fly-client-ip"))
    }

    /// The header this source reads, if any.
    pub fn header_name(&self) -> Option<&HeaderName> {
        match self {
            Self::Peer => None,
            Self::XForwardedFor | Self::XForwardedForHops(_) => Some(&X_FORWARDED_FOR),
            Self::Forwarded => Some(&FORWARDED),
            Self::SingleHeader(name) => Some(name),
        }
    }
}

/// Why a walk stopped before it reached an untrusted address or ran out of elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// An element that is not an address (garbage, `unknown`, `_obfuscated`, an element
    /// without `for=`, an unterminated quote).
    Unparsable,
    /// The element cap was reached.
    TooManyElements,
    /// The byte budget was spent.
    TooManyBytes,
    /// A single-value header appeared more than once.
    Duplicated,
}

impl Stop {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Unparsable => "unparsable element",
            Self::TooManyElements => "element cap reached",
            Self::TooManyBytes => "byte cap reached",
            Self::Duplicated => "single-value header duplicated",
        }
    }
}

/// How a resolution ended, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The peer is not trusted: headers were not read.
    Untrusted,
    /// The peer is trusted, but the source named no address (no header, or
    /// [`Source::Peer`]).
    Peer,
    /// The headers named the client.
    Header,
    /// The walk stopped early; the last good address won.
    Stopped(Stop),
}

/// A user-supplied way to find the peer address in a request's extensions.
pub(crate) type PeerFn = fn(&Extensions) -> Option<SocketAddr>;

/// The resolution rules: where the peer comes from, trusted proxies, source and work bounds.
#[derive(Clone)]
pub(crate) struct Resolver {
    pub(crate) peer_from: Option<PeerFn>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) source: Source,
    pub(crate) max_elements: usize,
    pub(crate) max_header_bytes: usize,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("peer_from", &self.peer_from.map(|_| "fn"))
            .field("trusted", &self.trusted.networks())
            .field("source", &self.source)
            .field("max_elements", &self.max_elements)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish()
    }
}

impl Resolver {
    /// The peer address: the configured function first, then the built-in sources.
    pub(crate) fn peer(&self, extensions: &Extensions) -> Option<SocketAddr> {
        self.peer_from
            .and_then(|peer_from| peer_from(extensions))
            .or_else(|| crate::peer_addr(extensions))
    }

    /// The client IP of a request from `peer` with `headers`.
    pub(crate) fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, Outcome) {
        let peer = peer.to_canonical();
        if !self.trusted.contains(peer) {
            return (peer, Outcome::Untrusted);
        }
        match &self.source {
            Source::Peer => (peer, Outcome::Peer),
            Source::XForwardedFor => {
                let elements = self.elements(headers, &X_FORWARDED_FOR, false);
                self.walk(peer, elements, None, parse_node)
            }
            Source::XForwardedForHops(hops) => {
                if *hops == 0 {
                    return (peer, Outcome::Peer);
                }
                let elements = self.elements(headers, &X_FORWARDED_FOR, false);
                self.walk(peer, elements, Some(*hops), parse_node)
            }
            Source::Forwarded => {
                let elements = self.elements(headers, &FORWARDED, true);
                self.walk(peer, elements, None, |element| {
                    forwarded_for(element).and_then(parse_node)
                })
            }
            Source::SingleHeader(name) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => (peer, Outcome::Peer),
                    // A second copy means a second writer: not only our proxy.
                    (Some(_), Some(_)) => (peer, Outcome::Stopped(Stop::Duplicated)),
                    (Some(value), None) if value.len() > self.max_header_bytes => {
                        (peer, Outcome::Stopped(Stop::TooManyBytes))
                    }
                    (Some(value), None) => match parse_node(value.as_bytes()) {
                        Some(ip) => (ip, Outcome::Header),
                        None => (peer, Outcome::Stopped(Stop::Unparsable)),
                    },
                }
            }
        }
    }

    fn elements<'h>(
        &self,
        headers: &'h HeaderMap,
        name: &HeaderName,
        quoted: bool,
    ) -> Elements<'h> {
        Elements::new(headers.get_all(name).iter(), self.max_header_bytes, quoted)
    }

    /// Walks `elements` (right to left) from a trusted `peer`.
    ///
    /// Empty elements are skipped (RFC 9110 section 5.6.1), but count against the element
    /// cap. Without `hops`, trusted addresses are skipped and the first untrusted one is the
    /// client. With `hops`, the `hops`-th address is the client, whatever it is. An element
    /// that does not parse, the element cap or the byte budget stop the walk: the last good
    /// address wins. Running out of elements leaves the leftmost address (or the peer).
    fn walk<'h>(
        &self,
        peer: IpAddr,
        elements: Elements<'h>,
        hops: Option<usize>,
        parse: impl Fn(&'h [u8]) -> Option<IpAddr>,
    ) -> (IpAddr, Outcome) {
        let mut last = peer;
        let mut outcome = Outcome::Peer;
        let mut addresses = 0;
        for (examined, element) in elements.enumerate() {
            if examined == self.max_elements {
                return (last, Outcome::Stopped(Stop::TooManyElements));
            }
            let Element::Whole(element) = element else {
                return (last, Outcome::Stopped(Stop::TooManyBytes));
            };
            if trim_ows(element).is_empty() {
                continue;
            }
            let Some(ip) = parse(element) else {
                return (last, Outcome::Stopped(Stop::Unparsable));
            };
            last = ip;
            outcome = Outcome::Header;
            addresses += 1;
            let done = match hops {
                Some(hops) => addresses >= hops,
                None => !self.trusted.contains(ip),
            };
            if done {
                break;
            }
        }
        (last, outcome)
    }
}
