//! Smoke test of the `hyper_echo` example (raw hyper 1 + tokio-tungstenite), started
//! in-process: a guarded upgrade echoes, refused handshakes get their status.
#![cfg(feature = "full")]
#![allow(dead_code, unreachable_pub)]

#[path = "../examples/hyper_echo.rs"]
mod hyper_echo;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

const WAIT: Duration = Duration::from_secs(10);

async fn status_of(req: tungstenite::handshake::client::Request) -> StatusCode {
    match timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Err(tungstenite::Error::Http(res)) => res.status(),
        Ok((_, res)) => res.status(),
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

#[tokio::test]
async fn the_guarded_echo_answers_and_refuses() {
    let server = hyper_echo::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("ws://{}/ws?token={}", server.addr, server.token);
    let origin = format!("http://127.0.0.1:{}", server.addr.port());

    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    let echo = timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("hello"));

    let mut foreign = url.as_str().into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(status_of(foreign).await, StatusCode::FORBIDDEN);

    let anonymous = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    assert_eq!(status_of(anonymous).await, StatusCode::UNAUTHORIZED);

    // Three sockets per user: the fourth is refused while the others are open.
    let mut more = Vec::new();
    for _ in 0..2 {
        more.push(
            tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap()
                .0,
        );
    }
    assert_eq!(
        status_of(url.as_str().into_client_request().unwrap()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    socket.close(None).await.unwrap();
}
