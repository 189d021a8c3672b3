//! A tonic gRPC server (the standard health service of `tonic-health`, no protoc needed)
//! behind client-ip, jwt-auth and conn-limit, answering refusals in the gRPC form
//! (`grpc-status` in the headers). Its streaming `Watch` RPC holds a connection slot until
//! the stream ends: with one slot per user, a second concurrent `Watch` of the same user is
//! refused with `RESOURCE_EXHAUSTED` until the first one is dropped.
//!
//! ```text
//! cargo run --example tonic_health
//! ```

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};
use tonic_health::ServingStatus;
use tower::ServiceBuilder;
use wsguard::{
    client_ip::ClientIpLayer,
    conn_limit::{ConnLimitLayer, Limit},
    jwt_auth::{Algorithm, JwtAuthLayer, NoClaims, VerifyingKey},
    GrpcRejection,
};

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Where it listens (plain-text HTTP/2).
    pub addr: SocketAddr,
    /// A token for user `demo`, valid for an hour, to send as `authorization: Bearer <token>`.
    pub token: String,
    /// The connection limit, to look at its gauges.
    pub limits: ConnLimitLayer<wsguard::conn_limit::InMemoryConnectionStore, GrpcRejection>,
}

/// Binds `listen` and serves in the background.
pub async fn start(listen: SocketAddr) -> Result<Running, Box<dyn std::error::Error>> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;

    // tonic hands the peer address to the client-ip layer through its connect info.
    let client_ip = ClientIpLayer::new().on_rejection(GrpcRejection);
    let auth = JwtAuthLayer::<NoClaims>::new(VerifyingKey::hmac(Algorithm::HS256, &secret)?)
        .on_rejection(GrpcRejection);
    let limits = ConnLimitLayer::builder()
        .limit(Limit::global(1_000))
        .per_principal(1)
        .on_rejection(GrpcRejection)
        .build()?;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let layers = ServiceBuilder::new()
        .layer(client_ip)
        .layer(auth)
        .layer(limits.clone())
        .into_inner();
    let server = Server::builder()
        .layer(layers)
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the gRPC server stopped");
        }
        // The reporter keeps the statuses alive as long as the server runs.
        drop(reporter);
    });

    // Both of jsonwebtoken's backends may be compiled in (`--all-features`); pick one to sign.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": "demo", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )?;
    Ok(Running {
        addr,
        token,
        limits,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let running = start(SocketAddr::from(([127, 0, 0, 1], 50051))).await?;
    println!(
        "tonic_health: grpc://{} (grpc.health.v1.Health)",
        running.addr
    );
    println!("tonic_health: authorization: Bearer {}", running.token);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
