//! `wsguard::serve` over real sockets: stalled connections are closed by the first-byte and
//! header-read timeouts, connections over the pending-head caps are closed at once (per IP and
//! in all, telling IPs apart with 127.0.0.1, 127.0.0.2 and 127.0.0.3, which are all loopback on
//! Linux), valid WebSocket handshakes still succeed, the peer reaches the application, and
//! graceful shutdown behaves as `axum::serve`'s.
#![cfg(all(feature = "serve", feature = "axum", feature = "client-ip"))]

use std::{
    future::IntoFuture,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use axum::{
    extract::{
        ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade},
        ConnectInfo, State,
    },
    response::Response,
    routing::get,
    Extension, Router,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};
use tokio_tungstenite::{tungstenite::Message, WebSocketStream};
use wsguard::{
    client_ip::ClientIpLayer,
    serve::{serve, ConfigError, ServeConfig, ServeConfigBuilder},
    ClientIp, PeerAddr,
};

/// A generous bound on anything that should happen by itself.
const WAIT: Duration = Duration::from_secs(10);
/// Long enough that no timeout closes a connection during a test that checks the caps.
const LONG: Duration = Duration::from_secs(60);
const PARTIAL_HEAD: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\n";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn ws_echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, AxumMessage::Text(_)) && socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

async fn peer(
    ConnectInfo(connect_info): ConnectInfo<SocketAddr>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Extension(client_ip): Extension<ClientIp>,
) -> String {
    format!("{} {} {}", connect_info.ip(), peer.ip(), client_ip)
}

/// Signals that it is running, then answers after 300 ms.
async fn slow(State(entered): State<mpsc::Sender<()>>) -> &'static str {
    let _ = entered.send(()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    "slow"
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    entered: mpsc::Receiver<()>,
}

async fn start(config: ServeConfig) -> Server {
    let (entered_tx, entered) = mpsc::channel(4);
    let app = Router::new()
        .route("/ws", get(ws_echo))
        .route("/peer", get(peer).layer(ClientIpLayer::new()))
        .route("/slow", get(slow))
        .with_state(entered_tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = serve(listener, app)
        .with_config(config)
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
    Server {
        addr,
        stop: Some(stop),
        task: tokio::spawn(server.into_future()),
        entered,
    }
}

fn config() -> ServeConfigBuilder {
    ServeConfig::builder()
        .first_byte_timeout(LONG)
        .header_read_timeout(LONG)
}

/// A TCP connection from `from` (a loopback address) that has sent `bytes` and nothing more.
async fn stalled(addr: SocketAddr, from: IpAddr, bytes: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

/// Reads until the server closes the connection (end of stream or reset); what it sent, or
/// `None` if it was still open after `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = timeout(limit, async {
        let mut buf = [0u8; 1024];
        // Bounded by the timeout around it; a byte count per read keeps the loop honest.
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

/// Whether the connection is still open after `wait` (the server neither sent nor closed).
async fn still_open(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1];
    timeout(wait, tcp.read(&mut buf)).await.is_err()
}

/// A WebSocket handshake from `from`, then one echoed message.
async fn echo_from(addr: SocketAddr, from: IpAddr) -> Result<(), String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(from, 0))
        .map_err(|e| e.to_string())?;
    let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let (mut ws, _) = timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    ws.send(Message::text("hello"))
        .await
        .map_err(|e| e.to_string())?;
    match timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(msg))) if msg == Message::text("hello") => Ok(()),
        other => Err(format!("no echo: {other:?}")),
    }
}

/// Retries `echo_from` while the server frees places that a closed connection held (the
/// server frees them when it sees the close, shortly after the client does); at most 50 tries.
async fn echo_from_eventually(addr: SocketAddr, from: IpAddr) {
    let mut last = String::new();
    for _ in 0..50 {
        match echo_from(addr, from).await {
            Ok(()) => return,
            Err(error) => last = error,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the handshake from {from} kept failing: {last}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_first_byte_timeout() {
    // The header-read timeout is long: only the first-byte timeout can close it in time.
    let server = start(
        config()
            .first_byte_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .await;
    let mut silent = stalled(server.addr, ip(1), b"").await;
    let received = closed_within(&mut silent, WAIT)
        .await
        .expect("a silent connection stayed open");
    assert!(received.is_empty(), "the server answered: {received:?}");
}

#[tokio::test]
async fn a_partial_head_kept_open_is_closed_by_the_header_read_timeout() {
    // The first byte arrives at once; only hyper's header-read timeout can close it in time.
    let server = start(
        config()
            .header_read_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let mut partial = stalled(server.addr, ip(1), PARTIAL_HEAD).await;
    let received = closed_within(&mut partial, WAIT)
        .await
        .expect("a partial head stayed open");
    // hyper closes without an answer (no 408).
    assert!(received.is_empty(), "the server answered: {received:?}");
}

#[tokio::test]
async fn the_header_read_timeout_alone_also_closes_a_silent_connection() {
    // hyper's timer starts when it first waits for a head, not at the first byte.
    let server = start(
        config()
            .header_read_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .await;
    let mut silent = stalled(server.addr, ip(1), b"").await;
    assert!(closed_within(&mut silent, WAIT).await.is_some());
}

#[tokio::test]
async fn over_the_caps_a_new_connection_is_closed_at_once_per_ip_and_in_all() {
    let server = start(
        config()
            .max_pending_heads(4)
            .max_pending_heads_per_ip(2)
            .build()
            .unwrap(),
    )
    .await;
    let addr = server.addr;

    // 127.0.0.1 fills its two places; its third connection is closed at once (the timeouts
    // are a minute: nothing else closes it within the bound).
    let mut held = vec![
        stalled(addr, ip(1), b"").await,
        stalled(addr, ip(1), PARTIAL_HEAD).await,
    ];
    let mut third = stalled(addr, ip(1), b"").await;
    let received = closed_within(&mut third, WAIT)
        .await
        .expect("the connection over the per-IP cap stayed open");
    assert!(received.is_empty(), "a cut connection got an answer");
    assert!(echo_from(addr, ip(1)).await.is_err());

    // Another address is not affected: a handshake from 127.0.0.2 succeeds.
    echo_from(addr, ip(2)).await.unwrap();

    // 127.0.0.2 takes the last two places in all: now 127.0.0.3 is cut by the global cap.
    held.push(stalled(addr, ip(2), b"").await);
    held.push(stalled(addr, ip(2), PARTIAL_HEAD).await);
    let mut fifth = stalled(addr, ip(3), b"").await;
    assert!(closed_within(&mut fifth, WAIT).await.is_some());
    assert!(echo_from(addr, ip(3)).await.is_err());
    for tcp in &mut held {
        assert!(still_open(tcp, Duration::from_millis(100)).await);
    }

    // Closing one stalled connection frees its place (and its address's entry).
    drop(held.remove(0));
    echo_from_eventually(addr, ip(3)).await;
    echo_from_eventually(addr, ip(1)).await;
}

#[tokio::test]
async fn a_valid_handshake_succeeds_while_stalls_are_held_and_after_they_time_out() {
    let server = start(
        ServeConfig::builder()
            .first_byte_timeout(Duration::from_millis(300))
            .header_read_timeout(Duration::from_millis(500))
            .max_pending_heads(8)
            .max_pending_heads_per_ip(4)
            .build()
            .unwrap(),
    )
    .await;
    let addr = server.addr;
    let mut stalls = Vec::new();
    for _ in 0..2 {
        stalls.push(stalled(addr, ip(2), b"").await);
        stalls.push(stalled(addr, ip(2), PARTIAL_HEAD).await);
    }

    // 127.0.0.2's places are taken; 127.0.0.1 is served.
    echo_from(addr, ip(1)).await.unwrap();
    assert!(echo_from(addr, ip(2)).await.is_err());

    // The stalls time out by themselves; then 127.0.0.2 is served again.
    for tcp in &mut stalls {
        assert!(closed_within(tcp, WAIT).await.is_some());
    }
    echo_from_eventually(addr, ip(2)).await;
}

#[tokio::test]
async fn the_peer_reaches_the_application_as_connect_info_peer_addr_and_client_ip() {
    let server = start(config().build().unwrap()).await;
    let mut tcp = stalled(
        server.addr,
        ip(2),
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let received = closed_within(&mut tcp, WAIT).await.expect("no answer");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("127.0.0.2 127.0.0.2 127.0.0.2"), "{text}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight_and_leaves_upgraded_sockets() {
    let mut server = start(config().build().unwrap()).await;
    let addr = server.addr;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _): (WebSocketStream<TcpStream>, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
            .await
            .unwrap();
    let mut silent = stalled(addr, ip(1), b"").await;
    let mut in_flight = stalled(addr, ip(1), b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    timeout(WAIT, server.entered.recv())
        .await
        .expect("the slow request did not start")
        .unwrap();

    server.stop.take().unwrap().send(()).unwrap();

    // The request in flight gets its whole answer, told that the connection closes.
    let received = closed_within(&mut in_flight, WAIT)
        .await
        .expect("the connection of the finished request stayed open");
    let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.ends_with("slow"), "{text}");
    // A connection that sent nothing is closed, the server's future completes and the
    // listener is gone.
    assert!(closed_within(&mut silent, WAIT).await.is_some());
    timeout(WAIT, server.task)
        .await
        .expect("the server did not stop")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err());

    // The upgraded socket is the application's: it still echoes.
    ws.send(Message::text("still here")).await.unwrap();
    let echo = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo, Message::text("still here"));
}

#[test]
fn the_defaults_are_the_documented_ones_and_bad_values_fail_at_build_time() {
    let defaults = ServeConfig::default();
    assert_eq!(defaults.header_read_timeout(), Duration::from_secs(10));
    assert_eq!(defaults.first_byte_timeout(), Duration::from_secs(10));
    assert_eq!(defaults.max_pending_heads(), 512);
    assert_eq!(defaults.max_pending_heads_per_ip(), 16);
    assert!(ServeConfig::builder().build().is_ok());

    assert!(matches!(
        ServeConfig::builder()
            .header_read_timeout(Duration::ZERO)
            .build(),
        Err(ConfigError::Timeout {
            name: "header_read_timeout",
            ..
        })
    ));
    assert!(matches!(
        ServeConfig::builder()
            .first_byte_timeout(Duration::MAX)
            .build(),
        Err(ConfigError::Timeout {
            name: "first_byte_timeout",
            ..
        })
    ));
    assert_eq!(
        ServeConfig::builder().max_pending_heads(0).build().err(),
        Some(ConfigError::ZeroCap {
            name: "max_pending_heads"
        })
    );
    assert_eq!(
        ServeConfig::builder()
            .max_pending_heads_per_ip(0)
            .build()
            .err(),
        Some(ConfigError::ZeroCap {
            name: "max_pending_heads_per_ip"
        })
    );
    assert_eq!(
        ServeConfig::builder()
            .max_pending_heads(8)
            .max_pending_heads_per_ip(9)
            .build()
            .err(),
        Some(ConfigError::PerIpAboveGlobal {
            per_ip: 9,
            global: 8
        })
    );
}

/// Echoes through the message plane with a 4 KiB message limit.
async fn guarded_echo(up: wsguard::axum::GuardedUpgrade) -> Response {
    use wsguard::{Admit, GuardedSocket};
    up.max_message_size(4096)
        .max_frame_size(4096)
        .on_upgrade(|socket, conn| async move {
            let mut socket = GuardedSocket::new(socket, conn, Admit);
            while let Some(Ok(msg)) = socket.next().await {
                if matches!(msg, AxumMessage::Text(_)) && socket.send(msg).await.is_err() {
                    break;
                }
            }
        })
}

#[tokio::test]
async fn a_close_with_unread_data_ends_with_fin_not_a_reset() {
    // The server stops reading at an oversized frame's header (1009), with the client's
    // bytes unread. Dropping the connection then would send a reset, which a client's
    // TCP stack may act on before its application reads the close frame (Windows discards
    // the receive buffer). The lingering close shuts the write side (FIN), reads and
    // discards what the client still sends, then closes: the client reads the close frame,
    // then a clean end of stream.
    let app = Router::new().route("/ws", get(guarded_echo));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app).into_future());
    for round in 0..3 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = timeout(
            WAIT,
            tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp),
        )
        .await
        .unwrap()
        .unwrap();
        let tcp = ws.get_mut();
        // A masked text frame announcing 1 MiB, of which 256 KiB follow.
        let mut raw = vec![0x81, 0x80 | 127];
        raw.extend_from_slice(&(1u64 << 20).to_be_bytes());
        raw.extend_from_slice(&[1, 2, 3, 4]);
        raw.extend(std::iter::repeat_n(b'x', 256 << 10));
        let _ = timeout(WAIT, tcp.write_all(&raw)).await;
        let mut received = Vec::new();
        let end = loop {
            let mut buf = [0u8; 4096];
            match timeout(WAIT, tcp.read(&mut buf))
                .await
                .expect("the end in time")
            {
                Ok(0) => break Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(err) => break Err(err.kind()),
            }
        };
        assert_eq!(
            received.get(..4),
            Some(&[0x88, 19, 0x03, 0xF1][..]),
            "round {round}: a close frame with 1009 first"
        );
        assert_eq!(
            end,
            Ok(()),
            "round {round}: a clean end of stream, not a reset"
        );
    }
}
