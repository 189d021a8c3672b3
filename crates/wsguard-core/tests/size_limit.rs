//! A message over the socket's own size limit (tungstenite's, set by the hand-off) closes a
//! guarded socket with 1009, over real sockets, through both hand-offs: the client reads the
//! close frame instead of a reset connection.
#![cfg(all(feature = "plane", feature = "axum", feature = "tokio-tungstenite"))]

mod common;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, time::timeout};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use wsguard_core::{
    plane::{Admit, GuardedSocket, WsSocket},
    Connection, WsMessage,
};

const WAIT: Duration = Duration::from_secs(10);
const LIMIT: usize = 1024;

/// Echoes what the plane admits.
async fn echo<S: WsSocket>(socket: S, conn: Connection) {
    let mut socket = GuardedSocket::new(socket, conn, Admit).close_timeout(Duration::from_secs(2));
    while let Some(Ok(msg)) = socket.next().await {
        if msg.kind().is_data() && socket.send(msg).await.is_err() {
            break;
        }
    }
}

async fn axum_server() -> SocketAddr {
    use axum::{routing::get, Router};
    use wsguard_core::axum::GuardedUpgrade;

    let app = Router::new().route(
        "/ws",
        get(|up: GuardedUpgrade| async move { up.max_message_size(LIMIT).on_upgrade(echo) }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn hyper_server() -> SocketAddr {
    use http::Request;
    use http_body_util::Full;
    use hyper::{body::Incoming, service::service_fn, Response};
    use wsguard_core::tungstenite::GuardedUpgrade;

    common::serve_http1(|| {
        service_fn(|mut req: Request<Incoming>| async move {
            let res: Response<Full<bytes::Bytes>> = match GuardedUpgrade::from_request(&mut req) {
                Ok(up) => up.max_message_size(LIMIT).on_upgrade(echo),
                Err(err) => err.to_response(),
            };
            Ok::<_, Infallible>(res)
        })
    })
    .await
}

async fn oversize_message_gets_1009(addr: SocketAddr) {
    let (mut ws, _) = timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    // Within the limit: echoed.
    let small = "a".repeat(LIMIT);
    ws.send(Message::text(small.as_str())).await.unwrap();
    assert_eq!(
        timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text(small)
    );
    // Over it, by far: the socket refuses it before buffering it whole.
    ws.send(Message::text("b".repeat(64 * LIMIT)))
        .await
        .unwrap();
    match timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Size);
            assert_eq!(frame.reason.as_str(), "message too large");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn axum_socket_closes_with_1009() {
    oversize_message_gets_1009(axum_server().await).await;
}

#[tokio::test]
async fn hyper_socket_closes_with_1009() {
    oversize_message_gets_1009(hyper_server().await).await;
}
