//! Connection hygiene and the connection limit on raw hyper 1 + tokio-tungstenite (no
//! axum), through wsguard-core's `tungstenite::GuardedUpgrade` hand-off: the idle rule and
//! the shutdown close with their codes, and the socket's slot comes back.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{net::TcpListener, time::timeout};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use tower::ServiceBuilder;
use wsguard_conn_limit::{ConnLimitLayer, Hygiene, Shutdown};
use wsguard_core::{tungstenite::GuardedUpgrade, ClientIp};

const WAIT: Duration = Duration::from_secs(10);

async fn serve(limits: ConnLimitLayer, hygiene: Hygiene) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let hygiene = hygiene.clone();
            let service = ServiceBuilder::new()
                .map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ClientIp(peer.ip()));
                    req
                })
                .layer(limits.clone())
                .service_fn(move |mut req: Request<Incoming>| {
                    let hygiene = hygiene.clone();
                    async move {
                        let res: Response<Full<bytes::Bytes>> =
                            match GuardedUpgrade::from_request(&mut req) {
                                Ok(upgrade) => upgrade.on_upgrade(move |socket, conn| async move {
                                    let mut socket = hygiene.wrap(socket);
                                    while let Some(Ok(msg)) = socket.next().await {
                                        if msg.is_text() && socket.send(msg).await.is_err() {
                                            break;
                                        }
                                    }
                                    drop(conn);
                                }),
                                Err(error) => error.to_response(),
                            };
                        Ok::<_, Infallible>(res)
                    }
                });
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                    .with_upgrades(),
            );
        }
    });
    addr
}

async fn close_code(
    client: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> CloseCode {
    loop {
        match timeout(WAIT, client.next()).await.expect("no close frame") {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn until_active(limits: &ConnLimitLayer, n: u64) {
    timeout(WAIT, async {
        while limits.active("ip") != Some(n) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slot count");
}

#[tokio::test]
async fn idle_and_shutdown_close_with_their_codes_and_free_the_slot() {
    let limits = ConnLimitLayer::builder().per_ip(1).build().unwrap();
    let shutdown = Shutdown::new();
    let hygiene = Hygiene::new()
        .idle_timeout(Duration::from_millis(300))
        .shutdown(shutdown.clone());
    let addr = serve(limits.clone(), hygiene).await;
    let url = format!("ws://{addr}/ws");

    let (mut idle, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    idle.send(Message::text("hi")).await.unwrap();
    assert_eq!(close_code(&mut idle).await, CloseCode::from(4408));
    drop(idle);
    until_active(&limits, 0).await;

    let (mut open, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    until_active(&limits, 1).await;
    shutdown.trigger();
    assert_eq!(close_code(&mut open).await, CloseCode::Away);
    drop(open);
    timeout(WAIT, shutdown.closed()).await.expect("drained");
    until_active(&limits, 0).await;
}
