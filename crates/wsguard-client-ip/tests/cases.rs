//! The resolution rules as a table: each row names its source.

use http::{HeaderMap, HeaderName, HeaderValue};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};

struct Case {
    /// Where the row comes from.
    source_of_case: &'static str,
    trusted: &'static str,
    source: Source,
    peer: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expected: &'static str,
}

fn xff() -> Source {
    Source::XForwardedFor
}

fn header(name: &'static str) -> Source {
    Source::SingleHeader(HeaderName::from_static(name))
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    // nginx-tests realip.t: set_real_ip_from 127.0.0.1/32 and 10.0.1.0/24, peer 127.0.0.1.
    const NGINX: &str = "127.0.0.1/32, 10.0.1.0/24";
    // The Envoy docs, "x-forwarded-for" section, examples 1-4.
    vec![
        Case { source_of_case: "nginx realip.t 'realip'", trusted: NGINX, source: Source::x_real_ip(), peer: "127.0.0.1", headers: &[("x-real-ip", "192.0.2.1")], expected: "192.0.2.1" },
        Case { source_of_case: "nginx realip.t 'realip custom'", trusted: NGINX, source: header("x-real-ip-custom"), peer: "127.0.0.1", headers: &[("x-real-ip-custom", "192.0.2.1")], expected: "192.0.2.1" },
        Case { source_of_case: "nginx realip.t 'realip multi' (recursive off = one hop)", trusted: NGINX, source: Source::XForwardedForHops(1), peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.0.1, 192.0.2.1")], expected: "192.0.2.1" },
        Case { source_of_case: "nginx realip.t 'realip recursive off'", trusted: NGINX, source: Source::XForwardedForHops(1), peer: "127.0.0.1", headers: &[("x-forwarded-for", "192.0.2.1, 10.0.1.1, 127.0.0.1")], expected: "127.0.0.1" },
        Case { source_of_case: "nginx realip.t 'realip recursive on'", trusted: NGINX, source: xff(), peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.1.1, 192.0.2.1, 127.0.0.1")], expected: "192.0.2.1" },
        Case { source_of_case: "nginx realip.t 'realip multi xff recursive off'", trusted: NGINX, source: Source::XForwardedForHops(1), peer: "127.0.0.1", headers: &[("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "127.0.0.1, 10.0.1.1")], expected: "10.0.1.1" },
        Case { source_of_case: "nginx realip.t 'realip multi xff recursive on'", trusted: NGINX, source: xff(), peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.1.1"), ("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "127.0.0.1")], expected: "192.0.2.1" },
        Case { source_of_case: "nginx realip docs: every address trusted -> the leftmost", trusted: NGINX, source: xff(), peer: "127.0.0.1", headers: &[("x-forwarded-for", "10.0.1.7, 10.0.1.1, 127.0.0.1")], expected: "10.0.1.7" },
        Case { source_of_case: "nginx realip docs: untrusted peer, header ignored", trusted: NGINX, source: xff(), peer: "192.0.2.99", headers: &[("x-forwarded-for", "198.51.100.1")], expected: "192.0.2.99" },

        Case { source_of_case: "Envoy XFF example 1: edge, 0 trusted hops", trusted: "0.0.0.0/0", source: Source::XForwardedForHops(0), peer: "192.0.2.5", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1")], expected: "192.0.2.5" },
        Case { source_of_case: "Envoy XFF example 2: internal, use_remote_address false, 0 hops (= 1 here)", trusted: "10.0.0.0/8", source: Source::XForwardedForHops(1), peer: "10.11.12.13", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5")], expected: "192.0.2.5" },
        Case { source_of_case: "Envoy XFF example 3: edge, 2 trusted hops", trusted: "0.0.0.0/0", source: Source::XForwardedForHops(2), peer: "192.0.2.5", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1")], expected: "203.0.113.10" },
        Case { source_of_case: "Envoy XFF example 4: internal, use_remote_address false, 2 hops (= 3 here)", trusted: "10.0.0.0/8", source: Source::XForwardedForHops(3), peer: "10.11.12.13", headers: &[("x-forwarded-for", "203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5")], expected: "203.0.113.10" },
        Case { source_of_case: "hop mode: fewer entries than hops -> the leftmost", trusted: "10.0.0.0/8", source: Source::XForwardedForHops(5), peer: "10.0.0.1", headers: &[("x-forwarded-for", "198.51.100.4, 203.0.113.2")], expected: "198.51.100.4" },
        Case { source_of_case: "hop mode: garbage inside the hops stops at the last good", trusted: "10.0.0.0/8", source: Source::XForwardedForHops(3), peer: "10.0.0.1", headers: &[("x-forwarded-for", "198.51.100.4, garbage, 203.0.113.2")], expected: "203.0.113.2" },
        Case { source_of_case: "hop mode: untrusted peer, header ignored", trusted: "10.0.0.0/8", source: Source::XForwardedForHops(1), peer: "203.0.113.9", headers: &[("x-forwarded-for", "198.51.100.4")], expected: "203.0.113.9" },

        Case { source_of_case: "RFC 7239 section 4: for=\"_gazonk\" (obfuscated stops the walk)", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=\"_gazonk\"")], expected: "10.0.0.1" },
        Case { source_of_case: "RFC 7239 section 4: For=\"[2001:db8:cafe::17]:4711\"", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")], expected: "2001:db8:cafe::17" },
        Case { source_of_case: "RFC 7239 section 4: for=192.0.2.60;proto=http;by=203.0.113.43", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")], expected: "192.0.2.60" },
        Case { source_of_case: "RFC 7239 section 4: for=192.0.2.43, for=198.51.100.17", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=198.51.100.17")], expected: "198.51.100.17" },
        Case { source_of_case: "RFC 7239 section 4: the same as two header lines", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43"), ("forwarded", "for=198.51.100.17")], expected: "198.51.100.17" },
        Case { source_of_case: "RFC 7239 section 4 with 198.51.100.17 as a trusted proxy", trusted: "10.0.0.0/8, 198.51.100.17", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=198.51.100.17")], expected: "192.0.2.43" },
        Case { source_of_case: "RFC 7239 section 6.1: for=unknown stops the walk", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=198.51.100.1, for=unknown")], expected: "10.0.0.1" },
        Case { source_of_case: "RFC 7239 section 7.4: for=192.0.2.43, for=\"[2001:db8:cafe::17]\", for=unknown", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=\"[2001:db8:cafe::17]\", for=unknown")], expected: "10.0.0.1" },
        Case { source_of_case: "RFC 7239 section 7.4, proxies trusted up to the unknown hop", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.43, for=\"[2001:db8:cafe::17]\", for=10.0.0.7")], expected: "2001:db8:cafe::17" },
        Case { source_of_case: "RFC 7239 section 4: parameter names are case-insensitive", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "PROTO=https;FOR=192.0.2.60")], expected: "192.0.2.60" },
        Case { source_of_case: "RFC 7239: element without for= stops the walk", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60, proto=https")], expected: "10.0.0.1" },
        Case { source_of_case: "RFC 7239: a quoted comma does not split elements", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60;host=\"a,b\"")], expected: "192.0.2.60" },
        Case { source_of_case: "RFC 7239: unterminated quote -> unusable header", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=\"192.0.2.60")], expected: "10.0.0.1" },
        Case { source_of_case: "RFC 7239: duplicated for= in one element -> unusable", trusted: "10.0.0.0/8", source: Source::Forwarded, peer: "10.0.0.1", headers: &[("forwarded", "for=192.0.2.60;for=198.51.100.1")], expected: "10.0.0.1" },

        Case { source_of_case: "spoofing: XFF from an untrusted peer", trusted: "10.0.0.0/8", source: xff(), peer: "203.0.113.50", headers: &[("x-forwarded-for", "127.0.0.1")], expected: "203.0.113.50" },
        Case { source_of_case: "spoofing: X-Real-IP from an untrusted peer", trusted: "10.0.0.0/8", source: Source::x_real_ip(), peer: "203.0.113.50", headers: &[("x-real-ip", "127.0.0.1")], expected: "203.0.113.50" },
        Case { source_of_case: "spoofing: CF-Connecting-IP straight to the origin", trusted: "173.245.48.0/20", source: Source::cf_connecting_ip(), peer: "203.0.113.50", headers: &[("cf-connecting-ip", "1.1.1.1")], expected: "203.0.113.50" },
        Case { source_of_case: "spoofing: leftmost injection through a trusted proxy", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "1.2.3.4, 203.0.113.50")], expected: "203.0.113.50" },
        Case { source_of_case: "spoofing: injected private address left of the real client", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "10.0.0.99, 203.0.113.50, 10.0.0.2")], expected: "203.0.113.50" },
        Case { source_of_case: "spoofing: garbage element stops at the last good address", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50, <script>, 10.0.0.2")], expected: "10.0.0.2" },
        Case { source_of_case: "spoofing: empty header", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "")], expected: "10.0.0.1" },
        Case { source_of_case: "spoofing: empty element", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50,,")], expected: "10.0.0.1" },
        Case { source_of_case: "spoofing: duplicated single-value header", trusted: "10.0.0.0/8", source: Source::x_real_ip(), peer: "10.0.0.1", headers: &[("x-real-ip", "203.0.113.50"), ("x-real-ip", "198.51.100.1")], expected: "10.0.0.1" },
        Case { source_of_case: "spoofing: list in a single-value header", trusted: "10.0.0.0/8", source: Source::true_client_ip(), peer: "10.0.0.1", headers: &[("true-client-ip", "203.0.113.50, 198.51.100.1")], expected: "10.0.0.1" },
        Case { source_of_case: "single header: Fly-Client-IP with port", trusted: "10.0.0.0/8", source: Source::fly_client_ip(), peer: "10.0.0.1", headers: &[("fly-client-ip", "203.0.113.50:1234")], expected: "203.0.113.50" },
        Case { source_of_case: "single header: missing -> the peer", trusted: "10.0.0.0/8", source: Source::x_real_ip(), peer: "10.0.0.1", headers: &[], expected: "10.0.0.1" },
        Case { source_of_case: "format: ip:port in XFF", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50:8080")], expected: "203.0.113.50" },
        Case { source_of_case: "format: [v6]:port in XFF", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "[2001:db8::5]:8080")], expected: "2001:db8::5" },
        Case { source_of_case: "format: bare IPv6 in XFF", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "2001:db8::5")], expected: "2001:db8::5" },
        Case { source_of_case: "format: IPv4-mapped IPv6 becomes IPv4", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", "::ffff:203.0.113.50")], expected: "203.0.113.50" },
        Case { source_of_case: "format: IPv4-mapped peer is trusted as IPv4", trusted: "10.0.0.0/8", source: xff(), peer: "::ffff:10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50")], expected: "203.0.113.50" },
        Case { source_of_case: "format: IPv6 trusted proxy network", trusted: "2001:db8:ffff::/48", source: xff(), peer: "2001:db8:ffff::1", headers: &[("x-forwarded-for", "2001:db8:1::9")], expected: "2001:db8:1::9" },
        Case { source_of_case: "format: tabs and spaces around elements", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[("x-forwarded-for", " \t203.0.113.50 \t")], expected: "203.0.113.50" },
        Case { source_of_case: "no headers at all -> the peer", trusted: "10.0.0.0/8", source: xff(), peer: "10.0.0.1", headers: &[], expected: "10.0.0.1" },
        Case { source_of_case: "Source::Peer never reads headers", trusted: "10.0.0.0/8", source: Source::Peer, peer: "10.0.0.1", headers: &[("x-forwarded-for", "203.0.113.50")], expected: "10.0.0.1" },
    ]
}

#[test]
fn the_table() {
    let cases = cases();
    assert!(cases.len() >= 40);
    for case in cases {
        let layer = ClientIpLayer::new()
            .trusted_proxies(case.trusted.parse::<TrustedProxies>().unwrap())
            .source(case.source.clone())
            .unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in case.headers {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let resolved = layer.resolve(case.peer.parse().unwrap(), &headers);
        assert_eq!(
            resolved,
            case.expected.parse::<std::net::IpAddr>().unwrap(),
            "{}",
            case.source_of_case
        );
    }
}

#[test]
fn the_walk_is_bounded() {
    let layer = ClientIpLayer::new()
        .trusted_proxies("10.0.0.0/8".parse().unwrap())
        .max_elements(4)
        .unwrap();
    let mut headers = HeaderMap::new();
    // Four elements are examined (10.0.0.2 to 10.0.0.5, all trusted); 203.0.113.50 is the
    // fifth from the right, beyond the cap, so the walk stops at the last good address.
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.50, 10.0.0.5, 10.0.0.4, 10.0.0.3, 10.0.0.2"),
    );
    assert_eq!(
        layer.resolve("10.0.0.1".parse().unwrap(), &headers),
        "10.0.0.5".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn configuration_errors_surface_at_build_time() {
    use wsguard_client_ip::ConfigError;
    assert_eq!(
        ClientIpLayer::new().max_elements(0).unwrap_err(),
        ConfigError::ZeroMaxElements
    );
    assert!(matches!(
        ClientIpLayer::new().source(Source::XForwardedForHops(65)),
        Err(ConfigError::HopsOverLimit {
            hops: 65,
            max_elements: 64
        })
    ));
    assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    assert!(TrustedProxies::new().add_cidr("not-an-ip").is_err());
    let t = TrustedProxies::new().add_cidr("192.0.2.7").unwrap();
    assert!(t.contains("192.0.2.7".parse().unwrap()) && !t.contains("192.0.2.8".parse().unwrap()));
}
