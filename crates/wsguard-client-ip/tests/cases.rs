//! The resolution rules as a table. Every row names where it comes from:
//!
//! - nginx-tests `realip.t` (nginx/nginx-tests on GitHub): `set_real_ip_from 127.0.0.1/32`
//!   and `10.0.1.0/24`, requests from 127.0.0.1. `real_ip_recursive off` reads one address
//!   from the right, which is `XForwardedForHops(1)` here.
//! - RFC 7239 (`Forwarded`) sections 4, 6, 7.1, 7.4 and 7.5 examples.
//! - The Envoy docs, "HTTP header manipulation", section `x-forwarded-for`, examples 1-6
//!   and 8 (example 7 contradicts the rule stated in the same section and is left out).
//! - Spoofing attempts, and the accepted address forms.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use wsguard_client_ip::{ClientIpLayer, ConfigError, Source, TrustedProxies};

struct Case {
    /// Where the row comes from.
    from: &'static str,
    trusted: &'static str,
    source: Source,
    peer: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expected: &'static str,
}

const XFF: Source = Source::XForwardedFor;
const FWD: Source = Source::Forwarded;
const fn hops(n: usize) -> Source {
    Source::XForwardedForHops(n)
}
fn header(name: &'static str) -> Source {
    Source::SingleHeader(HeaderName::from_static(name))
}

/// nginx-tests realip.t.
const NGINX: &str = "127.0.0.1/32, 10.0.1.0/24";

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // nginx-tests realip.t
        Case { from: "nginx realip.t 'realip'", trusted: NGINX, source: Source::x_real_ip(), peer: "127.0.0.1", headers: &[("x-real-ip", "192.0.2.1")], expected: "192.0.2.1" },
        Case { from: "nginx realip.t 'realip custom'", trusted: NGINX, source: header("x-real-ip-custom"), peer: "127.0.0.1", headers: &[("x-real-ip-custom", "192.0.2.1")], expected: "192.0.2.1" },
        Case { from: "nginx realip.t 'realip multi' (recursive off)", trusted: NGINX, source: hops(1), peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.0.1, 192.0.2.1")], expected: "192.0.2.1" },
        Case { from: "nginx realip.t 'realip recursive off'", trusted: NGINX, source: hops(1), peer: "127.0.0.1", headers: &[("x-forwarded-for", "192.0.2.1, 10.0.1.1, 127.0.0.1")], expected: "127.0.0.1" },
        Case { from: "nginx realip.t 'realip recursive on'", trusted: NGINX, source: XFF, peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.1.1, 192.0.2.1, 127.0.0.1")], expected: "192.0.2.1" },
        Case { from: "nginx realip.t 'realip multi xff recursive off'", trusted: NGINX, source: hops(1), peer: "127.0.0.1", headers: &[("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "127.0.0.1, 10.0.1.1")], expected: "10.0.1.1" },
        Case { from: "nginx realip.t 'realip multi xff recursive on'", trusted: NGINX, source: XFF, peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.1.1"), ("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "127.0.0.1")], expected: "192.0.2.1" },
        Case { from: "nginx realip.t 'realip var http empty' (header absent)", trusted: NGINX, source: Source::x_real_ip(), peer: "127.0.0.1", headers: &[], expected: "127.0.0.1" },
        Case { from: "nginx realip.t 'realip var arg invalid'", trusted: NGINX, source: Source::x_real_ip(), peer: "127.0.0.1", headers: &[("x-real-ip", "not-an-ip")], expected: "127.0.0.1" },
        Case { from: "nginx ngx_http_get_forwarded_addr_internal: every address trusted, the leftmost", trusted: NGINX, source: XFF, peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.1.7, 10.0.1.1, 127.0.0.1")], expected: "10.0.1.7" },
        Case { from: "nginx realip docs: header from an untrusted peer is ignored", trusted: NGINX, source: XFF, peer: "192.0.2.99", headers: &[("x-forwarded-for", "198.51.100.1")], expected: "192.0.2.99" },

        // Envoy docs, x-forwarded-for. use_remote_address false with N hops is N + 1 here.
        Case { from: "Envoy example 1: edge, use_remote_address, 0 hops", trusted: "0.0.0.0/0", source: hops(0), peer: "192.0.2.5", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1")], expected: "192.0.2.5" },
        Case { from: "Envoy example 2: internal, no use_remote_address, 0 hops", trusted: "10.0.0.0/8", source: hops(1), peer: "10.11.12.13", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5")], expected: "192.0.2.5" },
        Case { from: "Envoy example 3: edge, use_remote_address, 2 hops", trusted: "0.0.0.0/0", source: hops(2), peer: "192.0.2.5", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1")], expected: "203.0.113.10" },
        Case { from: "Envoy example 4: internal, no use_remote_address, 2 hops", trusted: "10.0.0.0/8", source: hops(3), peer: "10.11.12.13", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5")], expected: "203.0.113.10" },
        Case { from: "Envoy example 5: internal client, no XFF", trusted: "10.0.0.0/8", source: hops(1), peer: "10.20.30.40", headers: &[], expected: "10.20.30.40" },
        Case { from: "Envoy example 6: proxied by another Envoy", trusted: "10.0.0.0/8", source: hops(1), peer: "10.20.30.50", headers: &[("x-forwarded-for", "10.20.30.40")], expected: "10.20.30.40" },
        Case { from: "Envoy example 8: two trusted CIDRs (recursive)", trusted: "192.0.2.0/24, 198.51.100.0/24", source: XFF, peer: "192.0.2.5", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 198.51.100.1")], expected: "203.0.113.10" },
        Case { from: "hop mode, fewer addresses than hops: the leftmost (Envoy: the peer; documented)", trusted: "10.0.0.0/8", source: hops(5), peer: "10.0.0.1", headers: &[("x-forwarded-for", "198.51.100.4, 203.0.113.2")], expected: "198.51.100.4" },
        Case { from: "hop mode: garbage before the n-th stops at the last good", trusted: "10.0.0.0/8", source: hops(3), peer: "10.0.0.1", headers: &[("x-forwarded-for", "198.51.100.4, garbage, 203.0.113.2")], expected: "203.0.113.2" },
        Case { from: "hop mode: garbage beyond the n-th is never read", trusted: "10.0.0.0/8", source: hops(1), peer: "10.0.0.1", headers: &[("x-forwarded-for", "garbage, 203.0.113.2")], expected: "203.0.113.2" },
        Case { from: "hop mode: empty elements are not hops", trusted: "10.0.0.0/8", source: hops(2), peer: "10.0.0.1", headers: &[("x-forwarded-for", "198.51.100.4, , 203.0.113.2,")], expected: "198.51.100.4" },
        Case { from: "hop mode: untrusted peer, header ignored", trusted: "10.0.0.0/8", source: hops(1), peer: "203.0.113.9", headers: &[("x-forwarded-for", "198.51.100.4")], expected: "203.0.113.9" },
        Case { from: "hop mode trusts positions: a client reaching the inner proxy directly pads (documented limit)", trusted: "10.0.0.0/8", source: hops(2), peer: "10.0.0.1", headers: &[("x-forwarded-for", "6.6.6.6, 203.0.113.66")], expected: "6.6.6.6" },

        // RFC 7239
        Case { from: "RFC 7239 section 4: for=\"_gazonk\" (obfuscated: stops)", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=\"_gazonk\"")], expected: "10.0.0.1" },
        Case { from: "RFC 7239 section 4: For=\"[2001:db8:cafe::17]:4711\"", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")], expected: "2001:db8:cafe::17" },
        Case { from: "RFC 7239 section 4: for=192.0.2.60;proto=http;by=203.0.113.43", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")], expected: "192.0.2.60" },
        Case { from: "RFC 7239 section 4: for=192.0.2.43, for=198.51.100.17", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=198.51.100.17")], expected: "198.51.100.17" },
        Case { from: "RFC 7239 section 4, with 198.51.100.17 a trusted proxy", trusted: "10.0.0.0/8, 198.51.100.17", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=198.51.100.17")], expected: "192.0.2.43" },
        Case { from: "RFC 7239 section 4: parameter names are case-insensitive", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "PROTO=https;FOR=192.0.2.60")], expected: "192.0.2.60" },
        Case { from: "RFC 7239 section 6.2: for=unknown stops the walk", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=198.51.100.1, for=unknown")], expected: "10.0.0.1" },
        Case { from: "RFC 7239 section 6.3: for=_hidden, for=_SEVKISEK", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=_hidden, for=_SEVKISEK")], expected: "10.0.0.1" },
        Case { from: "RFC 7239 section 7.1: for=192.0.2.43, for=\"[2001:db8:cafe::17]\", for=unknown", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=\"[2001:db8:cafe::17]\", for=unknown")], expected: "10.0.0.1" },
        Case { from: "RFC 7239 section 7.1: the same as three header lines", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43"), ("forwarded", "for=\"[2001:db8:cafe::17]\""), ("forwarded", "for=unknown")], expected: "10.0.0.1" },
        Case { from: "RFC 7239 section 7.4: Forwarded: for=192.0.2.43, for=\"[2001:db8:cafe::17]\"", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=\"[2001:db8:cafe::17]\"")], expected: "2001:db8:cafe::17" },
        Case { from: "RFC 7239 section 7.4: X-Forwarded-For: 192.0.2.43, 2001:db8:cafe::17", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "192.0.2.43, 2001:db8:cafe::17")], expected: "2001:db8:cafe::17" },
        Case { from: "RFC 7239 section 7.4, with 2001:db8:cafe::17 a trusted proxy", trusted: "10.0.0.0/8, 2001:db8:cafe::17", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "192.0.2.43, 2001:db8:cafe::17")], expected: "192.0.2.43" },
        Case { from: "RFC 7239 section 7.5: two proxies, both trusted", trusted: "203.0.113.60, 198.51.100.17", source: FWD, peer: "203.0.113.60", headers: &[("forwarded", "for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com")], expected: "192.0.2.43" },
        Case { from: "RFC 7239 section 4: an element without for= stops the walk", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60, proto=https")], expected: "10.0.0.1" },
        Case { from: "RFC 7239 section 4: two for= in one element is malformed", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60;for=198.51.100.1")], expected: "10.0.0.1" },
        Case { from: "RFC 9110 quoted-string: a quoted comma does not split elements", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60;host=\"a,b\"")], expected: "192.0.2.60" },
        Case { from: "RFC 9110 quoted-string: the proxy's element with an unterminated quote", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=\"192.0.2.60")], expected: "10.0.0.1" },

        // Spoofing attempts
        Case { from: "spoofing: XFF from an untrusted peer", trusted: "10.0.0.0/8", source: XFF, peer: "203.0.113.50", headers: &[("x-forwarded-for", "127.0.0.1")], expected: "203.0.113.50" },
        Case { from: "spoofing: Forwarded from an untrusted peer", trusted: "10.0.0.0/8", source: FWD, peer: "203.0.113.50", headers: &[("forwarded", "for=10.0.0.7")], expected: "203.0.113.50" },
        Case { from: "spoofing: X-Real-IP from an untrusted peer", trusted: "10.0.0.0/8", source: Source::x_real_ip(), peer: "203.0.113.50", headers: &[("x-real-ip", "127.0.0.1")], expected: "203.0.113.50" },
        Case { from: "spoofing: CF-Connecting-IP straight to the origin", trusted: "173.245.48.0/20", source: Source::cf_connecting_ip(), peer: "203.0.113.50", headers: &[("cf-connecting-ip", "1.1.1.1")], expected: "203.0.113.50" },
        Case { from: "spoofing: a header that is not the configured source is never read", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-real-ip", "1.1.1.1"), ("forwarded", "for=1.1.1.1")], expected: "10.0.0.1" },
        Case { from: "spoofing: leftmost injection through a trusted proxy", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "1.2.3.4, 203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "spoofing: injected trusted-range address left of the real client", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "10.0.0.99, 203.0.113.50, 10.0.0.2")], expected: "203.0.113.50" },
        Case { from: "spoofing: the client's own XFF line comes before the proxy's", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "spoofing: injected Forwarded element left of the proxy's", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=1.2.3.4, for=203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "spoofing: client's unterminated quote does not hide the proxy's element", trusted: "10.0.0.0/8", source: FWD, peer: "10.0.0.1", headers: &[("forwarded", "for=\"1.2.3.4, for=203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "spoofing: garbage stops the walk at the last good address", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50, <script>, 10.0.0.2")], expected: "10.0.0.2" },
        Case { from: "spoofing: garbage left of the client is never reached", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "<script>, 203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "spoofing: empty header", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "")], expected: "10.0.0.1" },
        Case { from: "spoofing: whitespace-only header", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", " \t ")], expected: "10.0.0.1" },
        Case { from: "RFC 9110 section 5.6.1 / nginx: empty list elements are skipped", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", ",203.0.113.50,, ,")], expected: "203.0.113.50" },
        Case { from: "spoofing: duplicated single-value header", trusted: "10.0.0.0/8", source: Source::x_real_ip(), peer: "10.0.0.1", headers: &[("x-real-ip", "203.0.113.50"), ("x-real-ip", "198.51.100.1")], expected: "10.0.0.1" },
        Case { from: "spoofing: duplicated CF-Connecting-IP", trusted: "10.0.0.0/8", source: Source::cf_connecting_ip(), peer: "10.0.0.1", headers: &[("cf-connecting-ip", "203.0.113.50"), ("cf-connecting-ip", "203.0.113.50")], expected: "10.0.0.1" },
        Case { from: "spoofing: a list in a single-value header", trusted: "10.0.0.0/8", source: Source::true_client_ip(), peer: "10.0.0.1", headers: &[("true-client-ip", "203.0.113.50, 198.51.100.1")], expected: "10.0.0.1" },
        Case { from: "spoofing: garbage in a single-value header", trusted: "10.0.0.0/8", source: Source::fly_client_ip(), peer: "10.0.0.1", headers: &[("fly-client-ip", "localhost")], expected: "10.0.0.1" },

        // Address forms
        Case { from: "form: single header with a port", trusted: "10.0.0.0/8", source: Source::fly_client_ip(), peer: "10.0.0.1", headers: &[("fly-client-ip", "203.0.113.50:1234")], expected: "203.0.113.50" },
        Case { from: "form: ip:port in XFF", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50:8080")], expected: "203.0.113.50" },
        Case { from: "form: [v6]:port in XFF", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "[2001:db8::5]:8080")], expected: "2001:db8::5" },
        Case { from: "form: bare IPv6 in XFF", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "2001:db8::5")], expected: "2001:db8::5" },
        Case { from: "form: IPv4-mapped IPv6 becomes IPv4", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "::ffff:203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "form: an IPv4-mapped trusted hop is skipped as IPv4", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50, [::ffff:10.0.0.3]:80")], expected: "203.0.113.50" },
        Case { from: "form: an IPv4-mapped peer is trusted as IPv4", trusted: "10.0.0.0/8", source: XFF, peer: "::ffff:10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50")], expected: "203.0.113.50" },
        Case { from: "form: an untrusted IPv4-mapped peer comes back as IPv4", trusted: "10.0.0.0/8", source: XFF, peer: "::ffff:203.0.113.50", headers: &[("x-forwarded-for", "1.1.1.1")], expected: "203.0.113.50" },
        Case { from: "form: IPv6 trusted network", trusted: "2001:db8:ffff::/48", source: XFF, peer: "2001:db8:ffff::1", headers: &[("x-forwarded-for", "2001:db8:1::9")], expected: "2001:db8:1::9" },
        Case { from: "form: tabs and spaces around elements", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", " \t203.0.113.50 \t")], expected: "203.0.113.50" },
        Case { from: "form: a zone id is not an address", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "fe80::1%eth0")], expected: "10.0.0.1" },
        Case { from: "form: two addresses separated by a space are garbage", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50 198.51.100.1")], expected: "10.0.0.1" },
        Case { from: "no headers at all: the peer", trusted: "10.0.0.0/8", source: XFF, peer: "10.0.0.1", headers: &[], expected: "10.0.0.1" },
        Case { from: "Source::Peer never reads headers", trusted: "10.0.0.0/8", source: Source::Peer, peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50")], expected: "10.0.0.1" },
    ]
}

fn layer(trusted: &str, source: Source) -> ClientIpLayer {
    ClientIpLayer::new()
        .trusted_proxies(trusted.parse().unwrap())
        .source(source)
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} rows", cases.len());
    for case in cases {
        let mut headers = HeaderMap::new();
        for (name, value) in case.headers {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let resolved = layer(case.trusted, case.source.clone()).resolve(ip(case.peer), &headers);
        assert_eq!(resolved, ip(case.expected), "{}", case.from);
    }
}

/// Bytes that are not UTF-8 (obs-text, which hyper accepts) in the client's part of a line
/// leave the proxy's part readable.
#[test]
fn non_utf8_on_the_client_side_does_not_hide_the_proxy_part() {
    for (source, value) in [
        (XFF, b"\xff\xfe, 203.0.113.50".as_slice()),
        (FWD, b"for=\"\xff\", for=203.0.113.50".as_slice()),
    ] {
        let mut headers = HeaderMap::new();
        let name = source.header_name().unwrap().clone();
        headers.insert(name, HeaderValue::from_bytes(value).unwrap());
        assert_eq!(
            layer("10.0.0.0/8", source.clone()).resolve(ip("10.0.0.1"), &headers),
            ip("203.0.113.50"),
            "{source:?}"
        );
    }
}

fn xff(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
    headers
}

#[test]
fn the_element_cap_stops_the_walk() {
    let layer = layer("10.0.0.0/8", XFF).max_elements(4).unwrap();
    // Four elements are examined (10.0.0.2 to 10.0.0.5, all trusted); 203.0.113.50 is the
    // fifth from the right, beyond the cap, so the walk stops at the last good address.
    let headers = xff("203.0.113.50, 10.0.0.5, 10.0.0.4, 10.0.0.3, 10.0.0.2");
    assert_eq!(layer.resolve(ip("10.0.0.1"), &headers), ip("10.0.0.5"));
    // Exactly four: read to the end.
    let headers = xff("203.0.113.50, 10.0.0.4, 10.0.0.3, 10.0.0.2");
    assert_eq!(layer.resolve(ip("10.0.0.1"), &headers), ip("203.0.113.50"));
    // Empty elements count against the cap.
    let headers = xff("203.0.113.50,,,,,");
    assert_eq!(layer.resolve(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
}

#[test]
fn the_default_element_cap_is_64() {
    let layer = layer("10.0.0.0/8", XFF);
    let chain = |trusted_hops: usize| {
        let mut v = vec!["203.0.113.50".to_owned()];
        v.extend((0..trusted_hops).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)));
        xff(&v.join(", "))
    };
    assert_eq!(
        layer.resolve(ip("10.0.0.1"), &chain(63)),
        ip("203.0.113.50")
    );
    // 64 trusted hops fill the cap: the client, 65th, is never read.
    assert_ne!(
        layer.resolve(ip("10.0.0.1"), &chain(64)),
        ip("203.0.113.50")
    );
}

#[test]
fn the_byte_cap_stops_the_walk() {
    // "203.0.113.50, 10.0.0.2" is 22 bytes: the rightmost element with its comma
    // (", 10.0.0.2") takes 10, the leftmost 12 more.
    let headers = xff("203.0.113.50, 10.0.0.2");
    let read = |bytes| {
        layer("10.0.0.0/8", XFF)
            .max_header_bytes(bytes)
            .unwrap()
            .resolve(ip("10.0.0.1"), &headers)
    };
    assert_eq!(read(22), ip("203.0.113.50"));
    assert_eq!(read(21), ip("10.0.0.2"));
    assert_eq!(read(10), ip("10.0.0.2"));
    assert_eq!(read(9), ip("10.0.0.1"));

    // A megabyte of padding on the client's side is never looked at: the proxy's element is
    // read, and the walk stops inside the padding when the client itself is trusted.
    let padding = "1".repeat(1 << 20);
    let headers = xff(&format!("{padding}, 10.0.0.9, 10.0.0.2"));
    assert_eq!(
        layer("10.0.0.0/8", XFF).resolve(ip("10.0.0.1"), &headers),
        ip("10.0.0.9")
    );
    // A single-value header over the cap is ignored.
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-real-ip",
        HeaderValue::from_str(&format!("{}203.0.113.50", " ".repeat(100))).unwrap(),
    );
    let single = layer("10.0.0.0/8", Source::x_real_ip());
    assert_eq!(single.resolve(ip("10.0.0.1"), &headers), ip("203.0.113.50"));
    let single = single.max_header_bytes(64).unwrap();
    assert_eq!(single.resolve(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
}

#[test]
fn configuration_errors_surface_at_build_time() {
    assert_eq!(
        ClientIpLayer::new().max_elements(0).unwrap_err(),
        ConfigError::ZeroMaxElements
    );
    assert_eq!(
        ClientIpLayer::new().max_header_bytes(0).unwrap_err(),
        ConfigError::ZeroMaxHeaderBytes
    );
    assert_eq!(
        ClientIpLayer::new().source(hops(65)).unwrap_err(),
        ConfigError::HopsOverLimit {
            hops: 65,
            max_elements: 64
        }
    );
    assert_eq!(
        ClientIpLayer::new()
            .source(hops(10))
            .unwrap()
            .max_elements(9)
            .unwrap_err(),
        ConfigError::HopsOverLimit {
            hops: 10,
            max_elements: 9
        }
    );
    assert!(ClientIpLayer::new().source(hops(64)).is_ok());
    assert_eq!(
        "10.0.0.0/8, 10.0.0.0/33".parse::<TrustedProxies>(),
        Err(ConfigError::InvalidCidr {
            input: "10.0.0.0/33".into()
        })
    );
    assert_eq!(
        ConfigError::InvalidCidr {
            input: "nope".into()
        }
        .to_string(),
        "`nope` is not a CIDR network or an IP address"
    );
}
