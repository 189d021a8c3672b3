//! `Origin` parsing (`Origin::parse`), allow-list patterns (`AllowList::add_origin`) and the
//! layer's own header path (`OriginGuardLayer`).
//!
//! Input: up to the first newline, the `Origin` header value; after it, an allow-list
//! pattern (optional).
//!
//! Invariants checked beyond "no panic":
//! - reference: where both `Origin::parse` and `url::Url::parse` accept the value and the
//!   scheme is one the URL Standard gives a tuple origin (`http`, `https`, `ws`, `wss`), our
//!   serialisation equals `Url::origin().ascii_serialization()`;
//! - normalisation is idempotent: the serialisation parses back to the same origin;
//! - matching follows the documented rules: a list holding an origin's own serialisation
//!   allows it; `scheme://*.<parent>` allows a subdomain of `<parent>` and
//!   `scheme://*.<host>` never allows `<host>` itself;
//! - the layer's decision on the raw header (its borrowed, allocation-free path) equals
//!   `AllowList::allows(&Origin::parse(value))` (allowed: 200, refused: 403).
#![no_main]

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{HeaderValue, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::{Service, ServiceBuilder};
use wsguard_origin::{AllowList, ConfigError, Origin, OriginGuardLayer};

fuzz_target!(|data: &[u8]| {
    let (value, pattern) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };

    let text = std::str::from_utf8(value).ok();
    let parsed = text.map(Origin::parse);
    if let Some(Ok(origin)) = &parsed {
        check_origin(text.unwrap_or_default(), origin);
    }

    // The layer against the allow-list, on the raw header.
    let allow = match pattern.map(std::str::from_utf8) {
        Some(Ok(pattern)) => match AllowList::new().add_origin(pattern) {
            Ok(allow) => allow,
            Err(_) => return,
        },
        Some(Err(_)) => return,
        None => AllowList::new()
            .add_origin("https://*.example.com")
            .and_then(|a| a.add_origin("http://localhost:{3000,8080}"))
            .expect("fixed patterns"),
    };
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return;
    };
    let expected = match &parsed {
        Some(Ok(origin)) => allow.allows(origin),
        _ => text == Some("null") && allow.allows_null(),
    };
    let status = call_layer(allow, header);
    let expected = if expected {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    assert_eq!(
        status, expected,
        "the layer disagrees with AllowList::allows"
    );
});

fn check_origin(input: &str, origin: &Origin) {
    let serialized = origin.to_string();
    let again = Origin::parse(&serialized).expect("a serialisation parses");
    assert_eq!(&again, origin, "normalising twice changes the origin");
    assert_eq!(again.to_string(), serialized);

    // Reference: the URL Standard, as the `url` crate implements it.
    if matches!(origin.scheme(), "http" | "https" | "ws" | "wss") {
        if let Ok(url) = url::Url::parse(input) {
            assert_eq!(
                url.origin().ascii_serialization(),
                serialized,
                "disagrees with url::Url::origin for {input:?}"
            );
        }
    }

    if !matches!(origin.scheme(), "http" | "https") {
        return; // patterns take http(s) only; ws(s) are refused by design
    }
    match AllowList::new().add_origin(&serialized) {
        Ok(allow) => assert!(allow.allows(origin), "{serialized} does not allow itself"),
        // A host UTS 46 refuses (an invalid `xn--` label) cannot be listed; it is not an
        // origin a browser sends either.
        Err(ConfigError::Idna { .. }) => {}
        Err(err) => panic!("the serialisation {serialized:?} is not a pattern: {err}"),
    }

    let host = origin.host();
    if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return;
    }
    let port = origin.port().map(|p| format!(":{p}")).unwrap_or_default();
    let wildcard = |domain: &str| format!("{}://*.{domain}{port}", origin.scheme());
    if let Ok(itself) = AllowList::new().add_origin(&wildcard(host)) {
        assert!(!itself.allows(origin), "*.{host} allows {host} itself");
    }
    if let Some((_, parent)) = host.split_once('.') {
        if !parent.is_empty() && parent != "." {
            if let Ok(parent_list) = AllowList::new().add_origin(&wildcard(parent)) {
                assert!(parent_list.allows(origin), "*.{parent} refuses {host}");
            }
        }
    }
}

/// Calls the layer with a WebSocket handshake carrying `origin`; the inner service answers
/// 200. The guard decides synchronously, so one poll is enough.
fn call_layer(allow: AllowList, origin: HeaderValue) -> StatusCode {
    let mut service = ServiceBuilder::new()
        .layer(OriginGuardLayer::new(allow))
        .service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let req = Request::builder()
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("origin", origin)
        .body(())
        .expect("a request");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = pin!(service.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => res.status(),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the origin guard waited"),
    }
}
