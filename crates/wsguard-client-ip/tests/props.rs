//! Property tests: resolution never panics; its answer is always either the peer or an
//! address that stands in the headers; from an untrusted peer it is always the peer; and
//! nothing a client writes left of the proxies' part changes the answer.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};

fn element() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| format!("\"[{ip}]:443\"")),
        (any::<std::net::Ipv4Addr>(), any::<u16>()).prop_map(|(ip, p)| format!("{ip}:{p}")),
        (0u8..4, any::<u8>()).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
        Just("::ffff:10.0.0.7".to_owned()),
        Just("unknown".to_owned()),
        Just("_hidden".to_owned()),
        Just(String::new()),
        "[ -~]{0,12}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop::collection::vec(element(), 0..8).prop_map(|v| v.join(","))
}

fn forwarded_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            element(),
            prop::sample::select(vec!["for", "FOR", "by", "proto"]),
        ),
        0..6,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(e, name)| format!("{name}={e};proto=https"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::XForwardedFor),
        (0usize..6).prop_map(Source::XForwardedForHops),
        Just(Source::Forwarded),
        Just(Source::x_real_ip()),
        Just(Source::Peer),
    ]
}

fn peer() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        Just("10.0.0.1".parse::<IpAddr>().unwrap()),
        Just("::ffff:10.0.0.1".parse::<IpAddr>().unwrap()),
        any::<IpAddr>(),
    ]
}

/// Whether `ip` could be read out of `text`, however it is split.
fn mentions(text: &str, ip: IpAddr) -> bool {
    text.split([',', ';', '=', '"', ' ', '[', ']', '\t'])
        .flat_map(|piece| [piece, piece.rsplit_once(':').map_or(piece, |(h, _)| h)])
        .filter_map(|piece| piece.parse::<IpAddr>().ok())
        .any(|candidate| candidate.to_canonical() == ip)
}

fn layer(source: Source) -> ClientIpLayer {
    ClientIpLayer::new()
        .trusted_proxies(TrustedProxies::private())
        .source(source)
        .unwrap()
}

proptest! {
    #[test]
    fn the_result_is_the_peer_or_in_the_headers(
        xff in prop::collection::vec(header_value(), 0..3),
        forwarded in prop::collection::vec(forwarded_value(), 0..3),
        source in source(),
        peer in peer(),
    ) {
        let mut headers = HeaderMap::new();
        for line in &xff {
            let Ok(value) = HeaderValue::from_str(line) else { continue };
            headers.append("x-forwarded-for", value.clone());
            headers.append("x-real-ip", value);
        }
        for line in &forwarded {
            let Ok(value) = HeaderValue::from_str(line) else { continue };
            headers.append("forwarded", value);
        }
        let resolved = layer(source).resolve(peer, &headers);
        let text = format!("{} {}", xff.join(","), forwarded.join(","));
        prop_assert!(
            resolved == peer.to_canonical() || mentions(&text, resolved),
            "{resolved} from {text:?}"
        );
        // Never an IPv4-mapped address.
        prop_assert_eq!(resolved, resolved.to_canonical());
        if !TrustedProxies::private().contains(peer) {
            prop_assert_eq!(resolved, peer.to_canonical());
        }
    }

    /// Whatever a client sends, its bytes end up left of what the proxy appends. When the
    /// proxy records an untrusted client address, that address is the answer.
    #[test]
    fn client_prefixes_never_change_the_answer(
        prefix in prop::collection::vec(any::<u8>(), 0..200),
        client in any::<std::net::Ipv4Addr>(),
        forwarded in any::<bool>(),
        separate_line in any::<bool>(),
    ) {
        let client = IpAddr::V4(client);
        prop_assume!(!TrustedProxies::private().contains(client));
        let (source, name, appended) = if forwarded {
            (Source::Forwarded, "forwarded", format!("for={client}"))
        } else {
            (Source::XForwardedFor, "x-forwarded-for", client.to_string())
        };
        let Ok(prefix_value) = HeaderValue::from_bytes(&prefix) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        if separate_line {
            headers.append(name, prefix_value);
            headers.append(name, HeaderValue::from_str(&appended).unwrap());
        } else {
            let line = [prefix.as_slice(), b", ", appended.as_bytes()].concat();
            headers.append(name, HeaderValue::from_bytes(&line).unwrap());
        }
        // The proxy at 10.0.0.3 appended the client; the load balancer at 10.0.0.2 is the peer.
        headers.append(name, HeaderValue::from_static(if forwarded { "for=10.0.0.3" } else { "10.0.0.3" }));
        prop_assert_eq!(layer(source).resolve("10.0.0.2".parse().unwrap(), &headers), client);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        max_elements in 1usize..8,
        max_bytes in 1usize..64,
    ) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            headers.append(name, value.clone());
            headers.append(name, value.clone());
        }
        let mut single = HeaderMap::new();
        single.insert("x-real-ip", value);
        for source in [
            Source::XForwardedFor,
            Source::XForwardedForHops(1),
            Source::Forwarded,
            Source::x_real_ip(),
        ] {
            for bounded in [false, true] {
                let mut l = layer(source.clone());
                if bounded {
                    l = l.max_header_bytes(max_bytes).unwrap().max_elements(max_elements).unwrap();
                }
                let _ = l.resolve("10.0.0.1".parse().unwrap(), &headers);
                let _ = l.resolve("10.0.0.1".parse().unwrap(), &single);
            }
        }
    }
}
