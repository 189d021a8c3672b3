//! Property tests: resolution never panics, and its answer is always either the peer or an
//! address that stands in the headers.

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
        Just("10.1.2.3".to_owned()),
        Just("unknown".to_owned()),
        "[ -~]{0,12}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop::collection::vec(element(), 0..8).prop_map(|v| v.join(","))
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::XForwardedFor),
        (0usize..6).prop_map(Source::XForwardedForHops),
        Just(Source::Forwarded),
        Just(Source::x_real_ip()),
    ]
}

/// Every address that could be read out of `text`, however it is split.
fn mentions(text: &str, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    text.split([',', ';', '=', '"', ' ', '[', ']', '\t'])
        .flat_map(|piece| [piece, piece.rsplit_once(':').map_or(piece, |(h, _)| h)])
        .filter_map(|piece| piece.parse::<IpAddr>().ok())
        .any(|candidate| candidate.to_canonical() == ip)
}

proptest! {
    #[test]
    fn the_result_is_the_peer_or_in_the_headers(
        lines in prop::collection::vec(header_value(), 0..3),
        source in source(),
        peer in prop_oneof![Just("10.0.0.1".parse::<IpAddr>().unwrap()), any::<IpAddr>()],
        forwarded in any::<bool>(),
    ) {
        let layer = ClientIpLayer::new()
            .trusted_proxies(TrustedProxies::private())
            .source(source)
            .unwrap();
        let mut headers = HeaderMap::new();
        for line in &lines {
            let Ok(value) = HeaderValue::from_str(&if forwarded { format!("for={line}") } else { line.clone() }) else { continue };
            for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
                headers.append(name, value.clone());
            }
        }
        let resolved = layer.resolve(peer, &headers);
        let text = lines.join(",");
        prop_assert!(resolved == peer.to_canonical() || mentions(&text, resolved), "{resolved} from {text:?}");
        if !TrustedProxies::private().contains(peer) {
            prop_assert_eq!(resolved, peer.to_canonical());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let mut headers = HeaderMap::new();
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            headers.append(name, value.clone());
        }
        for source in [Source::XForwardedFor, Source::XForwardedForHops(3), Source::Forwarded, Source::x_real_ip()] {
            let layer = ClientIpLayer::new().trusted_proxies(TrustedProxies::private()).source(source).unwrap();
            let _ = layer.resolve("10.0.0.1".parse().unwrap(), &headers);
        }
    }
}
