//! Properties: no input panics, normalising twice changes nothing, matches are sound.

use std::{
    convert::Infallible,
    future::Future,
    net::{Ipv4Addr, Ipv6Addr},
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{header, HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use tower::{service_fn, Layer, ServiceExt};
use wsguard_origin::{AllowList, DomainSet, Origin, OriginGuardLayer};

/// Strings shaped like origins, with the characters that matter to the parser.
fn origin_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z][a-zA-Z0-9+.-]{0,8}://[a-zA-Z0-9._\\-\\[\\]:%@/?#* ]{0,40}",
        "https?://[a-z0-9.]{0,20}(:[0-9]{0,7})?",
        "https?://\\[[0-9a-fA-F:.%]{0,45}\\](:[0-9]{0,6})?",
        "\\PC{0,60}",
    ]
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,14}"
}

/// A host in any case and form a browser could send, or almost.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::collection::vec(label(), 1..5),
            "[a-zA-Z][a-zA-Z0-9-]{0,8}",
            any::<bool>()
        )
            .prop_map(|(labels, tld, dot)| {
                let mut host = labels.join(".") + "." + &tld;
                if dot {
                    host.push('.');
                }
                host
            }),
        any::<u32>().prop_map(|ip| Ipv4Addr::from(ip).to_string()),
        (any::<u128>(), any::<bool>()).prop_map(|(ip, upper)| {
            let addr = Ipv6Addr::from(ip);
            // Any textual form: compressed or every piece written out.
            let text = if upper {
                let pieces: Vec<String> =
                    addr.segments().iter().map(|s| format!("{s:04X}")).collect();
                pieces.join(":")
            } else {
                addr.to_string()
            };
            format!("[{text}]")
        }),
    ]
}

fn origin() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("http"),
        Just("https"),
        Just("HTTPS"),
        Just("Http"),
        Just("ws"),
        Just("wss"),
        Just("chrome-extension"),
    ];
    let port = prop::option::of((0u16..=65535, 0usize..3));
    (scheme, host(), port).prop_map(|(scheme, host, port)| match port {
        Some((port, zeros)) => format!("{scheme}://{host}:{}{port}", "0".repeat(zeros)),
        None => format!("{scheme}://{host}"),
    })
}

/// Hosts around `example.com`: subdomains, look-alikes and suffix tricks, in any case, so
/// that the matching properties see near misses and not only random noise.
fn around_example() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        prop::sample::select(vec!["", "a.", "x.Y.", "evil", "evil-", ".", "a.."])
            .prop_map(String::from),
        label().prop_map(|l| l + "."),
    ];
    let core = prop_oneof![
        Just("example.com"),
        Just("EXAMPLE.COM"),
        Just("Example.Com"),
        Just("example.co"),
        Just("xample.com"),
        Just("example.com.evil"),
    ];
    let suffix = prop_oneof![
        Just(""),
        Just("."),
        Just(".evil"),
        Just("m"),
        Just("-evil.com"),
        Just("%2e"),
        Just(":443"),
        Just(":8443"),
    ];
    (prefix, core, suffix).prop_map(|(p, c, s)| format!("{p}{c}{s}"))
}

/// Origins whose host is [`around_example`].
fn origin_around_example() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![Just("https"), Just("HTTPS"), Just("http"), Just("wss")];
    (scheme, around_example()).prop_map(|(scheme, host)| format!("{scheme}://{host}"))
}

fn handshake(origin: HeaderValue) -> Request<()> {
    let mut req = Request::builder()
        .header(header::UPGRADE, "websocket")
        .body(())
        .unwrap();
    req.headers_mut().insert(header::ORIGIN, origin);
    req
}

/// Polls an always-ready future to completion.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("expected an immediate answer"),
    }
}

proptest! {
    #[test]
    fn parsing_never_panics_and_normalising_twice_changes_nothing(input in origin_like()) {
        if let Ok(origin) = Origin::parse(&input) {
            let serialised = origin.to_string();
            let again = Origin::parse(&serialised).unwrap();
            prop_assert_eq!(&again, &origin);
            prop_assert_eq!(again.to_string(), serialised);
        }
    }

    #[test]
    fn browser_shaped_origins_parse_normalised(input in origin()) {
        let origin = Origin::parse(&input).unwrap();
        let serialised = origin.to_string();
        prop_assert_eq!(Origin::parse(&serialised).unwrap(), origin.clone());
        prop_assert!(!serialised.bytes().any(|b| b.is_ascii_uppercase()), "{}", serialised);
        prop_assert!(serialised.len() <= input.len());
        let default = match origin.scheme() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        prop_assert!(origin.port().is_none() || origin.port() != default);
        prop_assert!(origin.port_or_default().is_some() || default.is_none());
    }

    #[test]
    fn the_layer_never_panics_and_allows_only_listed_origins(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            origin_like().prop_map(String::into_bytes),
            origin().prop_map(String::into_bytes),
            origin_around_example().prop_map(String::into_bytes),
        ],
    ) {
        let allow = AllowList::new()
            .add_origins(["https://*.example.com", "http://localhost:{3000,8080}", "http://[::1]:*"])
            .unwrap();
        let layer = OriginGuardLayer::new(allow.clone());
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            return Ok(());
        };
        let svc = layer.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let res = now(svc.oneshot(handshake(value.clone()))).unwrap();
        if res.status() == StatusCode::OK {
            let origin = Origin::parse(value.to_str().unwrap()).unwrap();
            prop_assert!(allow.allows(&origin));
            let host = origin.host();
            prop_assert!(
                (origin.scheme() == "https" && host.ends_with(".example.com"))
                    || host == "localhost"
                    || host == "[::1]",
                "{}", origin
            );
        } else {
            prop_assert_eq!(res.status(), StatusCode::FORBIDDEN);
            // And nothing the list covers is refused: an https origin on the default port
            // whose host is a proper subdomain of example.com passes.
            if let Ok(origin) = Origin::parse(value.to_str().unwrap_or("")) {
                let covered = origin.scheme() == "https"
                    && origin.port().is_none()
                    && origin.host().strip_suffix(".example.com").is_some_and(|sub| {
                        !sub.is_empty() && sub.split('.').all(|label| !label.is_empty())
                    });
                prop_assert!(!covered, "{} refused", origin);
            }
        }
    }

    #[test]
    fn domain_sets_contain_every_subdomain(labels in prop::collection::vec(label(), 1..4), upper in any::<bool>()) {
        let set = DomainSet::new(["example.com"]).unwrap();
        let host = labels.join(".") + ".example.com";
        let host = if upper { host.to_ascii_uppercase() } else { host };
        prop_assert!(set.contains_host(&host), "{}", host);
        prop_assert!(set.contains_host("example.com"));
    }

    #[test]
    fn wildcards_only_match_proper_subdomains(input in prop_oneof![origin(), origin_around_example()]) {
        let allow = AllowList::new().add_origin("https://*.example.com").unwrap();
        let Ok(origin) = Origin::parse(&input) else {
            // Only the near misses can be malformed (`a..`, `%2e`): nothing to match.
            return Ok(());
        };
        if allow.allows(&origin) {
            prop_assert!(origin.host().ends_with(".example.com"));
            prop_assert!(origin.host().len() > ".example.com".len());
        }
        let sub = Origin::parse(&format!("https://{}.example.com", origin.host().trim_matches(['[', ']', '.']).replace(':', "-"))).ok();
        if let Some(sub) = sub {
            prop_assert!(allow.allows(&sub), "{}", sub);
        }
    }

    #[test]
    fn configuration_never_panics(pattern in origin_like(), domain in origin_like()) {
        let _ = AllowList::new().add_origin(&pattern);
        if let Ok(set) = DomainSet::new([&domain]) {
            // Whatever was accepted contains itself once normalised.
            let entry = set.iter().next().unwrap().to_owned();
            prop_assert!(set.contains_host(&entry), "{:?} -> {}", domain, entry);
        }
    }

    #[test]
    fn domain_sets_match_only_at_label_boundaries(host in prop_oneof![origin_like(), around_example()]) {
        let set = DomainSet::new(["example.com"]).unwrap();
        if set.contains_host(&host) {
            let host = host.to_ascii_lowercase();
            prop_assert!(host == "example.com" || host.ends_with(".example.com"), "{}", host);
        }
    }
}
