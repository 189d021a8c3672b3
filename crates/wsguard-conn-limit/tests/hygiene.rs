//! Connection hygiene over real sockets: a real axum server on 127.0.0.1:0 and real
//! tokio-tungstenite clients; each rule closes with its code, and the connection's guards
//! are released when the socket ends.

use std::{fmt, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};
use wsguard_conn_limit::{Hygiene, Shutdown};
use wsguard_core::{Connection, WsSocket};
use wsguard_test_kit::{
    client::{self, Client},
    handoff::{self, Alive, Echo, HandOff, SocketHandler, Upgrade},
    MAX_MESSAGES, WAIT,
};

/// Each socket holds one guard of `alive` in its connection scope and echoes under
/// `hygiene`.
#[derive(Clone)]
struct Hygienic {
    hygiene: Hygiene,
    alive: Alive,
}

impl SocketHandler for Hygienic {
    async fn handle<S>(self, socket: S, conn: Connection)
    where
        S: WsSocket + Send + 'static,
        S::SocketError: Send + fmt::Debug,
    {
        conn.scope().hold(self.alive.guard());
        Echo.handle(self.hygiene.wrap(socket), conn).await;
    }
}

/// An echo server (axum) whose sockets live under `hygiene`, each holding one guard.
async fn serve(hygiene: Hygiene, alive: Alive) -> SocketAddr {
    let handler = Hygienic { hygiene, alive };
    handoff::serve(HandOff::Axum, Upgrade::default(), |_| {}, handler).await
}

async fn connect(addr: SocketAddr) -> Client {
    client::connect(addr, "/ws").await
}

/// Reads (answering pings, as tungstenite does while reading) until the close frame.
async fn close_code(client: &mut Client) -> CloseCode {
    client::close_frame(client).await.code
}

#[tokio::test]
async fn an_idle_socket_closes_with_4408_and_a_chatty_one_stays() {
    let alive = Alive::default();
    let idle = Duration::from_millis(300);
    let addr = serve(Hygiene::new().idle_timeout(idle), alive.clone()).await;

    let mut chatty = connect(addr).await;
    // Twice the idle time, talking every 100 ms: never idle.
    for _ in 0..6 {
        client::round_trip(&mut chatty, "hi").await;
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
        for _ in 0..MAX_MESSAGES {
            let Some(Ok(msg)) = reader.next().await else {
                break;
            };
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
        client::round_trip(&mut client, "hi").await;
        clients.push(client);
    }
    assert_eq!(shutdown.active(), 3);
    alive.until(3).await;
    shutdown.trigger();
    for client in &mut clients {
        assert_eq!(close_code(client).await, CloseCode::Away);
        // Complete the close handshake.
        client::until_end(client).await;
    }
    timeout(WAIT, shutdown.closed())
        .await
        .expect("sockets drained");
    alive.until(0).await;

    // A socket opened after the trigger closes at once.
    let mut late = connect(addr).await;
    assert_eq!(close_code(&mut late).await, CloseCode::Away);
}
