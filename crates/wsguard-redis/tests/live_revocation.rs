//! Revocation that reaches live sockets across a fleet: two in-process instances (axum
//! servers with the JWT layer registering their handshakes) on one real Redis, real
//! tokio-tungstenite clients. A revocation made through instance A closes the socket a client
//! holds on instance B, with 4403; after B's Pub/Sub connection is killed
//! (`CLIENT KILL TYPE pubsub`) and comes back, revocations still reach it, and one that B
//! missed while it was away (stored without a publication) closes the socket when it is back.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::Router;
use common::eventually;
use jsonwebtoken::{EncodingKey, Header};
use tokio::time::timeout;
use wsguard_jwt_auth::{
    Algorithm, JwtAuthLayer, LiveSessions, NoClaims, TokenSource, VerifyingKey,
};
use wsguard_redis::{Fleet, RedisRevocations};
use wsguard_test_kit::{
    client::{self, Client},
    handoff::{self, PlaneEcho, Upgrade},
};

type Conn = redis::aio::ConnectionManager;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The safety bound of a close that should take milliseconds.
const WITHIN: Duration = Duration::from_secs(5);

/// One instance: its store (publishing, subscribed), its registry, its server.
struct Instance {
    revocations: RedisRevocations<Conn>,
    sessions: LiveSessions,
    addr: SocketAddr,
}

async fn instance(server: &common::RedisServer) -> Instance {
    let fleet = Fleet::new(server.connect().await)
        .with_prefix("live:")
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let sessions = LiveSessions::new();
    let revocations = RedisRevocations::new(fleet).with_sessions(sessions.clone());
    revocations.spawn_subscriber(redis::Client::open(server.url()).unwrap());
    let layer =
        JwtAuthLayer::<NoClaims>::new(VerifyingKey::hmac(Algorithm::HS256, SECRET).unwrap())
            .with_token_sources([TokenSource::query("token").unwrap()])
            .unwrap()
            .with_revocation(revocations.clone())
            .with_sessions(sessions.clone());
    let app = Router::new()
        .route("/ws", handoff::route(Upgrade::default(), PlaneEcho))
        .layer(layer);
    Instance {
        revocations,
        sessions,
        addr: wsguard_test_kit::server::axum(app).await,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token of `sub` with `jti`, issued 10 s ago, valid for an hour.
fn token(sub: &str, jti: &str) -> String {
    // With both of jsonwebtoken's backends on (the workspace's `--all-features`), `encode`
    // cannot pick one by itself.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let now = unix_now();
    let claims = serde_json::json!({
        "sub": sub, "jti": jti, "iat": now - 10, "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

async fn open(addr: SocketAddr, token: &str) -> Client {
    let mut ws = client::connect(addr, &format!("/ws?token={token}")).await;
    client::round_trip(&mut ws, "hello").await;
    ws
}

/// The close code the server sends, then the end of the connection, within [`WITHIN`].
async fn closed_with(mut ws: Client) -> u16 {
    let code = timeout(WITHIN, client::close_code(&mut ws))
        .await
        .expect("closed within the bound")
        .0;
    client::until_end(&mut ws).await;
    code
}

/// How many subscribers the channel has.
async fn subscribers(conn: &mut Conn) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("live:rv:closed")
        .query_async(conn)
        .await
        .unwrap();
    counts.first().map_or(0, |(_, n)| *n)
}

async fn until_subscribed(conn: &Conn, n: i64) {
    assert!(
        eventually(WITHIN, || {
            let mut conn = conn.clone();
            async move { subscribers(&mut conn).await == n }
        })
        .await,
        "{n} subscribers within the bound"
    );
}

async fn kill_subscribers(conn: &mut Conn) {
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(killed, 2, "both instances' subscribers");
}

async fn entries_settle(sessions: &LiveSessions, n: usize) {
    let deadline = Instant::now() + WITHIN;
    while sessions.len() != n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sessions.len(), n, "entries of live connections only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_closes_the_socket_on_another() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let a = instance(&server).await;
    let b = instance(&server).await;
    let mut admin = server.connect().await;
    until_subscribed(&admin, 2).await;

    // A subject logged out on A: its socket on B closes, another subject's stays open.
    let alice = open(b.addr, &token("alice", "a-1")).await;
    let mut bob = open(b.addr, &token("bob", "b-1")).await;
    assert_eq!(b.sessions.len(), 2);
    assert_eq!(a.sessions.len(), 0);
    let now = SystemTime::now();
    a.revocations
        .revoke_subject_before("alice", now, now + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(closed_with(alice).await, 4403);
    client::round_trip(&mut bob, "still here").await;
    entries_settle(&b.sessions, 1).await;

    // The subscribers lose their connection and come back: revocations still reach B.
    kill_subscribers(&mut admin).await;
    until_subscribed(&admin, 2).await;
    let carol = open(b.addr, &token("carol", "c-1")).await;
    a.revocations
        .revoke_token("c-1", SystemTime::now() + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(closed_with(carol).await, 4403);
    client::round_trip(&mut bob, "still here").await;
    entries_settle(&b.sessions, 1).await;

    // A revocation B never heard of (stored, not published: as if B was away when it was
    // published) closes the socket when B's subscription comes back and checks again.
    let dave = open(b.addr, &token("dave", "d-1")).await;
    let cutoff_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let () = redis::cmd("SET")
        .arg("live:rv:sub:dave")
        .arg(cutoff_ms)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut admin)
        .await
        .unwrap();
    kill_subscribers(&mut admin).await;
    assert_eq!(closed_with(dave).await, 4403);
    client::round_trip(&mut bob, "still here").await;
    entries_settle(&b.sessions, 1).await;

    client::close(bob).await;
    entries_settle(&b.sessions, 0).await;
}
