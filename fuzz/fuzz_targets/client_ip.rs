//! `X-Forwarded-For`, `Forwarded` and single-value header resolution
//! (`ClientIpLayer::resolve`), with the caps of the layer.
//!
//! Input: text lines. The first line is the configuration, `<source> [peer] [max_elements]
//! [max_header_bytes]`, where `<source>` is `xff`, `hops<N>`, `fwd`, `real` (X-Real-IP) or
//! `peer`; anything unreadable falls back to a default, so every input runs. Every further
//! line is one header line of the source's header (for `real`, two lines are a duplicated
//! header). The trusted proxies are fixed: `10.0.0.0/8`, `127.0.0.1/32`, `2001:db8:cafe::/48`,
//! `198.51.100.17/32`, `203.0.113.60/32` (the networks of the RFC 7239 and nginx examples).
//!
//! Invariants checked beyond "no panic":
//! - the resolved address is the peer (IPv4-mapped peers as IPv4) or an address written in
//!   the source's header lines (found by a loose scan of the bytes);
//! - an untrusted peer, `Source::Peer` and `hops0` always resolve to the peer;
//! - on "clean" input (ASCII addresses, `ip:port` and commas only, under both caps), the
//!   result equals a model of the documented walk: elements right to left, empty ones
//!   skipped, trusted ones skipped (or the N-th for hops), garbage stops at the last good
//!   address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};

const TRUSTED: [&str; 5] = [
    "10.0.0.0/8",
    "127.0.0.1/32",
    "2001:db8:cafe::/48",
    "198.51.100.17/32",
    "203.0.113.60/32",
];

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let config = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("");
    let mut words = config.split(' ');
    let source = match words.next().unwrap_or("") {
        "fwd" => Source::Forwarded,
        "real" => Source::x_real_ip(),
        "peer" => Source::Peer,
        w if w.starts_with("hops") => {
            Source::XForwardedForHops(w[4..].parse::<usize>().unwrap_or(1).min(64))
        }
        _ => Source::XForwardedFor,
    };
    let peer: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let max_elements = words.next().and_then(|w| w.parse::<usize>().ok());
    let max_bytes = words.next().and_then(|w| w.parse::<usize>().ok());

    let trusted = TrustedProxies::new()
        .add_cidrs(TRUSTED)
        .expect("fixed networks");
    let mut layer = ClientIpLayer::new().trusted_proxies(trusted.clone());
    if let Some(max) = max_elements {
        match layer.clone().max_elements(max) {
            Ok(l) => layer = l,
            Err(_) => return,
        }
    }
    if let Some(max) = max_bytes {
        match layer.clone().max_header_bytes(max) {
            Ok(l) => layer = l,
            Err(_) => return,
        }
    }
    let Ok(layer) = layer.source(source.clone()) else {
        return; // hops over the element cap: refused at configuration
    };

    let name: Option<HeaderName> = source.header_name().cloned();
    let mut headers = HeaderMap::new();
    let mut values: Vec<&[u8]> = Vec::new();
    for line in lines {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue; // not a value hyper would hand over
        };
        if let Some(name) = &name {
            headers.append(name.clone(), value);
            values.push(line);
        }
    }
    // A header the source does not read, which must never be read.
    headers.append("x-real-ip-decoy", HeaderValue::from_static("192.0.2.99"));

    let resolved = layer.resolve(peer, &headers);
    let canonical_peer = peer.to_canonical();

    if !trusted.contains(canonical_peer)
        || source == Source::Peer
        || source == Source::XForwardedForHops(0)
    {
        assert_eq!(
            resolved, canonical_peer,
            "headers read when they must not be"
        );
        return;
    }
    if resolved != canonical_peer {
        assert!(
            values.iter().any(|v| addresses_in(v).contains(&resolved)),
            "{resolved} is neither the peer nor in the headers"
        );
    }
    let limits = (
        max_elements.unwrap_or(wsguard_client_ip::DEFAULT_MAX_ELEMENTS),
        max_bytes.unwrap_or(wsguard_client_ip::DEFAULT_MAX_HEADER_BYTES),
    );
    if let Some(expected) = model(&source, canonical_peer, &values, &trusted, limits) {
        assert_eq!(resolved, expected, "the walk disagrees with the model");
    }
});

/// Every IP address written in `value`: maximal runs of address characters, as a whole or
/// without a `:port` suffix. IPv4-mapped addresses come back as IPv4, as the layer returns
/// them.
fn addresses_in(value: &[u8]) -> Vec<IpAddr> {
    let is_addr = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b':' | b'.');
    let mut found = Vec::new();
    for run in value.split(|b| !is_addr(b)).filter(|r| !r.is_empty()) {
        let Ok(run) = std::str::from_utf8(run) else {
            continue;
        };
        let without_port = run.rsplit_once(':').map(|(host, _)| host);
        for candidate in [Some(run), without_port].into_iter().flatten() {
            if let Ok(ip) = candidate.parse::<IpAddr>() {
                found.push(ip.to_canonical());
            }
        }
    }
    found
}

/// The documented walk on clean input, `None` when the input is not clean (quotes,
/// brackets, Forwarded syntax, caps reached), where only the weaker checks apply.
fn model(
    source: &Source,
    peer: IpAddr,
    values: &[&[u8]],
    trusted: &TrustedProxies,
    (max_elements, max_bytes): (usize, usize),
) -> Option<IpAddr> {
    let hops = match source {
        Source::XForwardedFor => None,
        Source::XForwardedForHops(n) => Some(*n),
        _ => return None,
    };
    let clean = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b',' | b' ');
    if !values.iter().all(|v| v.iter().all(clean)) {
        return None;
    }
    // Right to left over all lines, last line first.
    let elements: Vec<&[u8]> = values
        .iter()
        .rev()
        .flat_map(|v| v.split(|&b| b == b',').rev())
        .collect();
    // Each element costs its length and a separator; stay well inside both caps.
    let bytes: usize = elements.iter().map(|e| e.len() + 1).sum();
    if elements.len() >= max_elements || bytes >= max_bytes {
        return None;
    }
    let mut last = peer;
    let mut addresses = 0;
    for element in elements {
        let element = std::str::from_utf8(element).ok()?.trim_matches(' ');
        if element.is_empty() {
            continue;
        }
        let Some(ip) = node(element) else {
            return Some(last);
        };
        last = ip;
        addresses += 1;
        let done = match hops {
            Some(n) => addresses >= n,
            None => !trusted.contains(ip),
        };
        if done {
            break;
        }
    }
    Some(last)
}

/// `ip` or `ipv4:port` (a port of 1 to 5 digits, at most 65535), as the crate docs list.
fn node(element: &str) -> Option<IpAddr> {
    if let Ok(ip) = element.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, port) = element.split_once(':')?;
    let port_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok();
    if !port_ok {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}
