//! Over real sockets: axum 0.8 on 127.0.0.1:0 with wsguard-core's `GuardedUpgrade`, and
//! tokio-tungstenite clients.
//!
//! These run on the real clock: tokio's paused clock jumps to the next timer while socket
//! data is in flight (readiness found by its zero-timeout poll does not stop the jump), so
//! client timeouts fire early. The exact timing is tested on the paused clock at the tower
//! level (`tests/layer.rs`); here, where a refill could happen during a flood, the
//! assertions allow for the time the flood measurably took.

use std::{net::SocketAddr, time::Duration};

use axum::{extract::ws::Message, routing::get, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode};
use tower::ServiceBuilder;
use wsguard_core::{axum::GuardedUpgrade, GuardedSocket, PrincipalKey};
use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer, OnExcess};
use wsguard_test_kit::{
    client::{self, Client},
    server,
    service::query_identity,
    MAX_MESSAGES,
};

const RATE_LIMITED: &str = r#"{"type":"error","code":"rate_limited"}"#;

/// An echo server whose sockets go through `layer`, answering every refusal (the plane's
/// default coalesces refusal frames: these tests count one answer per message).
async fn serve(layer: MessageRateLimitLayer) -> SocketAddr {
    serve_with(layer, u32::MAX).await
}

/// An echo server whose sockets go through `layer` and send at most `replies` refusal
/// frames per second. In front of it, a stand-in for an authentication layer: `?user=NAME`
/// becomes the principal.
async fn serve_with(layer: MessageRateLimitLayer, replies: u32) -> SocketAddr {
    let ws = move |upgrade: GuardedUpgrade| {
        let layer = layer.clone();
        async move {
            upgrade.on_upgrade(move |socket, conn| async move {
                let mut socket =
                    GuardedSocket::layered(socket, conn, &layer).max_replies_per_second(replies);
                for _ in 0..MAX_MESSAGES {
                    let Some(Ok(msg)) = socket.next().await else {
                        break;
                    };
                    if matches!(msg, Message::Text(_) | Message::Binary(_))
                        && socket.send(msg).await.is_err()
                    {
                        break;
                    }
                }
            })
        }
    };
    let app = Router::new()
        .route("/ws", get(ws))
        .layer(ServiceBuilder::new().map_request(query_identity::<axum::body::Body>));
    server::axum_without_connect_info(app).await
}

async fn connect(addr: SocketAddr, user: &str) -> Client {
    client::connect(addr, &format!("/ws?user={user}")).await
}

/// Sends `n` numbered messages at once, then reads the `n` answers: echoes and error
/// frames. Returns the echoed numbers and the error frames.
async fn flood(client: &mut Client, from: usize, n: usize) -> (Vec<usize>, Vec<String>) {
    for i in from..from + n {
        client
            .feed(tungstenite::Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut echoed = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..n {
        let answer = client::next(client).await;
        let text = answer.into_text().unwrap().to_string();
        match text.strip_prefix('m') {
            Some(num) => echoed.push(num.parse().unwrap()),
            None => errors.push(text),
        }
    }
    (echoed, errors)
}

fn ten_per_second() -> Budget {
    Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(10))
}

/// How many refills of a 10-per-second budget fit in `elapsed`.
fn refills(elapsed: Duration) -> usize {
    usize::try_from(elapsed.as_millis() / 100).unwrap()
}

#[tokio::test]
async fn a_flood_of_100_gets_exactly_the_burst_then_the_rate() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .never_close();
    let addr = serve(layer).await;
    let mut client = connect(addr, "alice").await;

    // 100 messages at once: the burst of 10 passes, every other message gets the error
    // frame. (A flood takes a few milliseconds; should it take over 100 ms, the refills
    // of that time pass too.)
    let start = Instant::now();
    let (echoed, errors) = flood(&mut client, 0, 100).await;
    let extra = refills(start.elapsed());
    assert!(
        (10..=10 + extra).contains(&echoed.len()),
        "{} passed, {extra} refills",
        echoed.len()
    );
    assert_eq!(
        &echoed[..10],
        &(0..10).collect::<Vec<_>>()[..],
        "the first 10 pass"
    );
    assert_eq!(echoed.len() + errors.len(), 100);
    assert!(errors.iter().all(|e| e == RATE_LIMITED));

    // The budget refills at the stated rate, one message per 100 ms... The server emptied it
    // during the flood, between `start` and now, so the refills since `start` (less those the
    // flood already used) bound what passes from above.
    let first_extra = echoed.len() - 10;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (echoed, _) = flood(&mut client, 100, 10).await;
    let refilled = refills(start.elapsed()) - first_extra;
    assert!(
        (3..=refilled).contains(&echoed.len()),
        "{} passed after at most {refilled} refills",
        echoed.len()
    );

    // ...and a quiet spell refills the burst, never more.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let start = Instant::now();
    let (echoed, errors) = flood(&mut client, 200, 30).await;
    let extra = refills(start.elapsed());
    assert!(
        (10..=10 + extra).contains(&echoed.len()),
        "{}",
        echoed.len()
    );
    assert_eq!(echoed.len() + errors.len(), 30);
    client::close(client).await;
}

#[tokio::test]
async fn backpressure_slows_the_client_and_drops_nothing() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .on_excess(OnExcess::Backpressure);
    let addr = serve(layer).await;
    let mut client = connect(addr, "alice").await;
    let start = Instant::now();
    let (echoed, errors) = flood(&mut client, 0, 13).await;
    assert_eq!(echoed, (0..13).collect::<Vec<_>>());
    assert!(errors.is_empty());
    // 10 at once, then one every 100 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

/// A budget that does not refill within a test: 10 at once, then one a minute.
fn ten_per_minute() -> Budget {
    Budget::new().messages(rate(1).per(Duration::from_secs(60)).burst(10))
}

#[tokio::test]
async fn one_principal_shares_a_budget_two_principals_do_not() {
    let layer = MessageRateLimitLayer::new()
        .per_key(PrincipalKey::default(), ten_per_minute())
        .unwrap();
    let addr = serve(layer).await;
    let mut alice_1 = connect(addr, "alice").await;
    let mut alice_2 = connect(addr, "alice").await;
    let mut bob = connect(addr, "bob").await;

    let (echoed, _) = flood(&mut alice_1, 0, 6).await;
    assert_eq!(echoed.len(), 6);
    // Alice's second socket only gets what her first left of the shared budget.
    let (echoed, errors) = flood(&mut alice_2, 0, 10).await;
    assert_eq!((echoed.len(), errors.len()), (4, 6));
    // Bob has a budget of his own.
    let (echoed, errors) = flood(&mut bob, 0, 12).await;
    assert_eq!((echoed.len(), errors.len()), (10, 2));
}

#[tokio::test]
async fn sustained_abuse_closes_the_socket_with_4429() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_minute())
        .unwrap()
        // A window long enough that no refusal is forgiven while the flood is read.
        .close_after(20, Duration::from_secs(600))
        .unwrap();
    let addr = serve(layer).await;
    let mut client = connect(addr, "mallory").await;
    for i in 0..100 {
        client
            .feed(tungstenite::Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let (mut echoes, mut errors) = (0, 0);
    let mut close = None;
    // At most one answer per message, then the close.
    for _ in 0..=100 {
        match client::next(&mut client).await {
            tungstenite::Message::Text(t) if t.starts_with('m') => echoes += 1,
            tungstenite::Message::Text(_) => errors += 1,
            tungstenite::Message::Close(frame) => {
                close = Some(frame);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let close = close.expect("the close after the answers");
    assert_eq!((echoes, errors), (10, 20));
    let frame = close.expect("a close frame");
    assert_eq!(frame.code, CloseCode::from(4429));
    assert_eq!(frame.reason.as_str(), "rate limit exceeded");
}
