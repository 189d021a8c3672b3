//! A WebSocket echo on raw hyper 1 + tokio-tungstenite (no axum), guarded by client-ip,
//! origin, jwt-auth and conn-limit on the handshake and by the message plane (hygiene and a
//! message rate) after it.
//!
//! ```text
//! cargo run --example hyper_echo
//! ```
//!
//! It prints a demo token (random HS256 secret); connect with any WebSocket client, e.g.
//! `websocat "ws://127.0.0.1:8081/ws?token=<token>"`.
//!
//! `wsguard::serve` runs the hyper connections: header-read and first-byte timeouts, a cap on
//! request heads still arriving, upgrades, and the peer address as `PeerAddr` for the
//! client-ip layer.

use std::{
    convert::Infallible,
    future::IntoFuture,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::SinkExt;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use wsguard::{
    client_ip::ClientIpLayer,
    conn_limit::{ConnLimitLayer, Hygiene},
    jwt_auth::{Algorithm, JwtAuthLayer, NoClaims, TokenSource, VerifyingKey},
    msg_rate::{rate, Budget, MessageRateLimitLayer},
    origin::{AllowList, OriginGuardLayer},
    serve::serve,
    tungstenite::GuardedUpgrade,
    GuardedSocket,
};

/// The echo behind the guards: completes the upgrade with the wsguard hand-off.
async fn echo(
    mut req: Request<Incoming>,
    hygiene: Hygiene,
    rate_limit: MessageRateLimitLayer,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let upgrade = match GuardedUpgrade::from_request(&mut req) {
        Ok(upgrade) => upgrade,
        Err(error) => return Ok(error.to_response()),
    };
    Ok(upgrade.on_upgrade(move |socket, conn| async move {
        let mut socket = GuardedSocket::layered(hygiene.wrap(socket), conn, &rate_limit);
        while let Some(Ok(msg)) = socket.next_admitted().await {
            if socket.send(msg.into_message()).await.is_err() {
                break;
            }
        }
    }))
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A token for user `demo`, valid for an hour.
    pub token: String,
}

/// Binds `listen` and serves in the background.
pub async fn start(listen: SocketAddr) -> Result<Server, Box<dyn std::error::Error>> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;

    let client_ip = ClientIpLayer::new();
    let origin = OriginGuardLayer::new(
        AllowList::new()
            .add_origin(&format!("http://127.0.0.1:{}", addr.port()))?
            .add_origin(&format!("http://localhost:{}", addr.port()))?,
    );
    let auth = JwtAuthLayer::<NoClaims>::new(VerifyingKey::hmac(Algorithm::HS256, &secret)?)
        .with_token_sources([TokenSource::query("token")?, TokenSource::bearer()])?;
    let conn_limit = ConnLimitLayer::builder()
        .global(1_000)
        .per_ip(20)
        .per_principal(3)
        .build()?;
    let rate_limit = MessageRateLimitLayer::new()
        .per_connection(Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(20)))?;
    let hygiene = Hygiene::new().idle_timeout(Duration::from_secs(300));

    // Both of jsonwebtoken's backends may be compiled in (`--all-features`); pick one to sign.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": "demo", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )?;

    // `serve` puts the peer into every request as `PeerAddr`, which the client-ip layer reads.
    let service = ServiceBuilder::new()
        .layer(client_ip)
        .layer(origin)
        .layer(auth)
        .layer(conn_limit)
        .service_fn(move |req| echo(req, hygiene.clone(), rate_limit.clone()));
    tokio::spawn(serve(listener, service).into_future());
    Ok(Server { addr, token })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let server = start(SocketAddr::from(([127, 0, 0, 1], 8081))).await?;
    println!("hyper_echo: ws://{}/ws", server.addr);
    println!("hyper_echo: token: {}", server.token);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
