//! A real axum server on 127.0.0.1:0: the peer comes from `ConnectInfo`, the handler reads
//! the `ClientIp` extractor, headers count only when the loopback peer is trusted, and a
//! server without connect info answers 500.
#![cfg(feature = "axum")]

use std::net::SocketAddr;

use axum::{routing::get, Router};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
use wsguard_core::{ClientIp, Reason};
use wsguard_test_kit::{client, server};

/// Serves a route answering the `ClientIp` extractor behind `layer`, with or without
/// connect info: the server's address.
async fn serve(layer: ClientIpLayer, connect_info: bool) -> SocketAddr {
    let app = Router::new()
        .route(
            "/",
            get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
        )
        .layer(layer);
    if connect_info {
        server::axum(app).await
    } else {
        server::axum_without_connect_info(app).await
    }
}

/// Sends one raw HTTP/1.1 request with `headers` and returns (status, body).
async fn fetch(server: &SocketAddr, headers: &[(&str, &str)]) -> (u16, String) {
    client::fetch(*server, "/", headers).await
}

#[tokio::test]
async fn loopback_trusted_reads_the_header() {
    let server = serve(
        ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback()),
        true,
    )
    .await;
    // As a local proxy would forward it: the client, then nothing else.
    assert_eq!(
        fetch(&server, &[("X-Forwarded-For", "203.0.113.50")]).await,
        (200, "203.0.113.50".into())
    );
    // A client-injected address left of what the proxy appended is skipped.
    assert_eq!(
        fetch(&server, &[("X-Forwarded-For", "6.6.6.6, 203.0.113.50")]).await,
        (200, "203.0.113.50".into())
    );
    // Two header lines: one list.
    assert_eq!(
        fetch(
            &server,
            &[
                ("X-Forwarded-For", "203.0.113.50"),
                ("X-Forwarded-For", "127.0.0.1")
            ]
        )
        .await,
        (200, "203.0.113.50".into())
    );
    // No header: the peer.
    assert_eq!(fetch(&server, &[]).await, (200, "127.0.0.1".into()));
}

#[tokio::test]
async fn spoofed_header_from_an_untrusted_peer_is_ignored() {
    // Loopback is not trusted here: 127.0.0.1 is "the internet".
    let server = serve(
        ClientIpLayer::new().trusted_proxies("10.0.0.0/8".parse().unwrap()),
        true,
    )
    .await;
    assert_eq!(
        fetch(&server, &[("X-Forwarded-For", "203.0.113.50")]).await,
        (200, "127.0.0.1".into())
    );
    let server = serve(
        ClientIpLayer::new()
            .trusted_proxies("10.0.0.0/8".parse().unwrap())
            .source(Source::cf_connecting_ip())
            .unwrap(),
        true,
    )
    .await;
    assert_eq!(
        fetch(&server, &[("CF-Connecting-IP", "203.0.113.50")]).await,
        (200, "127.0.0.1".into())
    );
}

#[tokio::test]
async fn single_value_header_from_a_trusted_peer() {
    let server = serve(
        ClientIpLayer::new()
            .trusted_proxies(TrustedProxies::loopback())
            .source(Source::x_real_ip())
            .unwrap(),
        true,
    )
    .await;
    assert_eq!(
        fetch(&server, &[("X-Real-IP", "[2001:db8::7]:443")]).await,
        (200, "2001:db8::7".into())
    );
    // Duplicated: ignored, the peer is used.
    assert_eq!(
        fetch(
            &server,
            &[("X-Real-IP", "203.0.113.50"), ("X-Real-IP", "198.51.100.1")]
        )
        .await,
        (200, "127.0.0.1".into())
    );
}

#[tokio::test]
async fn no_peer_address_is_a_500_not_a_shared_bucket() {
    let server = serve(ClientIpLayer::new(), false).await;
    let (status, body) = fetch(&server, &[("X-Forwarded-For", "203.0.113.50")]).await;
    assert_eq!(status, 500);
    assert_eq!(body, Reason::Internal.message());
}
