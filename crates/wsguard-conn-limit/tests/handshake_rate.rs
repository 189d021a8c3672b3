//! Handshake rate limits over real sockets: axum on 127.0.0.1:0 behind the real client-IP
//! layer, tokio-tungstenite clients bound to distinct loopback addresses (127.0.0.2, .3, ...
//! are all loopback on Linux), and a trusted proxy's `X-Forwarded-For` for IPv6 clients.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{client_ip, ip, spawn, ws_route};
use tower::ServiceBuilder;
use wsguard_conn_limit::handshake_rate::HandshakeRateLimitLayer;
use wsguard_core::ClientIpKey;
use wsguard_msg_rate::{rate, Budget, InMemoryKeyStore};

async fn serve(limit: HandshakeRateLimitLayer) -> SocketAddr {
    serve_with(limit).await
}

async fn serve_with<K: wsguard_msg_rate::KeyStore>(
    limit: HandshakeRateLimitLayer<K>,
) -> SocketAddr {
    spawn(ws_route().layer(ServiceBuilder::new().layer(client_ip()).layer(limit))).await
}

/// A handshake from `from`, with `forwarded` as `X-Forwarded-For` if any.
async fn handshake(
    addr: SocketAddr,
    from: std::net::IpAddr,
    forwarded: Option<&str>,
) -> (u16, Option<String>) {
    let headers: Vec<_> = forwarded
        .map(|v| ("x-forwarded-for", v))
        .into_iter()
        .collect();
    common::handshake(addr, from, &headers).await
}

#[tokio::test]
async fn a_reconnect_loop_gets_429_after_its_burst_and_other_addresses_do_not() {
    // 1 a minute, bursts of 5: nothing refills during the test.
    let limit = HandshakeRateLimitLayer::new(
        ClientIpKey::default(),
        rate(1).per(Duration::from_secs(60)).burst(5),
    )
    .unwrap();
    let addr = serve(limit).await;
    let looping = ip("127.0.0.2");
    for i in 0..5 {
        assert_eq!(handshake(addr, looping, None).await.0, 101, "attempt {i}");
    }
    for i in 0..20 {
        let (status, retry_after) = handshake(addr, looping, None).await;
        assert_eq!(status, 429, "attempt {}", 5 + i);
        let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
        // Whole seconds until the next handshake fits: about a minute, never 0.
        assert!((1..=60).contains(&retry_after), "{retry_after}");
    }
    // Another address has a budget of its own.
    for i in 0..5 {
        assert_eq!(
            handshake(addr, ip("127.0.0.3"), None).await.0,
            101,
            "attempt {i}"
        );
    }
}

#[tokio::test]
async fn two_addresses_in_one_ipv6_64_share_a_budget_behind_a_trusted_proxy() {
    let limit =
        HandshakeRateLimitLayer::per_ip(rate(1).per(Duration::from_secs(60)).burst(3)).unwrap();
    let addr = serve(limit).await;
    let proxy = ip("127.0.0.1");
    let (a, b) = ("2001:db8:1:2::a", "2001:db8:1:2:ffff::b");
    assert_eq!(handshake(addr, proxy, Some(a)).await.0, 101);
    assert_eq!(handshake(addr, proxy, Some(b)).await.0, 101);
    assert_eq!(handshake(addr, proxy, Some(a)).await.0, 101);
    // The /64's burst is spent, by either address.
    assert_eq!(handshake(addr, proxy, Some(b)).await.0, 429);
    assert_eq!(handshake(addr, proxy, Some(a)).await.0, 429);
    // Another /64 is another budget.
    assert_eq!(handshake(addr, proxy, Some("2001:db8:1:3::a")).await.0, 101);
    // A client that is not the proxy cannot pick another key with the header.
    let direct = ip("127.0.0.4");
    for _ in 0..3 {
        assert_eq!(handshake(addr, direct, Some("2001:db8:9::1")).await.0, 101);
    }
    assert_eq!(handshake(addr, direct, Some("2001:db8:9::2")).await.0, 429);
}

#[tokio::test]
async fn a_flood_of_distinct_addresses_keeps_the_store_under_its_cap() {
    let store = InMemoryKeyStore::new(
        Budget::new().messages(rate(1).per(Duration::from_secs(60)).burst(2)),
    )
    .unwrap()
    .with_max_keys(64)
    .unwrap();
    let limit = HandshakeRateLimitLayer::with_store(ClientIpKey::default(), store.clone());
    let addr = serve(limit).await;
    let proxy = ip("127.0.0.1");
    for i in 0..300u32 {
        let client = format!("198.51.{}.{}", i / 250, i % 250 + 1);
        assert_eq!(
            handshake(addr, proxy, Some(&client)).await.0,
            101,
            "{client}"
        );
        assert!(store.len() <= 64, "{} keys after {i}", store.len());
    }
}

#[tokio::test]
async fn tonic_stacks_get_the_grpc_form() {
    use std::convert::Infallible;
    use tower::{service_fn, Layer, ServiceExt};
    use wsguard_core::{ClientIp, GrpcRejection};

    let limit = HandshakeRateLimitLayer::per_ip(rate(1).per(Duration::from_secs(60)).burst(1))
        .unwrap()
        .on_rejection(GrpcRejection);
    let svc = limit.layer(service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    }));
    let call = |svc: wsguard_conn_limit::handshake_rate::HandshakeRateLimit<_, _, _>| async move {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(ClientIp(ip("192.0.2.7")));
        svc.oneshot(req).await.unwrap()
    };
    assert_eq!(call(svc.clone()).await.headers().get("grpc-status"), None);
    let refused = call(svc).await;
    // gRPC answers 200 with the status in the headers: RESOURCE_EXHAUSTED (8), and a
    // retry hint in milliseconds instead of Retry-After.
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.headers()["grpc-status"], "8");
    assert!(refused.headers().contains_key("grpc-retry-pushback-ms"));
}

/// A shared store whose backend cannot answer, failing closed.
#[derive(Clone)]
struct Down;

impl wsguard_msg_rate::KeyStore for Down {
    type Prepared = ();
    type Future = std::future::Ready<wsguard_msg_rate::Decision>;

    fn prepare(&self, _: wsguard_core::Key) {}

    fn check(&self, _: &(), _: wsguard_msg_rate::Cost) -> Self::Future {
        std::future::ready(wsguard_msg_rate::Decision::Unavailable)
    }
}

#[tokio::test]
async fn a_store_that_cannot_answer_gets_503_with_a_retry_not_429() {
    let addr = serve_with(HandshakeRateLimitLayer::with_store(
        ClientIpKey::default(),
        Down,
    ))
    .await;
    for i in 0..3 {
        let (status, retry_after) = handshake(addr, ip("127.0.0.4"), None).await;
        assert_eq!(status, 503, "attempt {i}");
        assert_eq!(retry_after.as_deref(), Some("1"), "attempt {i}");
    }
}
