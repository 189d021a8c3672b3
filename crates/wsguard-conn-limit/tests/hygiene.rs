//! Connection hygiene over real sockets: a real axum server on 127.0.0.1:0 and real
//! tokio-tungstenite clients; each rule closes with its code, and the connection's guards
//! are released when the socket ends.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::ws::Message as AxumMessage, routing::get, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, time::timeout};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use wsguard_conn_limit::{Hygiene, Shutdown};
use wsguard_core::axum::GuardedUpgrade;

const WAIT: Duration = Duration::from_secs(10);

/// Counts guards alive in connection scopes.
#[derive(Clone, Default)]
struct Alive(Arc<AtomicUsize>);

struct Guard(Alive);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Alive {
    fn guard(&self) -> Guard {
        self.0.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    async fn until(&self, n: usize) {
        let wait = async {
            while self.0.load(Ordering::SeqCst) != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        timeout(WAIT, wait).await.expect("guards were not released");
    }
}

/// An echo server whose sockets live under `hygiene`, each holding one guard.
async fn serve(hygiene: Hygiene, alive: Alive) -> SocketAddr {
    let app = Router::new().route(
        "/ws",
        get(move |upgrade: GuardedUpgrade| {
            let (hygiene, alive) = (hygiene.clone(), alive.clone());
            async move {
                upgrade.on_upgrade(move |socket, conn| async move {
                    conn.scope().hold(alive.guard());
                    let mut socket = hygiene.wrap(socket);
                    while let Some(Ok(msg)) = socket.next().await {
                        if matches!(msg, AxumMessage::Text(_)) && socket.send(msg).await.is_err() {
                            break;
                        }
                    }
                    drop(conn);
                })
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Client {
    timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap()
    .0
}

/// Reads (answering pings, as tungstenite does while reading) until the close frame.
async fn close_code(client: &mut Client) -> CloseCode {
    loop {
        match timeout(WAIT, client.next()).await.expect("no close frame") {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_idle_socket_closes_with_4408_and_a_chatty_one_stays() {
    let alive = Alive::default();
    let idle = Duration::from_millis(300);
    let addr = serve(Hygiene::new().idle_timeout(idle), alive.clone()).await;

    let mut chatty = connect(addr).await;
    // Twice the idle time, talking every 100 ms: never idle.
    for _ in 0..6 {
        chatty.send(Message::text("hi")).await.unwrap();
        let echo = timeout(WAIT, chatty.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text("hi"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(close_code(&mut chatty).await, CloseCode::from(4408));
    drop(chatty);
    alive.until(0).await;
}

#[tokio::test]
async fn a_socket_at_its_lifetime_closes_with_4410() {
    let alive = Alive::default();
    let hygiene = Hygiene::new().max_lifetime(Some(Duration::from_millis(300)));
    let addr = serve(hygiene, alive.clone()).await;
    let mut client = connect(addr).await;
    client.send(Message::text("hi")).await.unwrap();
    assert_eq!(close_code(&mut client).await, CloseCode::from(4410));
    drop(client);
    alive.until(0).await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_and_a_silent_one_closes_with_4504() {
    let alive = Alive::default();
    let hygiene = Hygiene::new().heartbeat(Duration::from_millis(100), Duration::from_millis(200));
    let addr = serve(hygiene, alive.clone()).await;

    // Reading answers pings: several intervals pass without a close.
    let mut reader = connect(addr).await;
    let pings = timeout(Duration::from_millis(800), async {
        let mut pings = 0;
        while let Some(Ok(msg)) = reader.next().await {
            match msg {
                Message::Ping(_) => pings += 1,
                Message::Close(frame) => panic!("closed while answering pings: {frame:?}"),
                _ => {}
            }
        }
        pings
    })
    .await;
    assert!(
        pings.is_err(),
        "the socket stayed open for the whole window"
    );

    // A peer that does not read does not answer: 4504.
    let mut silent = connect(addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Reading now answers the queued pings, too late.
    assert_eq!(close_code(&mut silent).await, CloseCode::from(4504));
    drop((reader, silent));
    alive.until(0).await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001_and_releases_their_guards() {
    let alive = Alive::default();
    let shutdown = Shutdown::new();
    let addr = serve(Hygiene::new().shutdown(shutdown.clone()), alive.clone()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = connect(addr).await;
        client.send(Message::text("hi")).await.unwrap();
        timeout(WAIT, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        clients.push(client);
    }
    assert_eq!(shutdown.active(), 3);
    alive.until(3).await;
    shutdown.trigger();
    for client in &mut clients {
        assert_eq!(close_code(client).await, CloseCode::Away);
        // Complete the close handshake.
        while let Ok(Some(Ok(_))) = timeout(WAIT, client.next()).await {}
    }
    timeout(WAIT, shutdown.closed())
        .await
        .expect("sockets drained");
    alive.until(0).await;

    // A socket opened after the trigger closes at once.
    let mut late = connect(addr).await;
    assert_eq!(close_code(&mut late).await, CloseCode::Away);
}
