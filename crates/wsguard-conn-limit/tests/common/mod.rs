//! What the handshake-rate and penalty tests share: an axum server on 127.0.0.1:0 behind the
//! real client-IP layer (127.0.0.1 is the one trusted proxy, so its `X-Forwarded-For` is
//! read), a WebSocket route that echoes nothing and closes on the client's close, and a
//! handshake from a chosen loopback address (127.0.0.2, .3, ... are loopback on Linux).

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};

use axum::{extract::ws::Message as AxumMessage, routing::get, Router};
use tokio::{net::TcpSocket, time::timeout};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
use wsguard_core::axum::GuardedUpgrade;

pub use wsguard_test_kit::WAIT;

/// The client-IP layer of the tests: 127.0.0.1 is a trusted proxy.
pub fn client_ip() -> ClientIpLayer {
    ClientIpLayer::new()
        .trusted_proxies(TrustedProxies::new().add_cidr("127.0.0.1/32").unwrap())
        .source(Source::XForwardedFor)
        .unwrap()
}

/// The WebSocket route: reads until the client closes.
pub fn ws_route() -> Router {
    Router::new().route(
        "/ws",
        get(|upgrade: GuardedUpgrade| async move {
            upgrade.on_upgrade(|mut socket, _conn| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if matches!(msg, AxumMessage::Close(_)) {
                        break;
                    }
                }
            })
        }),
    )
}

/// Serves `app` on a free loopback port, with the peer address as connect info.
pub async fn spawn(app: Router) -> SocketAddr {
    wsguard_test_kit::server::axum(app).await
}

/// One WebSocket handshake from `from` with `headers`, closed at once: the status, and the
/// `Retry-After` of a refusal.
pub async fn handshake(
    addr: SocketAddr,
    from: IpAddr,
    headers: &[(&str, &str)],
) -> (u16, Option<String>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    match timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("an answer in time")
    {
        Ok((mut ws, res)) => {
            ws.close(None).await.ok();
            (res.status().as_u16(), None)
        }
        Err(tungstenite::Error::Http(res)) => (
            res.status().as_u16(),
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
