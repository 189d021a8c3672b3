//! The handshake plane across crates, over real sockets: guards stacked on an axum router in
//! front of the `GuardedUpgrade` hand-off, mixed with a tower-http layer.
#![cfg(all(feature = "origin", feature = "client-ip", feature = "axum"))]

use std::{net::SocketAddr, time::Duration};

use axum::{extract::ws::Message, routing::get, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, time::timeout};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tower::ServiceBuilder;
use wsguard::{
    axum::GuardedUpgrade,
    client_ip::{ClientIpLayer, TrustedProxies},
    origin::{AllowList, OriginGuardLayer},
};

const WAIT: Duration = Duration::from_secs(10);

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

fn app() -> Router {
    let allow = AllowList::new()
        .add_origin("https://app.example.com")
        .unwrap();
    Router::new()
        .route(
            "/ws",
            get(|upgrade: GuardedUpgrade| async move {
                upgrade.on_upgrade(|mut socket, conn| async move {
                    // The identity resolved on the handshake travels with the socket.
                    let ip = conn
                        .client_ip()
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let Message::Text(t) = msg {
                            let answer = format!("{} from {ip}", t.as_str());
                            if socket.send(Message::text(answer)).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }),
        )
        // Outermost first: resolve the client IP, then check the Origin, mixed with a
        // tower-http layer in one ServiceBuilder.
        .layer(
            ServiceBuilder::new()
                .layer(tower_http::trace::TraceLayer::new_for_http())
                .layer(ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback()))
                .layer(OriginGuardLayer::new(allow)),
        )
}

async fn connect(
    addr: SocketAddr,
    origin: Option<&str>,
    xff: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    if let Some(xff) = xff {
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_foreign_origin_never_reaches_the_upgrade() {
    let addr = serve(app()).await;
    match connect(addr, Some("https://evil.example"), None).await {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 403);
            let body = res.body().as_deref().unwrap_or_default();
            assert_eq!(body, b"origin not allowed");
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn an_allowed_origin_upgrades_and_exchanges_messages() {
    let addr = serve(app()).await;
    // The loopback peer is a trusted proxy here, so X-Forwarded-For names the client.
    let cases = [
        (
            Some("https://app.example.com"),
            Some("203.0.113.50"),
            "hi from 203.0.113.50",
        ),
        (None, None, "hi from 127.0.0.1"),
    ];
    for (origin, xff, expected) in cases {
        let mut ws = connect(addr, origin, xff).await.unwrap();
        ws.send(tungstenite::Message::text("hi")).await.unwrap();
        let echo = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo, tungstenite::Message::text(expected));
    }
}
