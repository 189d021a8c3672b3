//! A real axum server on 127.0.0.1:0: the peer comes from `ConnectInfo`, the handler reads
//! the `ClientIp` extractor, headers count only when the loopback peer is trusted, and a
//! server without connect info answers 500.
#![cfg(feature = "axum")]

use std::{net::SocketAddr, time::Duration};

use axum::{routing::get, Router};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::timeout,
};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
use wsguard_core::{ClientIp, Reason};

const LIMIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(layer: ClientIpLayer, connect_info: bool) -> Server {
    let app = Router::new()
        .route(
            "/",
            get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
        )
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let served = if connect_info {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        } else {
            axum::serve(listener, app).await
        };
        served.unwrap();
    });
    Server { addr, task }
}

/// Sends one raw HTTP/1.1 request with `headers` and returns (status, body).
async fn fetch(server: &Server, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = timeout(LIMIT, TcpStream::connect(server.addr))
        .await
        .unwrap()
        .unwrap();
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let req = format!("GET / HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    timeout(LIMIT, stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
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
