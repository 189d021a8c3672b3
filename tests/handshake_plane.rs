//! The handshake plane across crates, over real sockets: guards stacked on an axum router in
//! front of the `GuardedUpgrade` hand-off, mixed with a tower-http layer.
#![cfg(all(feature = "origin", feature = "axum"))]

use std::{net::SocketAddr, time::Duration};

use axum::{extract::ws::Message, routing::get, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, time::timeout};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use wsguard::{
    axum::GuardedUpgrade,
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
                upgrade.on_upgrade(|mut socket, _conn| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let Message::Text(t) = msg {
                            if socket.send(Message::Text(t)).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }),
        )
        .layer(OriginGuardLayer::new(allow))
}

async fn connect(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_foreign_origin_never_reaches_the_upgrade() {
    let addr = serve(app()).await;
    match connect(addr, Some("https://evil.example")).await {
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
    for origin in [Some("https://app.example.com"), None] {
        let mut ws = connect(addr, origin).await.unwrap();
        ws.send(tungstenite::Message::text("hi")).await.unwrap();
        let echo = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo, tungstenite::Message::text("hi"));
    }
}
