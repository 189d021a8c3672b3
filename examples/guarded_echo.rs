//! A WebSocket echo server behind wsguard's handshake guards, with zero configuration.
//!
//! ```sh
//! cargo run --release --example guarded_echo --features full
//! ```
//!
//! It listens on 127.0.0.1:8080 (or `WSGUARD_LISTEN`), resolves the client IP (trusting a
//! proxy on loopback), refuses handshakes from foreign origins with 403, and echoes every
//! text message together with the client IP the guard resolved. Try:
//!
//! ```sh
//! websocat ws://127.0.0.1:8080/ws                                  # echoes
//! websocat -H 'Origin: https://evil.example' ws://127.0.0.1:8080/ws # 403
//! ```

use std::net::SocketAddr;

use axum::{
    extract::ws::{Message, WebSocket},
    response::Response,
    routing::get,
    Router,
};
use tower::ServiceBuilder;
use wsguard::{
    axum::GuardedUpgrade,
    client_ip::{ClientIpLayer, TrustedProxies},
    origin::{AllowList, OriginGuardLayer},
    Connection,
};

async fn ws(upgrade: GuardedUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket, conn: Connection) {
    let ip = conn
        .client_ip()
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Text(text) = msg {
            let answer = format!("{} (from {ip})", text.as_str());
            if socket.send(Message::text(answer)).await.is_err() {
                break;
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,wsguard_origin=info")
        .init();
    let listen: SocketAddr = std::env::var("WSGUARD_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let port = listen.port();
    let allow = AllowList::new()
        .add_origin(&format!("http://127.0.0.1:{port}"))?
        .add_origin(&format!("http://localhost:{port}"))?;

    let app = Router::new().route("/ws", get(ws)).layer(
        ServiceBuilder::new()
            .layer(ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback()))
            .layer(OriginGuardLayer::new(allow)),
    );

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("guarded echo on ws://{}/ws", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
