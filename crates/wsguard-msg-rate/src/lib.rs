//! Per-message rate limits for WebSockets: a message rate and a byte rate, per connection
//! and per user or client IP, on the message plane of `wsguard-core`.
//!
//! A WebSocket is one long request: the limits of an HTTP stack (requests per second)
//! count it once, and everything after the upgrade is unmetered. A client that floods its
//! socket with messages makes the server parse, authorize and fan out each of them; one that
//! opens ten sockets multiplies any per-socket limit by ten. [`MessageRateLimitLayer`]
//! meters every inbound data message against budgets of messages and bytes (GCRA, through
//! the [`governor`] crate): one per connection, and one shared by every connection with the
//! same key (a `Principal` or a client IP, through a `wsguard_core::KeyExtractor`), so a
//! user's budget is the same however many sockets they open. A message over budget is
//! dropped with an error frame, or waits (backpressure: the socket is not read meanwhile);
//! sustained excess closes the socket with 4429.
//!
//! # Example
//!
//! Ten messages a second (twenty at once) per connection, and 64 KiB a second per user
//! over all of their sockets:
//!
//! ```
//! use std::time::Duration;
//! use axum::extract::ws::Message;
//! use tower::{Layer, Service, ServiceExt};
//! use wsguard_core::{PrincipalKey, Admit, ConnectionInfo, Inbound, Verdict};
//! use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limits = MessageRateLimitLayer::new()
//!     .per_connection(Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(20)))?
//!     .per_key(
//!         PrincipalKey::default(),
//!         Budget::new().bytes(rate(64 * 1024).per(Duration::from_secs(1))),
//!     )?
//!     .close_after(50, Duration::from_secs(10))?;
//!
//! // The message plane builds one service per socket; here, by hand:
//! # let mut ext = http::Extensions::new();
//! # ext.insert(wsguard_core::Principal::new("alice"));
//! # let conn = wsguard_core::Connection::new(http::Uri::from_static("/ws"), &mut ext);
//! let info = ConnectionInfo::new(&conn); // `conn` from the hand-off, with a principal
//! let mut socket = limits.layer(Admit);
//! let mut passed = 0;
//! for i in 0..25 {
//!     let msg = Inbound::new(Message::text(format!("hello {i}")), info.clone());
//!     let ready = ServiceExt::<Inbound<Message>>::ready(&mut socket).await?;
//!     match ready.call(msg).await? {
//!         Verdict::Admit(_) => passed += 1,
//!         Verdict::Reply(error) => assert_eq!(
//!             error,
//!             Message::text(r#"{"type":"error","code":"rate_limited"}"#)
//!         ),
//!         _ => unreachable!(),
//!     }
//! }
//! assert_eq!(passed, 20);
//! # Ok(())
//! # }
//! ```
//!
//! In an axum application, guard the socket in the `GuardedUpgrade` callback; the layer is
//! built once and shared:
//!
//! ```
//! use axum::{extract::State, routing::get, Router};
//! use futures_util::{SinkExt, StreamExt};
//! use wsguard_core::{axum::GuardedUpgrade, GuardedSocket};
//! use wsguard_msg_rate::MessageRateLimitLayer;
//!
//! async fn ws(State(limits): State<MessageRateLimitLayer>, upgrade: GuardedUpgrade) -> axum::response::Response {
//!     upgrade.on_upgrade(move |socket, conn| async move {
//!         let mut socket = GuardedSocket::layered(socket, conn, &limits);
//!         while let Some(Ok(msg)) = socket.next().await {
//!             // only admitted messages and control frames arrive here
//!             # let _ = msg;
//!         }
//!     })
//! }
//!
//! # fn app(limits: MessageRateLimitLayer) -> Router {
//! Router::new().route("/ws", get(ws)).with_state(limits)
//! # }
//! ```
//!
//! # Budgets
//!
//! A [`Rate`] says what it means: `rate(10).per(Duration::from_secs(1)).burst(20)` refills
//! one message every 100 ms and holds at most 20. A [`Budget`] has a message rate, a byte
//! rate (payload bytes), or both. The checks run in a fixed order, and stop at the first
//! budget without room: the connection's messages, the connection's bytes, then the key's
//! budgets in the [`KeyStore`]. A message refused by a later budget has still spent its
//! cells in the earlier ones (governor cannot take a spent cell back), so refusals cost a
//! little more budget than they use, never less. A message larger than a byte burst can
//! never fit and closes the socket with 1009.
//!
//! # On excess
//!
//! | configuration | a message over budget | the client sees |
//! |---|---|---|
//! | [`OnExcess::Reply`] (default) | dropped | an error frame, `{"type":"error","code":"rate_limited"}` by default ([`MessageRateLimitLayer::error_frame`] changes it), at most a few per second (the plane coalesces them) |
//! | [`OnExcess::Backpressure`] | waits until it fits; the socket is not read meanwhile | slower sends (TCP flow control) |
//! | sustained excess, with either: more than `n` refusals within `window` ([`DEFAULT_CLOSE_AFTER`] = 10 within [`DEFAULT_CLOSE_WINDOW`] = 10 s unless set with [`MessageRateLimitLayer::close_after`]; [`MessageRateLimitLayer::never_close`] turns it off) | the socket is closed | close 4429, "rate limit exceeded" |
//!
//! Every frame counts: ping and pong frames are messages to the budgets (with their payload
//! as bytes), so a ping flood is cut like any other.
//!
//! The error frame never states the limits, the counts or the retry time (unless your
//! [`ErrorFrame`](wsguard_core::ErrorFrame) closure adds it): clients learn that they
//! are too fast, not how to stay just under the line. Each refusal is logged at `debug`
//! level with its scope and the client IP, the 4429 close at `warn`, and counted with
//! `wsguard_rejections_total{layer="msg_rate"}` under the `metrics` feature.
//!
//! # Shared budgets and memory
//!
//! Per-key budgets live in a [`KeyStore`]; the default [`InMemoryKeyStore`] is bounded: a hard
//! cap on tracked keys (100,000 by default; 96 bytes per IP key and 128 per 16-byte
//! principal id, measured), a sweep of full budgets run by the store itself, and a
//! documented eviction when clients make up more keys than the cap (see
//! [`InMemoryKeyStore`]); the keys of live connections are never evicted. Implement
//! [`KeyStore`] to keep the budgets in a shared database instead, so that several server
//! instances share them.
//!
//! The per-key budget is keyed once per socket, from the identity of its handshake (the
//! store [prepares](KeyStore::prepare) the key once: a message costs atomic updates of the
//! key's budgets, no lock, lookup or hashing): put the
//! authentication layer (for `PrincipalKey`) or `wsguard-client-ip` (for `ClientIpKey`) in
//! front of the upgrade. A socket without that identity is closed with 1011 at its first
//! message, and the misconfiguration is logged at `error` level.
//!
//! # Dry run
//!
//! [`MessageRateLimitLayer::dry_run`]`(true)` lets every message through: what the layer
//! would refuse or close for is logged (`INFO`, target `wsguard_msg_rate`, `mode =
//! "dry_run"`, the scope, never the key or the peer) and counted once per message with
//! `mode="dry_run"`, and no socket is closed for excess. A message let through is not
//! charged to the budget it exceeded. The option has this one name, `dry_run`, on every
//! wsguard limit.
//!
//! # Metrics
//!
//! With the `metrics` feature, through wsguard-core's counters and gauges (the labels this
//! crate uses live in one module, `telemetry.rs`). [`describe_metrics`] describes them and
//! registers every series below at zero. Labels come from fixed sets; never a key.
//!
//! | metric | type | unit | labels | counts |
//! |---|---|---|---|---|
//! | `wsguard_rejections_total` | counter | count | `layer="msg_rate"`, `reason` (`rate_exceeded`, `message_too_large`, `at_capacity`, `bad_request`, `internal`), `mode` (`enforce`, `dry_run`) | messages refused, or in dry-run mode let through that would have been (once per message) |
//! | `wsguard_store_keys` | gauge | count | `store="key_store"` | keys the [`InMemoryKeyStore`]s track now (the handshake rate of `wsguard-conn-limit` uses the same store) |
//!
//! A GCRA store has no `wsguard_store_keys_over_limit` series: a budget refills with time
//! alone, so "over its limit" has no event to count; watch the refusals instead. Admitted
//! messages are counted by the plane (`wsguard_messages_admitted_total`).
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `metrics` | the counters and gauges of [Metrics](#metrics) through the `metrics` facade |
//!
//! # Contributor notes
//!
//! Every wsguard middleware crate has the same shape; keep this one to it.
//!
//! - **One way through.** `layer.rs` (the layer and its builder methods) -> `service.rs`
//!   (the service) -> `future.rs` (the response future) -> `config.rs` (the configuration
//!   the layer and its services share, the decision on each message, and the log and count
//!   of each refusal). No module imports one above it. `call` asks `config.rs` for the
//!   decision and builds the future; every state after that lives in `future.rs`.
//! - **Type parameters.** The service is `MessageRateLimit<S, K, F>`: the inner service
//!   first, then the layer's parameters in the layer's order. Its future is
//!   `ResponseFuture<S, M, K, F>`: the inner service, the message type `M`, then the same
//!   parameters in the same order.
//! - **Polled after completion.** A `ResponseFuture` that has returned `Ready` panics with
//!   "ResponseFuture polled after completion" when polled again (once it has handed over to
//!   the inner service's future, it does what that future does). This is what tower-http's
//!   futures do, and what [`Future::poll`](std::future::Future::poll) allows: polling a
//!   finished future is the caller's bug, and a second, made-up answer or a future pending
//!   forever would hide it.
//! - **The inner service.** Every service has `get_ref`, `get_mut` and `into_inner`.
//! - **Names.** The option that accepts a refused handshake and closes the socket at once
//!   with the close code (browsers cannot read a refused handshake's status) is called
//!   `close_mode` in every crate that has it (`wsguard-conn-limit`, `wsguard-jwt-auth`); this
//!   crate has no such option.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod config;
mod future;
mod layer;
mod rate;
mod service;
mod store;
mod telemetry;

pub use config::{OnExcess, DEFAULT_CLOSE_AFTER, DEFAULT_CLOSE_WINDOW};
pub use future::ResponseFuture;
pub use layer::MessageRateLimitLayer;
pub use rate::{rate, Budget, ConfigError, Rate, RateBuilder};
pub use service::MessageRateLimit;
pub use store::{
    Cost, Decision, InMemoryKeyStore, KeyStore, PreparedKey, DEFAULT_MAX_KEYS,
    DEFAULT_SWEEP_INTERVAL,
};
pub use telemetry::describe_metrics;

/// The GCRA implementation these limits rely on.
pub use governor;
