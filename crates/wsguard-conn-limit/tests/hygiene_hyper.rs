//! Connection hygiene and the connection limit on raw hyper 1 + tokio-tungstenite (no
//! axum), through wsguard-core's `tungstenite::GuardedUpgrade` hand-off: the idle rule and
//! the shutdown close with their codes, and the socket's slot comes back.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use futures_util::SinkExt;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use tower::ServiceBuilder;
use wsguard_conn_limit::{ConnLimitLayer, Hygiene, Shutdown};
use wsguard_core::{tungstenite::GuardedUpgrade, ClientIp};
use wsguard_test_kit::{
    client::{self, Client},
    handoff::{Echo, SocketHandler},
    poll, server, WAIT,
};

/// An echo server (raw hyper) whose sockets live under `hygiene`, behind `limits` keyed on
/// the peer's address.
async fn serve(limits: ConnLimitLayer, hygiene: Hygiene) -> SocketAddr {
    server::hyper(move |peer: SocketAddr| {
        let hygiene = hygiene.clone();
        ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ClientIp(peer.ip()));
                req
            })
            .layer(limits.clone())
            .service_fn(move |mut req: Request<Incoming>| {
                let hygiene = hygiene.clone();
                async move {
                    let res: Response<String> = match GuardedUpgrade::from_request(&mut req) {
                        Ok(upgrade) => upgrade.on_upgrade(move |socket, conn| {
                            Echo.handle(hygiene.wrap(socket), conn)
                        }),
                        Err(error) => error.to_response(),
                    };
                    Ok::<_, Infallible>(res)
                }
            })
    })
    .await
}

async fn close_code(client: &mut Client) -> CloseCode {
    client::close_frame(client).await.code
}

async fn until_active(limits: &ConnLimitLayer, n: u64) {
    poll::until_eq("ip slots active", || limits.active("ip"), Some(n)).await;
}

#[tokio::test]
async fn idle_and_shutdown_close_with_their_codes_and_free_the_slot() {
    let limits = ConnLimitLayer::builder().per_ip(1).build().unwrap();
    let shutdown = Shutdown::new();
    let hygiene = Hygiene::new()
        .idle_timeout(Duration::from_millis(300))
        .shutdown(shutdown.clone());
    let addr = serve(limits.clone(), hygiene).await;

    let mut idle = client::connect(addr, "/ws").await;
    idle.send(Message::text("hi")).await.unwrap();
    assert_eq!(close_code(&mut idle).await, CloseCode::from(4408));
    drop(idle);
    until_active(&limits, 0).await;

    let mut open = client::connect(addr, "/ws").await;
    until_active(&limits, 1).await;
    shutdown.trigger();
    assert_eq!(close_code(&mut open).await, CloseCode::Away);
    drop(open);
    timeout(WAIT, shutdown.closed()).await.expect("drained");
    until_active(&limits, 0).await;
}
