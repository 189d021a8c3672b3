//! The `chat` example in fleet mode (`--redis-url`): two instances started in-process on
//! 127.0.0.1:0, one real `redis-server` (started by the test on a free loopback port, as in
//! wsguard-redis's tests), tokio-tungstenite clients. With `CI` set a missing
//! `redis-server` fails these tests; without it they are skipped loudly.
#![cfg(feature = "full")]
#![allow(dead_code, unreachable_pub)]

#[path = "../examples/chat/cli.rs"]
mod cli;
#[path = "../examples/chat/hub.rs"]
mod hub;
#[path = "../crates/wsguard-redis/tests/common/mod.rs"]
mod redis_common;
#[path = "../examples/chat/server.rs"]
mod server;
#[path = "../examples/chat/socket.rs"]
mod socket;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    tungstenite::{self, protocol::frame::coding::CloseCode, Message},
    MaybeTlsStream, WebSocketStream,
};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "a test secret that is 32 bytes long!";

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Starts a chat instance on `redis_url` with `extra` flags.
async fn start(redis_url: &str, extra: &[&str]) -> server::Running {
    let mut argv = vec![
        "chat",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--redis-url",
        redis_url,
        // Every client here is 127.0.0.1 and some poll: the handshake rate per IP, tested
        // on its own in tests/chat.rs, would cut the polling short.
        "--handshake-burst",
        "100000",
    ];
    argv.extend_from_slice(extra);
    let args = cli::Args::try_parse_from(argv).unwrap();
    match server::start(&args).await {
        Ok(running) => running,
        Err(server::Fatal(message)) => panic!("chat did not start: {message}"),
    }
}

fn token(user: &str) -> String {
    server::signing_backend();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": user, "exp": now + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Connects as `user` (no Origin: a non-browser client); the refused handshake's response.
async fn connect(
    running: &server::Running,
    user: &str,
) -> Result<Client, tungstenite::http::Response<Option<Vec<u8>>>> {
    let url = format!("ws://{}/ws?token={}", running.addr, token(user));
    match timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake is answered in time")
    {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(res)) => Err(*res),
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

async fn status(running: &server::Running, user: &str) -> StatusCode {
    match connect(running, user).await {
        Ok(_) => StatusCode::SWITCHING_PROTOCOLS,
        Err(res) => res.status(),
    }
}

/// Tries every 100 ms, for at most `within`, until `user` is let in.
async fn connect_within(running: &server::Running, user: &str, within: Duration) -> Option<Client> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(socket) = connect(running, user).await {
            return Some(socket);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_limit_holds_across_two_instances() {
    let Some(redis) = redis_common::redis_server() else {
        return;
    };
    let a = start(&redis.url(), &["--max-conns-per-user", "3"]).await;
    let b = start(&redis.url(), &["--max-conns-per-user", "3"]).await;
    let mut first = connect(&a, "alice").await.expect("1st on A");
    let _second = connect(&a, "alice").await.expect("2nd on A");
    let _third = connect(&b, "alice").await.expect("3rd on B");
    // The fourth, on either instance, is refused: in memory, B would have held only one.
    for (name, instance) in [("A", &a), ("B", &b)] {
        let res = connect(instance, "alice").await.unwrap_err();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "4th on {name}");
        assert!(res.headers().contains_key("retry-after"), "4th on {name}");
    }
    // Another user is counted apart.
    let _bob = connect(&b, "bob").await.expect("bob on B");
    // Closing a socket on A frees its lease for the whole fleet: B lets alice in again.
    first.close(None).await.unwrap();
    assert!(
        connect_within(&b, "alice", Duration::from_secs(5))
            .await
            .is_some(),
        "the slot freed on A is usable on B within 5 s"
    );
    a.stop(WAIT).await.ok();
    b.stop(WAIT).await.ok();
}

/// Sends `{"type":"ping"}` back to back (at most 100,000 times, for at most 4 s) until the
/// server closes; the pongs received and the close code.
async fn flood(socket: Client) -> (usize, Option<CloseCode>) {
    let (mut tx, mut rx) = socket.split();
    let ping = Message::text(serde_json::json!({"type": "ping"}).to_string());
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0;
        while sent < 100_000 && started.elapsed() < Duration::from_secs(4) {
            if tx.feed(ping.clone()).await.is_err() {
                break;
            }
            sent += 1;
            if sent % 32 == 0 && tx.flush().await.is_err() {
                break;
            }
        }
    });
    let mut pongs = 0;
    let mut close = None;
    loop {
        match timeout(WAIT, rx.next())
            .await
            .expect("the server closes in time")
        {
            Some(Ok(Message::Text(text))) if text.contains("pong") => pongs += 1,
            Some(Ok(Message::Close(frame))) => {
                close = frame.map(|f| f.code);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    writer.await.unwrap();
    (pongs, close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_message_budget_is_shared_by_two_instances() {
    let Some(redis) = redis_common::redis_server() else {
        return;
    };
    // 10 messages at once, then one a second, per user, fleet-wide.
    let flags = ["--msg-rate", "1", "--msg-burst", "10"];
    let a = start(&redis.url(), &flags).await;
    let b = start(&redis.url(), &flags).await;
    let started = Instant::now();
    let (on_a, close_a) = flood(connect(&a, "alice").await.unwrap()).await;
    let (on_b, close_b) = flood(connect(&b, "alice").await.unwrap()).await;
    let refill = started.elapsed().as_secs() as usize + 1;
    assert_eq!(close_a, Some(CloseCode::from(4429)));
    assert_eq!(close_b, Some(CloseCode::from(4429)));
    // A spends the burst; B finds it spent. In memory each instance would answer 10.
    assert!((9..=10 + refill).contains(&on_a), "A answered {on_a}");
    assert!(on_b <= refill, "B answered {on_b} after A spent the budget");
    assert!(on_a + on_b <= 10 + refill, "{on_a} + {on_b}");
    eprintln!("shared budget of 10: {on_a} answered on A, then {on_b} on B");
    // Another user has a budget of their own.
    let (bob, _) = flood(connect(&b, "bob").await.unwrap()).await;
    assert!(bob >= 9, "bob answered {bob}");
    a.stop(WAIT).await.ok();
    b.stop(WAIT).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_is_served_by_policy_until_it_answers() {
    let Some(mut redis) = redis_common::redis_server() else {
        return;
    };
    redis.stop();
    // The chat starts all the same; nothing waits for Redis.
    let closed = start(&redis.url(), &["--redis-failure", "closed"]).await;
    let open = start(&redis.url(), &["--redis-failure", "open"]).await;
    // Closed: the revocation check cannot answer, the handshake is refused (503), promptly.
    let asked = Instant::now();
    let refused = status(&closed, "alice").await;
    assert_eq!(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "fail-closed answered {refused}"
    );
    assert!(asked.elapsed() < WAIT);
    // Open: this instance's memory answers.
    let _alice = connect(&open, "alice")
        .await
        .expect("fail-open lets alice in");
    // Redis comes up: the chat reconnects by itself (at most a second between attempts).
    redis.start();
    assert!(
        connect_within(&closed, "alice", Duration::from_secs(10))
            .await
            .is_some(),
        "the fail-closed instance serves once Redis answers"
    );
    closed.stop(WAIT).await.ok();
    open.stop(WAIT).await.ok();
}

#[test]
fn redis_flags_are_checked_before_listening() {
    // A failure policy without a Redis is a mistake, not a silent no-op.
    for argv in [
        vec!["chat", "--redis-failure", "open"],
        vec![
            "chat",
            "--redis-url",
            "redis://127.0.0.1/",
            "--redis-failure",
            "maybe",
        ],
    ] {
        let error = cli::Args::try_parse_from(&argv).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{argv:?}");
    }
}

#[tokio::test]
async fn a_bad_redis_url_is_refused_at_start_without_echoing_it() {
    let args = cli::Args::try_parse_from([
        "chat",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--redis-url",
        "postgres://user:hunter2@db/",
    ])
    .unwrap();
    let Err(server::Fatal(message)) = server::start(&args).await else {
        panic!("a chat started on a non-Redis URL");
    };
    assert!(message.contains("--redis-url"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_subject_revoked_anywhere_in_the_fleet_closes_its_open_socket_with_4403() {
    let Some(redis) = redis_common::redis_server() else {
        return;
    };
    let a = start(&redis.url(), &[]).await;
    let b = start(&redis.url(), &[]).await;
    let mut alice = connect(&b, "alice").await.expect("alice connects to B");
    let mut bob = connect(&a, "bob").await.expect("bob connects to A");
    // Both instances' subscribers are listening before anything is published.
    let conn = redis.connect().await;
    let channel = "wsguard:chat:rv:closed";
    let subscribed = redis_common::eventually(WAIT, || {
        let mut conn = conn.clone();
        async move {
            let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            counts.first().is_some_and(|(_, n)| *n >= 2)
        }
    })
    .await;
    assert!(subscribed, "both chats subscribe to {channel}");
    // An operator's tool on the same Redis and prefix logs alice out everywhere.
    let fleet = wsguard_redis::Fleet::new(conn.clone()).with_prefix("wsguard:chat:");
    let revocations = wsguard_redis::RedisRevocations::new(fleet);
    let now = SystemTime::now();
    revocations
        .revoke_subject_before(
            "alice",
            now + Duration::from_secs(1),
            now + Duration::from_secs(3600),
        )
        .await
        .expect("the revocation is stored and published");
    let code = timeout(WAIT, async {
        while let Some(message) = alice.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|frame| frame.code);
            }
        }
        None
    })
    .await
    .expect("alice's socket on B is closed in time");
    assert_eq!(code, Some(CloseCode::Library(4403)));
    // Bob, on the other instance, is not affected.
    bob.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let answer = timeout(WAIT, bob.next()).await.expect("bob is answered");
    assert!(
        matches!(answer, Some(Ok(Message::Text(_)))),
        "bob's socket still serves: {answer:?}"
    );
    // And alice's token is refused from now on, on either instance.
    assert_eq!(status(&a, "alice").await, StatusCode::FORBIDDEN);
    a.stop(WAIT).await.ok();
    b.stop(WAIT).await.ok();
}
