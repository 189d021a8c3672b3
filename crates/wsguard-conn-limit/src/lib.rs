//! Connection limits that hold for a WebSocket's whole life, and connection hygiene.
//!
//! A WebSocket handshake is one HTTP request, but the connection it opens lives for hours.
//! tower's `ConcurrencyLimit` frees its permit as soon as the `101 Switching Protocols` is
//! sent, and a listener-level limit is global and queues. An attacker (or a buggy client in
//! a reconnect loop) can therefore open sockets until memory, file descriptors or the
//! application's per-socket work run out, and one user can take the capacity of all others.
//!
//! [`ConnLimitLayer`] counts connections under several limits at once (in all, per client
//! IP with IPv6 clients per /64, per authenticated user, per any key such as a path
//! parameter) and refuses at once, never queueing: 429 with `Retry-After` when a key is at
//! its limit, 503 when the server is full. The response never tells the limit or the count.
//! The slots it takes travel through the request's
//! [`ConnectionScope`](wsguard_core::ConnectionScope) into the upgraded socket's task (via
//! wsguard-core's hand-offs, `GuardedUpgrade` for axum or raw hyper) and come back when the
//! socket ends, however it ends: clean close, error, client abort, handler panic, server
//! shutdown. A streamed response (SSE, a gRPC server stream) keeps its slots in its body until
//! the stream ends or the client goes away; a plain response gives them back when it is done.
//! An upgrade answered without a wsguard hand-off would let the socket outlive its slots, so
//! it is refused (500) and logged at error level with a metric.
//!
//! Acquisition is all-or-nothing: a connection refused by one limit holds nothing of the
//! others. Counts live behind the [`ConnectionStore`] trait; the default [`InMemoryConnectionStore`]
//! is sharded, removes a key when its count reaches zero, and tracks at most a configured
//! number of keys (100,000 by default; beyond, new keys are refused with 503), about 150
//! bytes each.
//!
//! [`Hygiene`] closes sockets that are idle (4408), too old (4410), silent after a ping
//! (4504) or open when the server shuts down (1001), so that their slots come back.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{extract::ws::Message, routing::get, Router};
//! use futures_util::{SinkExt, StreamExt};
//! use wsguard_conn_limit::{ConnLimitLayer, Hygiene};
//! use wsguard_core::axum::GuardedUpgrade;
//!
//! # fn main() -> Result<(), wsguard_conn_limit::ConfigError> {
//! // 10,000 sockets in all, 20 per client address, 3 per user (the principal that an
//! // authentication layer in front, such as wsguard-jwt-auth, sets).
//! let limits = ConnLimitLayer::builder()
//!     .global(10_000)
//!     .per_ip(20)
//!     .per_principal(3)
//!     .build()?;
//! let hygiene = Hygiene::new().idle_timeout(Duration::from_secs(300));
//!
//! let app: Router = Router::new()
//!     .route(
//!         "/ws",
//!         get(move |upgrade: GuardedUpgrade| async move {
//!             upgrade.on_upgrade(move |socket, conn| async move {
//!                 let mut socket = hygiene.wrap(socket);
//!                 while let Some(Ok(msg)) = socket.next().await {
//!                     if matches!(msg, Message::Text(_)) && socket.send(msg).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!                 // `conn` (and with it the connection's slots) drops here.
//!                 drop(conn);
//!             })
//!         }),
//!     )
//!     .layer(limits);
//! # Ok(())
//! # }
//! ```
//!
//! # How fast: handshake rates
//!
//! The limits above bound how many connections are open at once, not how fast new ones
//! are opened: a client that connects and disconnects in a loop never holds more than its
//! share. [`handshake_rate::HandshakeRateLimitLayer`] adds a GCRA budget of handshakes per
//! key (client IP with IPv6 per /64, principal, header, or in all), answered 429 with
//! `Retry-After` (4429 in close mode), in a bounded store shared with `wsguard-msg-rate`.
//!
//! # Dry run
//!
//! [`ConnLimitBuilder::dry_run`]`(true)` refuses no connection: one that enforce mode would
//! refuse (a limit full, the store full or unavailable, a limit without a usable key) is
//! let through **holding no slot** in any limit, and logged (`INFO`, `mode = "dry_run"`)
//! and counted with `mode="dry_run"`. The limits and the `wsguard_connections_active`
//! gauges therefore count exactly the connections enforce mode would have admitted; a
//! connection let through has nothing to give back when it closes, so dry run never leaks
//! a slot, and it never keeps another connection out. The counter counts handshakes that
//! would be refused (a client retrying is counted at each try), not sockets. The option
//! has this one name, `dry_run`, on every wsguard limit: the handshake rate's
//! ([`HandshakeRateLimitLayer::dry_run`](handshake_rate::HandshakeRateLimitLayer::dry_run):
//! a handshake over budget goes through and spends nothing) and the failure penalty's
//! ([`FailurePenaltyLayer::dry_run`](penalty::FailurePenaltyLayer::dry_run): a penalised
//! address goes through, and its failures still count) are described in their modules.
//!
//! # What is logged and measured
//!
//! Refusals are `tracing` events at debug level (a key at its limit) or warn level (the key
//! store is full), with the limit's name and the key's class (`ip`, `principal`, ...), never
//! the key itself, which is personal data.
//! In dry-run mode the would-be refusals are `INFO` events, with the same fields and
//! `mode = "dry_run"`.
//!
//! # Metrics
//!
//! With the `metrics` feature, through the `metrics` facade; the names live in one module
//! (`telemetry.rs`). [`describe_metrics`] describes each one (help text and unit, so that a
//! Prometheus exporter shows `HELP` and `TYPE`) and registers every series at zero; a
//! [`ConnLimitLayer`] registers the series of its limits when it is built. Labels come from
//! fixed sets: a limit's name, a reason, a mode, a store name; never a key.
//!
//! | metric | type | unit | labels | counts |
//! |---|---|---|---|---|
//! | `wsguard_connections_active` | gauge | count | `limit` | connections holding a slot of the limit now |
//! | `wsguard_conn_limit_refusals_total` | counter | count | `limit`, `reason`, `mode` | connections the limit refused (`enforce`) or would have refused (`dry_run`) |
//! | `wsguard_conn_limit_unclaimed_upgrades_total` | counter | count | none | upgrades answered without a wsguard hand-off (refused with 500) |
//! | `wsguard_rejections_total` | counter | count | `layer` (`conn_limit`, `handshake_rate`, `failure_penalty`), `reason`, `mode` | refusals of this crate's layers (wsguard-core's counter) |
//! | `wsguard_store_keys` | gauge | count | `store` (`connections`, `penalties`) | keys the in-memory connection store tracks, failure records of the penalty |
//! | `wsguard_store_keys_over_limit` | gauge | count | `store` (`connections`, `penalties`) | keys whose connection count is at their limit's maximum, keys under a failure penalty |
//!
//! [`ConnLimitLayer::active`] reads the gauge of active connections without a metrics
//! recorder. The handshake rate's key store is `wsguard-msg-rate`'s, counted in its
//! `wsguard_store_keys{store="key_store"}`.
//!
//! # Contributor notes
//!
//! Every wsguard middleware crate has the same shape; keep this one to it.
//!
//! - **One way through.** `layer.rs` (the layer and its builder) -> `service.rs` (the
//!   service) -> `future.rs` (the response future) -> `config.rs` (the configuration the
//!   layer and its services share, the decision on each request, and the log and count of
//!   each refusal). No module imports one above it. `call` asks `config.rs` for the
//!   decision and builds the future; every state after that lives in `future.rs`.
//! - **Type parameters.** The service is `ConnLimit<S, St, P>`: the inner service first,
//!   then the layer's parameters in the layer's order. Its future is `ResponseFuture<S,
//!   ReqBody, St, P>`: the inner service, the request body, then the same parameters in the
//!   same order.
//! - **Polled after completion.** A `ResponseFuture` that has returned `Ready` panics with
//!   "ResponseFuture polled after completion" when polled again (once it has handed over to
//!   the inner service's future, it does what that future does). This is what tower-http's
//!   futures do, and what [`Future::poll`](std::future::Future::poll) allows: polling a
//!   finished future is the caller's bug, and a second, made-up answer or a future pending
//!   forever would hide it.
//! - **The inner service.** Every service has `get_ref`, `get_mut` and `into_inner`.
//! - **Names.** The option that accepts a refused handshake and closes the socket at once
//!   with the close code (browsers cannot read a refused handshake's status) is called
//!   `close_mode` in every crate that has it ([`ConnLimitBuilder::close_mode`],
//!   `JwtAuthLayer::close_mode`, the handshake rate's and the penalty's `close_mode`).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod future;
pub mod handshake_rate;
pub mod hygiene;
mod layer;
pub mod penalty;
mod service;
pub mod store;
mod telemetry;

pub use config::{ConfigError, Limit, DEFAULT_RETRY_AFTER, MAX_LIMITS};
pub use future::ResponseFuture;
pub use hygiene::{Hygiene, HygieneSocket, Shutdown};
pub use layer::{ConnLimitBuilder, ConnLimitLayer};
pub use service::ConnLimit;
pub use store::{ConnectionStore, InMemoryConnectionStore, InMemoryLease, Refusal, Slot};
pub use telemetry::describe_metrics;
