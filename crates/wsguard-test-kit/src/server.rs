//! Real servers on a free loopback port (`127.0.0.1:0`), serving until the test's runtime
//! ends: axum, and raw hyper 1 with upgrades.
//!
//! ```
//! use axum::{routing::get, Router};
//! use wsguard_test_kit::{client, server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let addr = server::axum(Router::new().route("/", get(|| async { "hi" }))).await;
//! assert_eq!(client::fetch(addr, "/", &[]).await, (200, "hi".to_owned()));
//! # }
//! ```

use std::{convert::Infallible, error::Error, net::SocketAddr};

use axum::Router;
use http::{Request, Response};
use hyper::{
    body::{Body, Incoming},
    server::conn::http1,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::Service;
#[cfg(feature = "plane")]
use {
    crate::service::query_identity,
    axum::{
        extract::ws::{Message, WebSocket},
        routing::get,
    },
    std::future::Future,
    tower::{Layer, ServiceBuilder},
    wsguard_core::{axum::GuardedUpgrade, Admit, GuardedSocket, Inbound, Verdict},
};

/// A listener on a free loopback port, and its address.
///
/// # Panics
///
/// If no port is free.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves `app` with axum on a free loopback port, with the peer's address as axum's
/// `ConnectInfo<SocketAddr>` (which `wsguard-client-ip` reads).
pub async fn axum(app: Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Serves `app` with axum on a free loopback port, without connect info: no layer learns
/// the peer's address.
pub async fn axum_without_connect_info(app: Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves `/ws` with axum on a free loopback port (without connect info), each socket guarded
/// by the message plane `layer` builds for it (feature `plane`) and run by `run`. The query's
/// `user=NAME` becomes the principal ([`query_identity`]), and the plane answers every
/// refusal (`max_replies_per_second(u32::MAX)`), so a test that floods sees every answer.
///
/// ```
/// use futures_util::{SinkExt, StreamExt};
/// use wsguard_test_kit::{client, server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let addr = server::axum_plane(tower::layer::util::Identity::new(), |mut socket| async move {
///     while let Some(Ok(msg)) = socket.next().await {
///         if socket.send(msg).await.is_err() {
///             break;
///         }
///     }
/// })
/// .await;
/// let mut ws = client::connect(addr, "/ws?user=alice").await;
/// client::round_trip(&mut ws, "hello").await;
/// client::close(ws).await;
/// # }
/// ```
#[cfg(feature = "plane")]
pub async fn axum_plane<L, F, Fut>(layer: L, run: F) -> SocketAddr
where
    L: Layer<Admit> + Clone + Send + Sync + 'static,
    L::Service: Service<Inbound<Message>, Response = Verdict<Message>> + Send + 'static,
    F: Fn(GuardedSocket<WebSocket, L::Service>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let ws = move |upgrade: GuardedUpgrade| async move {
        upgrade.on_upgrade(move |socket, conn| {
            run(GuardedSocket::layered(socket, conn, &layer).max_replies_per_second(u32::MAX))
        })
    };
    let app = Router::new()
        .route("/ws", get(ws))
        .layer(ServiceBuilder::new().map_request(query_identity::<axum::body::Body>));
    axum_without_connect_info(app).await
}

/// Serves HTTP/1.1 with upgrades on a free loopback port, each connection with the tower
/// service `make` builds for its peer.
pub async fn hyper<M, S, B>(make: M) -> SocketAddr
where
    M: FnMut(SocketAddr) -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    hyper_connections(usize::MAX, make).await.0
}

/// As [`hyper()`], for the first `connections` connections only: the server's task ends after
/// the last one is accepted.
pub async fn hyper_connections<M, S, B>(
    connections: usize,
    mut make: M,
) -> (SocketAddr, JoinHandle<()>)
where
    M: FnMut(SocketAddr) -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let (listener, addr) = listener().await;
    let task = tokio::spawn(async move {
        for _ in 0..connections {
            let (stream, peer) = listener.accept().await.unwrap();
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(make(peer)))
                    .with_upgrades(),
            );
        }
    });
    (addr, task)
}
