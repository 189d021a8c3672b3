//! A real axum server on 127.0.0.1:0: the peer comes from `ConnectInfo`, headers count only
//! when the loopback peer is trusted, and a server without connect info answers 500.
#![cfg(feature = "axum")]

use std::{net::SocketAddr, time::Duration};

use axum::{routing::get, Router};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};
use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
use wsguard_core::ClientIp;

async fn serve(layer: ClientIpLayer, connect_info: bool) -> SocketAddr {
    let app = Router::new()
        .route(
            "/",
            get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
        )
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if connect_info {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        } else {
            axum::serve(listener, app).await.unwrap();
        }
    });
    addr
}

/// Sends one raw HTTP/1.1 request and returns (status, body).
async fn fetch(addr: SocketAddr, xff: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let xff = xff
        .map(|v| format!("X-Forwarded-For: {v}\r\n"))
        .unwrap_or_default();
    let req = format!("GET / HTTP/1.1\r\nHost: test\r\n{xff}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn headers_count_only_from_trusted_peers() {
    let trusting = serve(
        ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback()),
        true,
    )
    .await;
    assert_eq!(
        fetch(trusting, Some("203.0.113.50")).await,
        (200, "203.0.113.50".into())
    );
    assert_eq!(fetch(trusting, None).await, (200, "127.0.0.1".into()));

    let untrusting = serve(ClientIpLayer::new(), true).await;
    assert_eq!(
        fetch(untrusting, Some("203.0.113.50")).await,
        (200, "127.0.0.1".into())
    );
}

#[tokio::test]
async fn no_peer_address_is_a_500_not_a_shared_bucket() {
    let addr = serve(ClientIpLayer::new(), false).await;
    let (status, body) = fetch(addr, Some("203.0.113.50")).await;
    assert_eq!(status, 500);
    assert_eq!(body, "internal error");
}
