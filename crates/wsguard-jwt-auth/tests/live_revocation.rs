//! Revocation reaches live sockets: a real axum server with the layer registering its
//! handshakes in `LiveSessions`, real tokio-tungstenite clients. Revoking a subject or a token
//! in the in-memory store closes the matching open sockets with 4403, through the message
//! plane's `GuardedSocket` and through `Hygiene::wrap_connection` alone; other sockets stay
//! open; a socket that ended leaves no entry.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use axum::{extract::ws::Message as AxumMessage, routing::get, Router};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use wsguard_core::{axum::GuardedUpgrade, Hygiene};
use wsguard_jwt_auth::{InMemoryRevocations, JwtAuthLayer, LiveSessions, NoClaims, TokenSource};
use wsguard_test_kit::{
    client::{self, Client},
    handoff::{self, PlaneEcho, Upgrade},
};

/// The safety bound of a close that should take milliseconds.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Serves `/plane` (the message plane's `GuardedSocket`) and `/hygiene` (only
/// `Hygiene::wrap_connection`), both echoing text, behind the layer.
async fn serve() -> (SocketAddr, InMemoryRevocations, LiveSessions) {
    let sessions = LiveSessions::new();
    let revocations = InMemoryRevocations::new(1_000).with_sessions(sessions.clone());
    let layer = JwtAuthLayer::<NoClaims>::new(hs256_key())
        .with_token_sources([TokenSource::query("token").unwrap()])
        .unwrap()
        .with_revocation(revocations.clone())
        .with_sessions(sessions.clone());
    let app = Router::new()
        .route("/plane", handoff::route(Upgrade::default(), PlaneEcho))
        .route(
            "/hygiene",
            get(|upgrade: GuardedUpgrade| async move {
                upgrade.on_upgrade(|socket, conn| async move {
                    let mut socket = Hygiene::new().wrap_connection(socket, &conn);
                    while let Some(Ok(msg)) = socket.next().await {
                        if matches!(msg, AxumMessage::Text(_)) && socket.send(msg).await.is_err() {
                            break;
                        }
                    }
                    drop(conn);
                })
            }),
        )
        .layer(layer);
    (
        wsguard_test_kit::server::axum(app).await,
        revocations,
        sessions,
    )
}

/// A token of `sub` with `jti`, issued 10 s ago, valid for an hour.
fn token(sub: &str, jti: &str) -> String {
    let now = unix_now();
    hs256(&format!(
        r#"{{"sub":"{sub}","jti":"{jti}","iat":{},"exp":{}}}"#,
        now - 10,
        now + 3600
    ))
}

async fn open(addr: SocketAddr, path: &str, token: &str) -> Client {
    let mut ws = client::connect(addr, &format!("{path}?token={token}")).await;
    client::round_trip(&mut ws, "hello").await;
    ws
}

async fn closed_with(ws: &mut Client) -> u16 {
    timeout(CLOSE_WITHIN, client::close_code(ws))
        .await
        .expect("closed within the bound")
        .0
}

/// Polls `check` every 10 ms for at most `CLOSE_WITHIN`.
async fn eventually(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + CLOSE_WITHIN;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn revoking_a_subject_closes_its_live_sockets_and_only_those() {
    let (addr, revocations, sessions) = serve().await;
    let alice = token("alice", "a-1");
    let mut alice_plane = open(addr, "/plane", &alice).await;
    let mut alice_hygiene = open(addr, "/hygiene", &alice).await;
    let mut bob = open(addr, "/plane", &token("bob", "b-1")).await;
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.count_subject("alice"), 2);

    let now = SystemTime::now();
    revocations
        .revoke_subject_before("alice", now, now + Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(closed_with(&mut alice_plane).await, 4403);
    assert_eq!(closed_with(&mut alice_hygiene).await, 4403);
    client::until_end(&mut alice_plane).await;
    client::until_end(&mut alice_hygiene).await;

    // Bob's socket was not touched.
    client::round_trip(&mut bob, "still here").await;
    // Alice's entries went with her sockets; bob's is the only one left.
    assert!(
        eventually(|| sessions.len() == 1).await,
        "{} entries",
        sessions.len()
    );
    assert_eq!(sessions.count_subject("alice"), 0);

    // The same token is refused at its next handshake, and leaves no entry behind.
    let refused = client::try_connect(format!("ws://{addr}/plane?token={alice}")).await;
    assert_eq!(refused.err().map(|(status, _)| status.as_u16()), Some(403));
    assert_eq!(sessions.len(), 1);

    client::close(bob).await;
    assert!(
        eventually(|| sessions.is_empty()).await,
        "{} entries",
        sessions.len()
    );
}

#[tokio::test]
async fn revoking_a_token_closes_the_sockets_of_that_token_only() {
    let (addr, revocations, sessions) = serve().await;
    let first = token("alice", "a-1");
    let mut first_plane = open(addr, "/plane", &first).await;
    let mut first_hygiene = open(addr, "/hygiene", &first).await;
    let mut second = open(addr, "/plane", &token("alice", "a-2")).await;

    revocations
        .revoke_token("a-1", SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    assert_eq!(closed_with(&mut first_plane).await, 4403);
    assert_eq!(closed_with(&mut first_hygiene).await, 4403);
    // The client answers the close frames (the server waits for them, within bounds).
    client::until_end(&mut first_plane).await;
    client::until_end(&mut first_hygiene).await;
    client::round_trip(&mut second, "still here").await;
    assert!(
        eventually(|| sessions.len() == 1).await,
        "{} entries",
        sessions.len()
    );

    // A subject cutoff before the tokens were issued closes nothing.
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    revocations
        .revoke_subject_before(
            "alice",
            long_ago,
            SystemTime::now() + Duration::from_secs(60),
        )
        .unwrap();
    client::round_trip(&mut second, "still here").await;
    assert_eq!(sessions.len(), 1);
    client::close(second).await;
    assert!(eventually(|| sessions.is_empty()).await);
}
