//! Rejections are logged with their cause, normalised values and the peer, never raw input.
//!
//! Its own test binary: tracing caches a callsite's interest per process, and a concurrent
//! test that emits the same events without a subscriber can make a scoped subscriber miss
//! them. Alone in its binary, the capture is deterministic.

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::AtomicUsize, Arc},
    task::{Context, Poll},
};

use http::{header, Request, StatusCode};
use tower::{Layer, ServiceExt};
use wsguard_core::ClientIp;
use wsguard_origin::{AllowList, OriginGuardLayer};
use wsguard_test_kit::{
    logs::Logs,
    service::{counting, handshake},
};

fn allow() -> AllowList {
    AllowList::new()
        .add_origin("https://app.example.com")
        .unwrap()
}

#[test]
fn rejections_are_logged_without_raw_values() {
    let logs = Logs::new();
    tracing::subscriber::with_default(logs.subscriber(tracing::Level::INFO), || {
        let svc = OriginGuardLayer::new(allow())
            .allow_missing_origin(false)
            .layer(counting(&Arc::new(AtomicUsize::new(0))));
        let poll = |req: Request<()>| {
            let mut future = std::pin::pin!(svc.clone().oneshot(req));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match Pin::as_mut(&mut future).poll(&mut cx) {
                Poll::Ready(res) => res.unwrap().status(),
                Poll::Pending => panic!("the layer's answer is immediate"),
            }
        };
        let mut from_peer = handshake("https://Evil.Example:443");
        from_peer
            .extensions_mut()
            .insert(ClientIp("192.0.2.7".parse().unwrap()));
        assert_eq!(poll(from_peer), StatusCode::FORBIDDEN);
        assert_eq!(
            poll(handshake("https://evil.example/INJECTED")),
            StatusCode::FORBIDDEN
        );
        let mut missing = handshake("x");
        missing.headers_mut().remove(header::ORIGIN);
        assert_eq!(poll(missing), StatusCode::FORBIDDEN);
    });
    let logs = logs.text();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(
        lines.iter().all(|l| l.contains("INFO")
            && l.contains("wsguard_origin")
            && l.contains("reason=\"origin_not_allowed\"")),
        "{logs}"
    );
    // Parsed values are logged normalised, with the peer.
    assert!(
        lines[0].contains("cause=\"not_allowed\"")
            && lines[0].contains("peer=192.0.2.7")
            && lines[0].contains("origin=https://evil.example"),
        "{logs}"
    );
    // Malformed values are never logged, only the kind of error.
    assert!(
        lines[1].contains("cause=\"malformed\"") && lines[1].contains("error=\"path\""),
        "{logs}"
    );
    assert!(!logs.contains("INJECTED"), "{logs}");
    assert!(lines[2].contains("cause=\"missing\""), "{logs}");
}
