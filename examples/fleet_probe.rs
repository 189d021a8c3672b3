//! A small WebSocket client for `scripts/fleet-e2e`, the chat's fleet check behind nginx: it
//! opens one chat connection per `--user` (each with a fresh HS256 token for that user),
//! prints how each handshake was answered, optionally floods the accepted sockets with
//! pings, then holds them open for `--hold` seconds.
//!
//! ```text
//! fleet_probe --url ws://10.200.1.1:8080/ws --user alice --user bob --hold 30
//! ```
//!
//! Output, one line per connection, then `ready` once every line is out:
//!
//! ```text
//! user=alice status=101
//! user=bob status=429
//! ready
//! ```
//!
//! With `--flood`, each accepted socket sends `{"type":"ping"}` back to back (at most 100,000
//! times, at most 4 s) until the server closes it, and the line says how many pongs came back
//! and the close code: `user=alice status=101 pongs=10 close=4429`. Every wait is bounded:
//! 10 s per handshake, `--hold` at most 120 s. The secret comes from `--secret` or
//! `WSGUARD_JWT_SECRET` and is never printed, nor are the tokens.

use std::{
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

const WAIT: Duration = Duration::from_secs(10);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens chat connections and reports how each handshake was answered.
#[derive(Debug, Parser)]
#[command(name = "fleet_probe")]
struct Args {
    /// The chat's WebSocket URL (ws://HOST:PORT/ws).
    #[arg(long)]
    url: String,

    /// The chat's HS256 secret, to sign each user's token.
    #[arg(long, env = "WSGUARD_JWT_SECRET", hide_env_values = true)]
    secret: String,

    /// A connection as this user (repeatable; opened in order).
    #[arg(long = "user", required = true)]
    users: Vec<String>,

    /// An `X-Forwarded-For` header sent with every handshake (a client spoofing its address).
    #[arg(long)]
    xff: Option<String>,

    /// Flood every accepted socket with pings until the server closes it.
    #[arg(long)]
    flood: bool,

    /// Seconds to keep the accepted sockets open after `ready`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=120))]
    hold: u64,
}

fn token(secret: &str, user: &str) -> Result<String, String> {
    // Err only means a backend is installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": user, "exp": now + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign a token: {e}"))
}

/// The handshake's status and, on 101, the socket.
async fn connect(args: &Args, user: &str) -> Result<(u16, Option<Client>), String> {
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("--url: {e}"))?;
    let bearer = format!("Bearer {}", token(&args.secret, user)?);
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        bearer.parse().map_err(|_| "a token that is no header")?,
    );
    if let Some(xff) = &args.xff {
        headers.insert(
            "x-forwarded-for",
            xff.parse().map_err(|_| "--xff: not a header value")?,
        );
    }
    match timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err(format!("user={user}: no answer within {WAIT:?}")),
        Ok(Ok((socket, response))) => Ok((response.status().as_u16(), Some(socket))),
        Ok(Err(tungstenite::Error::Http(response))) => Ok((response.status().as_u16(), None)),
        Ok(Err(other)) => Err(format!("user={user}: {other}")),
    }
}

/// Pings back to back until the server closes: the pongs and the close code.
async fn flood(socket: Client) -> (usize, Option<u16>) {
    let (mut tx, mut rx) = socket.split();
    let ping = Message::text(r#"{"type":"ping"}"#);
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u32;
        while sent < 100_000 && started.elapsed() < Duration::from_secs(4) {
            if tx.feed(ping.clone()).await.is_err() {
                break;
            }
            sent += 1;
            if sent.is_multiple_of(32) && tx.flush().await.is_err() {
                break;
            }
        }
    });
    let mut pongs = 0;
    let mut close = None;
    while let Ok(Some(Ok(message))) = timeout(WAIT, rx.next()).await {
        match message {
            Message::Text(text) if text.contains("pong") => pongs += 1,
            Message::Close(frame) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    writer.abort();
    (pongs, close)
}

async fn run(args: Args) -> Result<(), String> {
    let mut open = Vec::new();
    for user in &args.users {
        let (status, socket) = connect(&args, user).await?;
        match socket {
            Some(socket) if args.flood => {
                let (pongs, close) = flood(socket).await;
                let close = close.map_or_else(|| "none".to_owned(), |c| c.to_string());
                println!("user={user} status={status} pongs={pongs} close={close}");
            }
            Some(socket) => {
                println!("user={user} status={status}");
                open.push(socket);
            }
            None => println!("user={user} status={status}"),
        }
    }
    println!("ready");
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    for mut socket in open {
        let _ = timeout(Duration::from_secs(2), socket.close(None)).await;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet_probe: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fleet_probe: {message}");
            ExitCode::FAILURE
        }
    }
}
