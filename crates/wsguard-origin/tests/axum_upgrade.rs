//! A real axum server on 127.0.0.1:0 and a real tokio-tungstenite client: a foreign Origin
//! gets 403 before any upgrade; an allowed one upgrades and exchanges messages.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{routing::get, Router};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, StatusCode};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};
use wsguard_core::axum::GuardedUpgrade;
use wsguard_origin::{AllowList, OriginGuardLayer};
use wsguard_test_kit::{
    client,
    handoff::{Echo, SocketHandler},
    server, WAIT,
};

/// Starts the server; returns its address and a counter of upgrades that reached the
/// handler.
async fn serve(allow: AllowList) -> (SocketAddr, Arc<AtomicUsize>) {
    let upgrades = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&upgrades);
    let app = Router::new()
        .route(
            "/ws",
            get(move |upgrade: GuardedUpgrade| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { upgrade.on_upgrade(|socket, conn| Echo.handle(socket, conn)) }
            }),
        )
        .layer(OriginGuardLayer::new(allow).allow_missing_origin(false));
    (server::axum(app).await, upgrades)
}

async fn connect(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<client::Client, tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut()
            .insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
    }
    let (ws, res) = timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")?;
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    Ok(ws)
}

fn expect_forbidden(result: Result<impl Sized, tungstenite::Error>) {
    match result {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
            let body = res.body().as_deref().unwrap_or_default();
            assert_eq!(body, b"origin not allowed");
        }
        Err(other) => panic!("expected a 403, got {other}"),
        Ok(_) => panic!("expected a 403, the upgrade succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_get_403_and_allowed_ones_upgrade() {
    let allow = AllowList::new()
        .add_origin("https://chat.example.com")
        .unwrap()
        .add_origin("https://*.example.com")
        .unwrap();
    let (addr, upgrades) = serve(allow).await;

    for foreign in [
        "https://evil.example",
        "https://example.com",
        "https://chat.example.com.evil.example",
        "null",
        "https://chat.example.com/",
    ] {
        expect_forbidden(connect(addr, Some(foreign)).await);
    }
    expect_forbidden(connect(addr, None).await);
    assert_eq!(
        upgrades.load(Ordering::SeqCst),
        0,
        "no rejected handshake reached the handler"
    );

    for allowed in ["https://chat.example.com", "HTTPS://Shop.Example.com:443"] {
        let mut ws = connect(addr, Some(allowed)).await.unwrap();
        client::round_trip(&mut ws, "hello").await;
        client::close(ws).await;
    }
    assert_eq!(upgrades.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_host_mode_over_a_real_socket() {
    // tungstenite sends `Host: 127.0.0.1:<port>`, the authority it connects to.
    let (addr, _) = serve(AllowList::new().allow_same_host(true)).await;
    let same = format!("http://{addr}");
    let mut ws = connect(addr, Some(&same)).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let echo = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::binary(vec![1, 2, 3]));
    drop(ws);

    let other_port = format!("http://127.0.0.1:{}", addr.port().wrapping_add(1));
    expect_forbidden(connect(addr, Some(&other_port)).await);
    expect_forbidden(connect(addr, Some("http://localhost")).await);
}
