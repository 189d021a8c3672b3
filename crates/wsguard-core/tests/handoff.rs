//! The connection scope over real sockets: a guard placed in the scope by a layer is dropped
//! exactly when the upgraded socket ends, through both hand-offs, however the socket ends.
#![cfg(all(feature = "axum", feature = "tokio-tungstenite"))]

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use http::Request;
use tokio::{net::TcpListener, sync::watch, time::timeout};
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode, Message};
use wsguard_core::{ConnectionScope, PendingRejection, Reason, Rejection};

const WAIT: Duration = Duration::from_secs(10);

/// Counts guards alive; each guard signals its drop through a watch channel.
#[derive(Clone)]
struct Alive(Arc<watch::Sender<usize>>);

struct Guard(Alive);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n -= 1);
    }
}

impl Alive {
    fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    fn guard(&self) -> Guard {
        self.0.send_modify(|n| *n += 1);
        Guard(self.clone())
    }

    fn now(&self) -> usize {
        *self.0.borrow()
    }

    async fn until(&self, n: usize) {
        let mut rx = self.0.subscribe();
        timeout(WAIT, rx.wait_for(|v| *v == n))
            .await
            .unwrap_or_else(|_| panic!("guards alive: {} (waited for {n})", self.now()))
            .unwrap();
    }
}

/// Which way the socket ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The client sends a close frame and waits for the answer.
    Clean,
    /// The client drops the TCP connection without a close frame.
    Abort,
    /// The server's handler panics after the first message.
    Panic,
}

async fn client_session(addr: SocketAddr, path: &str, end: End, alive: &Alive) {
    let (mut ws, _) = timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
    )
    .await
    .unwrap()
    .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let echo = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("hello"));
    assert_eq!(alive.now(), 1, "the guard is held while the socket is open");
    match end {
        End::Clean => {
            ws.close(None).await.unwrap();
            // Read until the server's close answer ends the stream.
            while let Some(Ok(_)) = timeout(WAIT, ws.next()).await.unwrap() {}
        }
        End::Abort => drop(ws),
        End::Panic => {
            ws.send(Message::text("panic")).await.unwrap();
            // The server's task dies; the TCP connection is dropped under us.
            let _ = timeout(WAIT, ws.next()).await.unwrap();
        }
    }
    alive.until(0).await;
}

mod axum_handoff {
    use axum::{
        extract::ws::{Message, WebSocket},
        routing::get,
        Router,
    };
    use tower::ServiceBuilder;
    use wsguard_core::{axum::GuardedUpgrade, Connection};

    use super::*;

    async fn echo(mut socket: WebSocket, conn: Connection) {
        assert!(conn.scope().is_claimed());
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(&msg, Message::Text(t) if t.as_str() == "panic") {
                panic!("handler panics on purpose");
            }
            let data = matches!(msg, Message::Text(_) | Message::Binary(_));
            if data && socket.send(msg).await.is_err() {
                break;
            }
        }
    }

    async fn serve(
        alive: Alive,
        deferred: Option<Rejection>,
        called: Arc<AtomicBool>,
    ) -> SocketAddr {
        let app = Router::new()
            .route(
                "/ws",
                get(move |upgrade: GuardedUpgrade| {
                    let called = called.clone();
                    async move {
                        upgrade.on_upgrade(move |socket, conn| {
                            called.store(true, Ordering::SeqCst);
                            echo(socket, conn)
                        })
                    }
                }),
            )
            .layer(
                ServiceBuilder::new().map_request(move |mut req: Request<axum::body::Body>| {
                    ConnectionScope::of(&mut req).hold(alive.guard());
                    if let Some(rejection) = deferred {
                        let _ = PendingRejection::defer(req.extensions_mut(), rejection);
                    }
                    req
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn scope_ends_with_the_socket() {
        for end in [End::Clean, End::Abort, End::Panic] {
            let alive = Alive::new();
            let called = Arc::new(AtomicBool::new(false));
            let addr = serve(alive.clone(), None, called.clone()).await;
            client_session(addr, "/ws", end, &alive).await;
            assert!(called.load(Ordering::SeqCst), "{end:?}");
        }
    }

    #[tokio::test]
    async fn deferred_rejection_closes_without_calling_the_handler() {
        let alive = Alive::new();
        let called = Arc::new(AtomicBool::new(false));
        let addr = serve(
            alive.clone(),
            Some(Rejection::new(Reason::TokenExpired)),
            called.clone(),
        )
        .await;
        expect_close(addr, 4440, "token expired").await;
        alive.until(0).await;
        assert!(!called.load(Ordering::SeqCst));
    }
}

mod hyper_handoff {
    use http_body_util::Full;
    use hyper::{body::Incoming, service::service_fn, Response};
    use hyper_util::rt::TokioIo;
    use wsguard_core::tungstenite::{GuardedStream, GuardedUpgrade};

    use super::*;

    async fn echo(mut socket: GuardedStream) {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(&msg, Message::Text(t) if t.as_str() == "panic") {
                panic!("handler panics on purpose");
            }
            let data = msg.is_text() || msg.is_binary();
            if data && socket.send(msg).await.is_err() {
                break;
            }
        }
    }

    async fn serve(
        alive: Alive,
        deferred: Option<Rejection>,
        called: Arc<AtomicBool>,
    ) -> SocketAddr {
        common::serve_http1(move || {
            let (alive, called) = (alive.clone(), called.clone());
            service_fn(move |mut req: Request<Incoming>| {
                ConnectionScope::of(&mut req).hold(alive.guard());
                if let Some(rejection) = deferred {
                    let _ = PendingRejection::defer(req.extensions_mut(), rejection);
                }
                let called = called.clone();
                async move {
                    let res: Response<Full<bytes::Bytes>> =
                        match GuardedUpgrade::from_request(&mut req) {
                            Ok(up) => up.on_upgrade(move |socket, conn| {
                                called.store(true, Ordering::SeqCst);
                                async move {
                                    echo(socket).await;
                                    drop(conn);
                                }
                            }),
                            Err(err) => err.to_response(),
                        };
                    Ok::<_, Infallible>(res)
                }
            })
        })
        .await
    }

    #[tokio::test]
    async fn scope_ends_with_the_socket() {
        for end in [End::Clean, End::Abort, End::Panic] {
            let alive = Alive::new();
            let called = Arc::new(AtomicBool::new(false));
            let addr = serve(alive.clone(), None, called.clone()).await;
            client_session(addr, "/", end, &alive).await;
            assert!(called.load(Ordering::SeqCst), "{end:?}");
        }
    }

    #[tokio::test]
    async fn deferred_rejection_closes_without_calling_the_handler() {
        let alive = Alive::new();
        let called = Arc::new(AtomicBool::new(false));
        let addr = serve(
            alive.clone(),
            Some(Rejection::new(Reason::TooManyConnections)),
            called.clone(),
        )
        .await;
        expect_close(addr, 4429, "too many connections").await;
        alive.until(0).await;
        assert!(!called.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn non_handshakes_are_refused_with_their_status() {
        let alive = Alive::new();
        let addr = serve(alive.clone(), None, Arc::default()).await;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/"))
            .body(Full::<bytes::Bytes>::default())
            .unwrap();
        let res = timeout(WAIT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 400);
        alive.until(0).await;
    }
}

async fn expect_close(addr: SocketAddr, code: u16, reason: &str) {
    let (mut ws, _) = timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    match timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::from(code));
            assert_eq!(frame.reason.as_str(), reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Complete the closing handshake.
    while let Some(Ok(_)) = timeout(WAIT, ws.next()).await.unwrap() {}
    let _: Option<tungstenite::Error> = None;
}
