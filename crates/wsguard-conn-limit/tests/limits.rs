//! Connection limits over real sockets: a real axum server on 127.0.0.1:0 and real
//! tokio-tungstenite clients. The slots follow the socket for its whole life.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{body::Body, extract::ws::WebSocketUpgrade, response::Response, routing::get, Router};
use http::{Request, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, Barrier},
    time::timeout,
};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream,
};
use tower::ServiceBuilder;
use wsguard_conn_limit::{ConnLimitLayer, InMemoryConnectionStore, Limit};
use wsguard_core::{
    axum::GuardedUpgrade, guard::PendingRejection, ClientIp, Principal, Reason, Rejection,
};
use wsguard_test_kit::{
    client::{self, Client, Refusal},
    handoff::{Echo, SocketHandler},
    poll, server, MAX_MESSAGES, WAIT,
};

/// Sets the identity a real deployment gets from wsguard-client-ip and wsguard-jwt-auth, from
/// test headers (`x-user`, `x-ip`).
fn identity(mut req: Request<Body>) -> Request<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (user, ip, refused) = (header("x-user"), header("x-ip"), header("x-refused"));
    if let Some(user) = user {
        req.extensions_mut().insert(Principal::new(user));
    }
    if refused.is_some() {
        // What an authentication layer in close mode does with a bad token: no principal,
        // and a rejection for the hand-off to deliver.
        let _ = PendingRejection::defer(req.extensions_mut(), Rejection::new(Reason::TokenInvalid));
    }
    let ip = ip
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    req.extensions_mut().insert(ClientIp(ip));
    req
}

/// An echo server behind `layer`; `/sse` streams whatever the test sends on the channel it
/// gets through `streams`, `/plain` answers at once, `/unguarded` upgrades without a hand-off.
async fn serve(
    layer: ConnLimitLayer,
) -> (SocketAddr, mpsc::UnboundedReceiver<mpsc::Sender<String>>) {
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/ws",
            get(|upgrade: GuardedUpgrade| async move {
                upgrade.on_upgrade(|socket, conn| Echo.handle(socket, conn))
            }),
        )
        .route(
            "/unguarded",
            get(|upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(|mut socket| async move {
                    for _ in 0..MAX_MESSAGES {
                        if socket.recv().await.is_none() {
                            break;
                        }
                    }
                })
            }),
        )
        .route("/plain", get(|| async { "done" }))
        .route(
            "/sse",
            get(move || {
                let streams = streams_tx.clone();
                async move {
                    let (tx, rx) = mpsc::channel::<String>(4);
                    let _ = streams.send(tx);
                    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|line| (Ok::<_, Infallible>(format!("data: {line}\n\n")), rx))
                    });
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(stream))
                        .unwrap()
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .map_request(identity)
                .layer(layer)
                .map_response(|res: Response<_>| res.map(Body::new)),
        );
    (server::axum_without_connect_info(app).await, streams_rx)
}

fn request(
    addr: SocketAddr,
    path: &str,
    user: &str,
    ip: &str,
) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !user.is_empty() {
        req.headers_mut().insert("x-user", user.parse().unwrap());
    }
    req.headers_mut().insert("x-ip", ip.parse().unwrap());
    req
}

/// Connects; `Ok` with an open socket or `Err` with the refused status and `Retry-After`.
async fn connect(addr: SocketAddr, user: &str, ip: &str) -> Result<Client, Refusal> {
    client::try_connect(request(addr, "/ws", user, ip)).await
}

/// Proves the socket is open end to end.
async fn echo(socket: &mut Client) {
    client::round_trip(socket, "ping").await;
}

/// The code of the first message, which must be a close frame (a refusal in close mode).
async fn first_close_code(socket: &mut Client) -> CloseCode {
    match client::next(socket).await {
        Message::Close(Some(frame)) => frame.code,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Waits (bounded) until the limit named `name` counts `n` connections.
async fn until_active(layer: &ConnLimitLayer, name: &str, n: u64) {
    poll::until_eq(
        format_args!("limit {name} active"),
        || layer.active(name),
        Some(n),
    )
    .await;
}

#[tokio::test]
async fn a_fourth_socket_of_one_user_is_refused_until_one_closes() {
    let layer = ConnLimitLayer::builder().per_principal(3).build().unwrap();
    let (addr, _) = serve(layer.clone()).await;

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(addr, "alice", "192.0.2.1").await.unwrap();
        echo(&mut socket).await;
        open.push(socket);
    }
    assert_eq!(layer.active("principal"), Some(3));

    let (status, retry_after) = connect(addr, "alice", "192.0.2.1").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("5"));
    // Another user is not affected, and the refused request held nothing.
    let bob = connect(addr, "bob", "192.0.2.1").await.unwrap();
    assert_eq!(layer.active("principal"), Some(4));

    client::close(open.pop().unwrap()).await;
    until_active(&layer, "principal", 3).await;
    let mut again = connect(addr, "alice", "192.0.2.1").await.unwrap();
    echo(&mut again).await;
    drop((bob, again, open));
    until_active(&layer, "principal", 0).await;
    assert_eq!(layer.store().tracked_keys(), 0);
}

#[tokio::test]
async fn stacked_limits_refuse_all_or_nothing() {
    let layer = ConnLimitLayer::builder()
        .global(3)
        .per_ip(2)
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;

    let a1 = connect(addr, "", "192.0.2.1").await.unwrap();
    let a2 = connect(addr, "", "192.0.2.1").await.unwrap();
    let (status, _) = connect(addr, "", "192.0.2.1").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the per-IP limit");
    assert_eq!(
        layer.active("global"),
        Some(2),
        "the refused socket holds no global slot"
    );
    assert_eq!(layer.active("ip"), Some(2));

    let b1 = connect(addr, "", "192.0.2.2").await.unwrap();
    let (status, retry_after) = connect(addr, "", "192.0.2.3").await.err().unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the global limit");
    assert!(retry_after.is_some());
    assert_eq!(layer.active("global"), Some(3));
    assert_eq!(
        layer.active("ip"),
        Some(3),
        "192.0.2.3 holds no per-IP slot"
    );
    // Keys: the global one, 192.0.2.1 and 192.0.2.2.
    assert_eq!(layer.store().tracked_keys(), 3);

    // IPv6 clients of one /64 share their slots.
    drop((a1, a2, b1));
    until_active(&layer, "global", 0).await;
    let c1 = connect(addr, "", "2001:db8::1").await.unwrap();
    let c2 = connect(addr, "", "2001:db8::2").await.unwrap();
    let (status, _) = connect(addr, "", "2001:db8::ffff:3").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let other_net = connect(addr, "", "2001:db8:0:1::1").await.unwrap();
    drop((c1, c2, other_net));
    until_active(&layer, "global", 0).await;
    assert_eq!(layer.store().tracked_keys(), 0);
}

#[tokio::test]
async fn an_aborted_tcp_connection_frees_its_slot() {
    let layer = ConnLimitLayer::builder().per_principal(1).build().unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let mut socket = connect(addr, "alice", "192.0.2.1").await.unwrap();
    echo(&mut socket).await;
    // Drop the TCP stream itself: no close frame, as when a client crashes.
    let tcp = match socket.into_inner() {
        MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("plain ws:// connection"),
    };
    drop(tcp);
    until_active(&layer, "principal", 0).await;
    connect(addr, "alice", "192.0.2.1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_abort_cycles_leave_nothing_behind() {
    const TASKS: usize = 8;
    const CYCLES: usize = 1_250;
    let layer = ConnLimitLayer::builder()
        .global(100_000)
        .per_ip(1_000)
        .limit(Limit::per_principal(1_000).optional())
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(async move {
                for cycle in 0..CYCLES {
                    let ip = format!("198.51.{task}.{}", cycle % 200);
                    let user = format!("user-{}", cycle % 37);
                    match cycle % 3 {
                        // Abort right after the handshake, without a close frame.
                        0 => drop(connect(addr, &user, &ip).await.unwrap()),
                        // Abort in the middle of the handshake request.
                        1 => {
                            let mut tcp = TcpStream::connect(addr).await.unwrap();
                            let _ = tcp
                                .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
                                .await;
                            drop(tcp);
                        }
                        // A clean close.
                        _ => client::close(connect(addr, "", &ip).await.unwrap()).await,
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        timeout(Duration::from_secs(300), task)
            .await
            .unwrap()
            .unwrap();
    }
    until_active(&layer, "global", 0).await;
    until_active(&layer, "ip", 0).await;
    until_active(&layer, "principal", 0).await;
    assert_eq!(layer.store().tracked_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_for_the_last_slots_never_exceeds_the_limit() {
    const RACERS: usize = 24;
    const MAX: usize = 5;
    let layer = ConnLimitLayer::builder()
        .per_principal(MAX as u32)
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                connect(addr, "alice", "192.0.2.1").await
            })
        })
        .collect();
    let mut won = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Ok(socket) => won.push(socket),
            Err((status, _)) => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
        }
    }
    assert_eq!(won.len(), MAX, "exactly the free slots were taken");
    assert_eq!(layer.active("principal"), Some(MAX as u64));
}

/// Reads an HTTP/1.1 response head from `tcp`.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "oversized head");
        let n = timeout(WAIT, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "connection closed in the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn a_streaming_body_holds_its_slot_until_it_ends_or_the_client_leaves() {
    let layer = ConnLimitLayer::builder().per_principal(1).build().unwrap();
    let (addr, mut streams) = serve(layer.clone()).await;
    let get = b"GET /sse HTTP/1.1\r\nHost: x\r\nx-user: alice\r\n\r\n";

    // The server ends the stream.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(get).await.unwrap();
    let stream = timeout(WAIT, streams.recv()).await.unwrap().unwrap();
    assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 200"));
    stream.send("one".into()).await.unwrap();
    assert_eq!(layer.active("principal"), Some(1), "held while streaming");
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(get).await.unwrap();
    assert!(read_head(&mut second).await.starts_with("HTTP/1.1 429"));
    drop(stream);
    until_active(&layer, "principal", 0).await;

    // The client goes away in the middle of the stream.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(get).await.unwrap();
    let stream = timeout(WAIT, streams.recv()).await.unwrap().unwrap();
    assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 200"));
    assert_eq!(layer.active("principal"), Some(1));
    drop(tcp);
    // hyper notices the closed connection when it next writes.
    let _ = stream.send("two".into()).await;
    until_active(&layer, "principal", 0).await;
}

#[tokio::test]
async fn a_plain_response_releases_its_slot_when_done() {
    let layer = ConnLimitLayer::builder().per_principal(1).build().unwrap();
    let (addr, _) = serve(layer.clone()).await;
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\nx-user: alice\r\n\r\n")
            .await
            .unwrap();
        assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 200"));
        until_active(&layer, "principal", 0).await;
    }
}

#[tokio::test]
async fn an_upgrade_without_a_wsguard_hand_off_is_refused() {
    let layer = ConnLimitLayer::builder().per_principal(1).build().unwrap();
    let (addr, _) = serve(layer.clone()).await;
    match client::try_connect(request(addr, "/unguarded", "alice", "192.0.2.1")).await {
        Err((status, _)) => assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR),
        Ok(_) => panic!("expected a refusal, got an open socket"),
    }
    until_active(&layer, "principal", 0).await;
}

#[tokio::test]
async fn close_mode_accepts_then_closes_with_4429() {
    let layer = ConnLimitLayer::builder()
        .per_principal(1)
        .close_mode(true)
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let mut first = connect(addr, "alice", "192.0.2.1").await.unwrap();
    let mut refused = connect(addr, "alice", "192.0.2.1")
        .await
        .expect("close mode completes the upgrade");
    assert_eq!(first_close_code(&mut refused).await, CloseCode::from(4429));
    assert_eq!(
        layer.active("principal"),
        Some(1),
        "the refused socket holds nothing"
    );
    echo(&mut first).await;
}

#[tokio::test]
async fn a_handshake_refused_earlier_in_close_mode_is_closed_with_that_code() {
    // The principal limit has no key for it (no principal): it does not apply, and nothing
    // is logged as a misconfiguration. The IP limit still counts it while it is open.
    let layer = ConnLimitLayer::builder()
        .per_principal(5)
        .per_ip(2)
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let mut req = request(addr, "/ws", "", "192.0.2.9");
    req.headers_mut().insert("x-refused", "1".parse().unwrap());
    let mut refused = client::try_connect(req)
        .await
        .expect("the hand-off completes the upgrade to close it");
    assert_eq!(first_close_code(&mut refused).await, CloseCode::from(4401));
    assert_eq!(layer.active("principal"), Some(0));
    drop(refused);
    until_active(&layer, "ip", 0).await;
}

#[tokio::test]
async fn a_key_cap_refuses_new_keys_with_503() {
    use std::num::NonZeroUsize;
    let store = InMemoryConnectionStore::with_max_keys(NonZeroUsize::new(1).unwrap());
    let layer = ConnLimitLayer::builder()
        .per_principal(5)
        .store(store)
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let _alice = connect(addr, "alice", "192.0.2.1").await.unwrap();
    let (status, _) = connect(addr, "bob", "192.0.2.1").await.err().unwrap();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a new key beyond the cap"
    );
    let _alice2 = connect(addr, "alice", "192.0.2.1").await.unwrap();
    assert_eq!(layer.store().tracked_keys(), 1);
}

#[tokio::test]
async fn a_missing_key_is_a_server_error_unless_the_limit_is_optional() {
    let layer = ConnLimitLayer::builder().per_principal(5).build().unwrap();
    let (addr, _) = serve(layer).await;
    let (status, _) = connect(addr, "", "192.0.2.1").await.err().unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    let layer = ConnLimitLayer::builder()
        .limit(Limit::per_principal(5).optional())
        .build()
        .unwrap();
    let (addr, _) = serve(layer.clone()).await;
    let _anonymous = connect(addr, "", "192.0.2.1").await.unwrap();
    assert_eq!(layer.active("principal"), Some(0));
}
