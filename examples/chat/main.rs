//! A chat server with every wsguard protection on: the main job of the project.
//!
//! ```text
//! cargo run --release --example chat
//! ```
//!
//! With no key option at all (none of `--jwt-secret`, `--jwt-public-key`, `--jwks-url`,
//! `--oidc-issuer`) it generates a random HS256 secret, prints demo tokens for `alice` and
//! `bob`, and the URL of a demo page to chat from a browser; any key option turns demo mode
//! off, and a combination of key options the chat cannot honour is refused at start (exit
//! code 2). `--help` lists the options (each also readable from `WSGUARD_<FLAG>`).
//!
//! Routes: `/` the demo page, `/ws` the WebSocket, `/metrics` Prometheus text, `/healthz`
//! (liveness), `/readyz` (readiness: 503 until every key source has its keys, such as a JWKS
//! before its first successful fetch; tokens it could verify get 503 too, not 401).
//!
//! It serves through `wsguard::serve`: connections that send nothing or stall in their request
//! head are closed (`--first-byte-timeout`, `--header-read-timeout`), and too many heads still
//! arriving, per IP or in all, close new connections at once (`--max-pending-heads`,
//! `--max-pending-heads-per-ip`).
//!
//! Fleet mode: with `--redis-url` the connection limits, the per-user message budgets and
//! revocation live in Redis, shared by every instance (`--redis-failure open|closed` for
//! outages); without it everything stays in memory and no Redis is needed.
//!
//! The stack, outermost first: client IP (trusted proxies only), Origin allow-list, JWT
//! (query `?token=`, `Authorization: Bearer`, or the `bearer, <token>` subprotocol form),
//! connection limits (per user, per IP, in all) held for the socket's life; then, on every
//! message, connection hygiene (idle timeout, lifetime, heartbeat, shutdown), the per-user
//! message rate, typed validation of the protocol and per-message authorization (only
//! members may subscribe to a dialog).

// The modules are shared with the in-process tests (tests/chat.rs).
#![allow(unreachable_pub)]

mod cli;
mod hub;
mod server;
mod socket;

use std::process::ExitCode;

use clap::Parser;

use crate::{cli::Args, server::Fatal};

fn main() -> ExitCode {
    // clap prints its own errors and exits with code 2.
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wsguard=debug".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("chat: {message}");
            ExitCode::from(2)
        }
    }
}
