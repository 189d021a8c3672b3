//! The end-to-end benchmark's server: one echo handler behind a switchable set of guards.
//!
//! ```text
//! cargo run --release --example bench_server -- --variant full
//! ```
//!
//! `scripts/bench-e2e` starts it (a fresh process per measured run) and drives it with the
//! `load_client` example; see BENCHMARKS.md, "End to end". Variants, all with the same read
//! buffer (`--read-buffer-size`, default 4 KiB: wsguard's default; axum's is 128 KiB) and the
//! same 64 KiB message and frame limits:
//!
//! - `bare`: axum's `WebSocketUpgrade` and an echo, no guard;
//! - `app`: the same, but the application parses each message into [`Command`] itself and
//!   checks it with the same authorization function as `full` (what an application without
//!   the validator does anyway);
//! - `handshake`: the handshake layers (client IP, Origin, JWT HS256, connection limit), the
//!   hand-off, and the echo of `bare`;
//! - `full`: the handshake layers, then on every message hygiene, the rate limit (per
//!   connection and per principal, messages and bytes, budgets that never refuse at these
//!   rates), typed validation into [`Command`] and per-message authorization; the handler
//!   echoes what is admitted.
//!
//! It listens on loopback only, prints `listening on ADDR` once bound, and exits by itself
//! after `--max-seconds`.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{
        ws::{Message, WebSocket},
        State, WebSocketUpgrade,
    },
    response::Response,
    routing::get,
    Router,
};
use clap::{Parser, ValueEnum};
use futures_util::SinkExt;
use serde::Deserialize;
use tower::Service;
use wsguard::{
    axum::GuardedUpgrade,
    client_ip::ClientIpLayer,
    conn_limit::{ConnLimitLayer, Hygiene, HygieneSocket},
    jwt_auth::{Algorithm, JwtAuthLayer, NoClaims, VerifyingKey},
    msg_rate::{rate, Budget, MessageRateLimitLayer},
    origin::{AllowList, OriginGuardLayer},
    schema_validate::ValidateMessageLayer,
    Access, ConnectionInfo, Guard, GuardedSocket, Inbound, PrincipalKey, SocketGuard, Verdict,
};

/// The message protocol: what `app` parses itself and `full` validates.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// `{"type":"ping"}`.
    Ping,
    /// `{"type":"subscribe","session_id":"s-..."}`.
    Subscribe {
        /// The session.
        session_id: String,
    },
    /// `{"type":"unsubscribe","session_id":"s-..."}`.
    Unsubscribe {
        /// The session.
        session_id: String,
    },
}

/// The per-message authorization both `app` and `full` apply: a user may subscribe only to
/// sessions named `s-...`.
fn allowed(_user: &str, command: &Command) -> bool {
    match command {
        Command::Subscribe { session_id } => session_id.starts_with("s-"),
        Command::Ping | Command::Unsubscribe { .. } => true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    Bare,
    App,
    Handshake,
    Full,
}

#[derive(Debug, Parser)]
#[command(about = "The end-to-end benchmark's server (loopback only)")]
struct Args {
    /// Which guards run.
    #[arg(long, value_enum)]
    variant: Variant,
    /// Where to listen: a loopback address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The HS256 secret of the tokens (`handshake` and `full`).
    #[arg(long, default_value = "wsguard-bench-secret-0123456789abcdef")]
    jwt_secret: String,
    /// The allowed Origin (`handshake` and `full`).
    #[arg(long, default_value = "http://bench.localhost")]
    origin: String,
    /// Read buffer of every socket, in bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer_size: usize,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The process exits by itself after this many seconds.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

const MAX_MESSAGE: usize = 64 * 1024;

type FullSockets =
    SocketGuard<MessageRateLimitLayer, ValidateMessageLayer<Command, std::sync::Arc<Authz>>>;

/// `full`'s per-message authorization: [`allowed`] with the connection's principal.
#[derive(Debug, Clone, Copy)]
struct Authz;

impl wsguard::schema_validate::Authorize<Command> for Authz {
    type Future = std::future::Ready<Access>;

    fn authorize(&self, conn: &ConnectionInfo, message: &Command) -> Self::Future {
        let user = conn.principal().map_or("", |p| p.as_str());
        std::future::ready(Access::from(allowed(user, message)))
    }
}

#[derive(Clone)]
struct AppState {
    read_buffer_size: usize,
    sockets: FullSockets,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        return Err("--listen must be a loopback address".into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let budget = Budget::new()
        .messages(rate(100_000_000).per(Duration::from_secs(1)))
        .bytes(rate(1_000_000_000).per(Duration::from_secs(1)));
    let guard = Guard::new()
        .client_ip(ClientIpLayer::new())
        .origin(OriginGuardLayer::new(
            AllowList::new().add_origin(&args.origin)?,
        ))
        .auth(JwtAuthLayer::<NoClaims>::new(VerifyingKey::hmac(
            Algorithm::HS256,
            args.jwt_secret.as_bytes(),
        )?))
        .conn_limit(
            ConnLimitLayer::builder()
                .global(1_000_000)
                .per_ip(100_000)
                .per_principal(1_000)
                .build()?,
        )
        .rate_limit(
            MessageRateLimitLayer::new()
                .per_connection(budget)?
                .per_key(PrincipalKey::default(), budget)?,
        )
        .validate(
            ValidateMessageLayer::new()
                .typed::<Command>()
                .max_message_size(MAX_MESSAGE)
                .authorize(Authz),
        )
        .hygiene(Hygiene::new().idle_timeout(Duration::from_secs(300)))
        .max_message_size(MAX_MESSAGE);
    let state = AppState {
        read_buffer_size: args.read_buffer_size,
        sockets: guard.socket_guard(),
    };
    let router = match args.variant {
        Variant::Bare => Router::new().route("/ws", get(bare)),
        Variant::App => Router::new().route("/ws", get(app)),
        Variant::Handshake => Router::new().route("/ws", get(handshake).layer(guard.handshake())),
        Variant::Full => Router::new().route("/ws", get(full).layer(guard.handshake())),
    }
    .with_state(state);

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    );
    // Bounded: the server stops by itself if nobody stops it first.
    match tokio::time::timeout(Duration::from_secs(args.max_seconds), server).await {
        Ok(result) => result?,
        Err(_) => eprintln!("bench_server: --max-seconds reached, exiting"),
    }
    Ok(())
}

/// axum's upgrade with the same sizes as the guarded hand-off.
fn sized(ws: WebSocketUpgrade, read_buffer_size: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(read_buffer_size)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
}

async fn bare(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    sized(ws, state.read_buffer_size).on_upgrade(echo)
}

async fn app(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    sized(ws, state.read_buffer_size).on_upgrade(parsing_echo)
}

async fn handshake(State(state): State<AppState>, upgrade: GuardedUpgrade) -> Response {
    upgrade
        .read_buffer_size(state.read_buffer_size)
        .on_upgrade(|socket, conn| async move {
            echo(socket).await;
            // The connection's slots are released with it, when the socket has ended.
            drop(conn);
        })
}

async fn full(State(state): State<AppState>, upgrade: GuardedUpgrade) -> Response {
    state.sockets.on_upgrade(
        upgrade.read_buffer_size(state.read_buffer_size),
        guarded_echo,
    )
}

/// Echoes text and binary messages until the socket ends.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Text(_) | Message::Binary(_)) && socket.send(msg).await.is_err() {
            break;
        }
    }
}

/// What an application without the validator does: parse each message into [`Command`],
/// authorize it, and answer.
async fn parsing_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = &msg else { continue };
        let Ok(command) = serde_json::from_str::<Command>(text.as_str()) else {
            continue;
        };
        if !allowed("app", &command) {
            continue;
        }
        if socket.send(msg).await.is_err() {
            break;
        }
    }
}

/// Echoes what the message plane admitted (parsed, rate-limited, authorized).
async fn guarded_echo<Svc>(mut socket: GuardedSocket<HygieneSocket<WebSocket>, Svc>)
where
    Svc: Service<Inbound<Message>, Response = Verdict<Message>>,
    Svc::Error: std::fmt::Display,
{
    while let Some(Ok(msg)) = socket.next_admitted().await {
        if msg.parsed::<Command>().is_none() {
            continue;
        }
        if socket.send(msg.into_message()).await.is_err() {
            break;
        }
    }
}
