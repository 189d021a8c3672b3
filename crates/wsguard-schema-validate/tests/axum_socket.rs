//! Over real sockets: axum 0.8 on 127.0.0.1:0 with wsguard-core's `GuardedUpgrade`, and a
//! tokio-tungstenite client.

mod common;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{extract::ws::Message, routing::get, Router};
use common::{hostile_messages, Command, Sessions, FORBIDDEN, INVALID};
use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode};
use tower::{Layer, Service, ServiceBuilder};
use wsguard_core::{axum::GuardedUpgrade, Admit, GuardedSocket, Inbound, Verdict};
use wsguard_schema_validate::ValidateMessageLayer;
use wsguard_test_kit::{
    client::{self, Client},
    server,
    service::query_identity,
    MAX_MESSAGES,
};

/// The application: answers each admitted command from its parsed value (not parsing it
/// again). In front of it, a stand-in for an authentication layer: `?user=NAME&ttl_ms=N`
/// become the principal and a token expiry N ms from now.
async fn serve<L>(plane: L, message_limit: usize) -> SocketAddr
where
    L: Layer<Admit> + Clone + Send + Sync + 'static,
    L::Service:
        Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible> + Send + 'static,
    <L::Service as Service<Inbound<Message>>>::Future: Send,
{
    let ws = move |upgrade: GuardedUpgrade| {
        let plane = plane.clone();
        async move {
            // The hand-off refuses larger frames from their header, before buffering them.
            upgrade
                .max_message_size(message_limit)
                .max_frame_size(message_limit)
                .on_upgrade(move |socket, conn| async move {
                    // Every refusal answered: these tests read one answer per message (the
                    // plane's default coalesces refusal frames to a few per second).
                    let mut socket = GuardedSocket::layered(socket, conn, &plane)
                        .max_replies_per_second(u32::MAX);
                    for _ in 0..MAX_MESSAGES {
                        let Some(Ok(mut msg)) = socket.next_admitted().await else {
                            break;
                        };
                        let answer = match msg.take_parsed::<Command>() {
                            Some(Command::Ping) => "pong".to_owned(),
                            Some(Command::Subscribe { session_id }) => {
                                format!("subscribed {session_id}")
                            }
                            Some(Command::Unsubscribe { session_id }) => {
                                format!("left {session_id}")
                            }
                            None => continue, // a control frame
                        };
                        if socket.send(Message::text(answer)).await.is_err() {
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

async fn connect(addr: SocketAddr, query: &str) -> Client {
    client::connect(addr, &format!("/ws?{query}")).await
}

async fn ask(client: &mut Client, text: impl Into<tungstenite::Utf8Bytes>) -> String {
    client
        .send(tungstenite::Message::Text(text.into()))
        .await
        .unwrap();
    client::next(client).await.into_text().unwrap().to_string()
}

async fn close_code(client: &mut Client) -> CloseCode {
    client::close_frame(client).await.code
}

fn subscribe(session: &str) -> String {
    format!(r#"{{"type":"subscribe","session_id":"{session}"}}"#)
}

fn commands() -> ValidateMessageLayer<Command> {
    ValidateMessageLayer::new()
        .typed::<Command>()
        .max_message_size(2 << 20)
        .max_string_len(64 * 1024)
}

#[tokio::test]
async fn hostile_messages_are_refused_and_the_socket_stays_usable() {
    let layer = commands().max_invalid(100).unwrap();
    let limit = layer.message_size_limit();
    let addr = serve(layer, limit).await;
    let mut client = connect(addr, "user=alice").await;
    for (case, input) in hostile_messages() {
        let answer = ask(&mut client, input).await;
        assert_eq!(answer, INVALID, "{case}");
        assert!(!answer.contains("EVIL"), "{case}");
    }
    // The application got the typed value of a valid message.
    assert_eq!(ask(&mut client, subscribe("s-1")).await, "subscribed s-1");
    assert_eq!(ask(&mut client, r#"{"type":"ping"}"#).await, "pong");
    client::close(client).await;
}

#[tokio::test]
async fn authorization_denies_a_foreign_session_and_allows_an_owned_one() {
    let sessions = Sessions::new(&[("s-alice", "alice"), ("s-bob", "bob")]);
    let addr = serve(commands().authorize(sessions.authorize()), 1 << 20).await;
    let mut alice = connect(addr, "user=alice").await;
    assert_eq!(ask(&mut alice, subscribe("s-bob")).await, FORBIDDEN);
    assert_eq!(
        ask(&mut alice, subscribe("s-alice")).await,
        "subscribed s-alice"
    );
    let mut bob = connect(addr, "user=bob").await;
    assert_eq!(ask(&mut bob, subscribe("s-alice")).await, FORBIDDEN);
    assert_eq!(ask(&mut bob, subscribe("s-bob")).await, "subscribed s-bob");
    // Without a principal, nothing is owned.
    let mut anonymous = connect(addr, "").await;
    assert_eq!(ask(&mut anonymous, subscribe("s-alice")).await, FORBIDDEN);
    assert_eq!(ask(&mut anonymous, r#"{"type":"ping"}"#).await, "pong");
}

#[tokio::test]
async fn repeated_invalid_messages_close_with_1007() {
    let layer = commands().max_invalid(3).unwrap();
    let addr = serve(layer, 1 << 20).await;
    let mut client = connect(addr, "user=alice").await;
    assert_eq!(ask(&mut client, "{").await, INVALID);
    assert_eq!(ask(&mut client, "{").await, INVALID);
    client.send(tungstenite::Message::text("{")).await.unwrap();
    assert_eq!(close_code(&mut client).await, CloseCode::Invalid);
}

#[tokio::test]
async fn oversize_and_binary_messages_close_with_1009_and_1003() {
    // The layer's limit under the hand-off's: what tungstenite accepts, the layer closes.
    let layer = ValidateMessageLayer::new()
        .typed::<Command>()
        .max_message_size(1024);
    let addr = serve(layer, 4096).await;
    let mut client = connect(addr, "user=alice").await;
    client
        .send(tungstenite::Message::text("x".repeat(2048)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut client).await, CloseCode::Size);

    // Over the hand-off's limit, tungstenite refuses the message before buffering it whole:
    // the plane closes with 1009 all the same.
    let mut client = connect(addr, "user=alice").await;
    client
        .send(tungstenite::Message::text("x".repeat(10_000)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut client).await, CloseCode::Size);

    let mut client = connect(addr, "user=alice").await;
    client
        .send(tungstenite::Message::binary(&b"{\"type\":\"ping\"}"[..]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut client).await, CloseCode::Unsupported);
}

#[tokio::test]
async fn an_idle_socket_is_closed_with_4440_when_its_token_expires() {
    let addr = serve(commands(), 1 << 20).await;
    let start = Instant::now();
    let mut client = connect(addr, "user=alice&ttl_ms=1000").await;
    // Still open and served before the expiry...
    assert_eq!(ask(&mut client, r#"{"type":"ping"}"#).await, "pong");
    // ...then closed by the timer, without any message from the client.
    assert_eq!(close_code(&mut client).await, CloseCode::from(4440));
    let elapsed = start.elapsed();
    // The token was issued after `start`, so the close cannot come before 1 s from it.
    assert!(
        elapsed >= Duration::from_millis(995),
        "closed after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "closed after {elapsed:?}");
}
