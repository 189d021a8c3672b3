//! Tower middleware that guards WebSocket endpoints, and any long-lived HTTP stream, in
//! hyper, axum and tonic stacks.
//!
//! This is the facade of the wsguard crates: turn protections on with features and reach
//! them under one name. Every piece is an ordinary tower `Layer` and mixes with tower-http's
//! layers and your own in any `ServiceBuilder`.
//!
//! | feature | module | protects against |
//! |---|---|---|
//! | `client-ip` | [`client_ip`] | spoofed client addresses: proxy headers are read only from trusted proxies |
//! | `origin` | [`origin`] | cross-site WebSocket hijacking: `Origin` allow-listing before the upgrade |
//! | `jwt-auth` | [`jwt_auth`] | forged, expired, revoked or confused tokens: JWT verification at the handshake with pinned algorithms, claims that last the connection |
//! | `conn-limit` | [`conn_limit`] | connection exhaustion: concurrent sockets per user, IP, key or in all for the socket's whole life; idle timeout, lifetime, heartbeat, graceful shutdown |
//! | `msg-rate` | [`msg_rate`] | message floods after the upgrade: GCRA message and byte budgets per connection and per user |
//! | `schema-validate` | [`schema_validate`] | hostile messages: size limits, typed or JSON Schema validation, per-message authorization |
//! | `serve` | [`serve`] | stalled handshakes (slowloris): an HTTP/1.1 server with header-read and first-byte timeouts and a cap on request heads still arriving |
//! | `full` (default) | all of the above, with `axum` and `tokio-tungstenite` | |
//! | `redis` (not in `full`) | `redis` (`wsguard-redis`) | limits that multiply by the number of instances: connection leases, message budgets and revocation shared by a fleet through Redis |
//!
//! [`Guard`] assembles the recommended stack in the right order (feature `full`); every
//! piece also works alone. [`prelude`] imports the usual names.
//!
//! The message plane (feature `plane`, on with `msg-rate` and `schema-validate`) runs every
//! inbound frame of an upgraded socket through a tower service: [`GuardedSocket`].
//!
//! Integrations: `axum` (the [`axum::GuardedUpgrade`] hand-off and extractors),
//! `tokio-tungstenite` (the [`tungstenite::GuardedUpgrade`] hand-off for raw hyper 1),
//! `tonic` (peers from tonic's connect info), `metrics` (counters, gauges and a histogram
//! through the `metrics` facade, all described by [`metrics::describe`](crate::metrics)).
//!
//! The shared vocabulary of [`wsguard_core`] is re-exported at the top: one [`Rejection`]
//! type for every guard (an HTTP status before the upgrade, a close code after it, a gRPC
//! status for tonic), identity extensions ([`ClientIp`], [`Principal`]) and the
//! [`ConnectionScope`] that keeps per-connection guards alive exactly as long as the socket.
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "origin", feature = "axum"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::get, Router};
//! use wsguard::{axum::GuardedUpgrade, origin::{AllowList, OriginGuardLayer}};
//!
//! async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
//!     upgrade.on_upgrade(|socket, conn| async move {
//!         // serve `socket`; `conn` holds the handshake's identity and guards
//!         # let _ = (socket, conn);
//!     })
//! }
//!
//! let app: Router = Router::new()
//!     .route("/ws", get(ws))
//!     .layer(OriginGuardLayer::new(AllowList::new().add_origin("https://app.example.com")?));
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "origin", feature = "axum")))]
//! # fn main() {}
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "plane")))]
pub mod stack;

#[cfg(feature = "plane")]
#[doc(inline)]
pub use stack::{Guard, SocketGuard};

pub mod prelude;

#[doc(inline)]
pub use wsguard_core::{
    guard, is_websocket_upgrade, Access, ClientIp, ClientIpKey, CloseHandle, Connection,
    ConnectionInfo, ConnectionScope, GlobalKey, GrpcCode, GrpcRejection, HeaderKey, HttpRejection,
    InvalidPrefix, Key, KeyError, KeyExtractor, MessageKind, OnRejection, PeerAddr, Principal,
    PrincipalKey, Reason, Rejection, RequestHead, ScopedBody, TokenExpiry, WsError, WsMessage,
    DEFAULT_MAX_MESSAGE_SIZE,
};

#[cfg(any(feature = "axum", feature = "tokio-tungstenite", feature = "plane"))]
#[doc(inline)]
pub use wsguard_core::{WsSocket, CLOSE_TIMEOUT};

#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
#[doc(inline)]
pub use wsguard_core::DEFAULT_READ_BUFFER_SIZE;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[doc(inline)]
pub use wsguard_core::axum;

#[cfg(feature = "tokio-tungstenite")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-tungstenite")))]
#[doc(inline)]
pub use wsguard_core::tungstenite;

#[cfg(feature = "origin")]
#[cfg_attr(docsrs, doc(cfg(feature = "origin")))]
#[doc(inline)]
pub use wsguard_origin as origin;

#[cfg(feature = "plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "plane")))]
#[doc(inline)]
pub use wsguard_core::{
    error_code, Admit, Admitted, ErrorFrame, GuardedSocket, Hygiene, HygieneSocket, Inbound,
    JsonErrorFrame, Shutdown, Verdict, DEFAULT_MAX_LIFETIME, MAX_REPLIES_PER_SECOND,
};

#[cfg(feature = "msg-rate")]
#[cfg_attr(docsrs, doc(cfg(feature = "msg-rate")))]
#[doc(inline)]
pub use wsguard_msg_rate as msg_rate;

#[cfg(feature = "schema-validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema-validate")))]
#[doc(inline)]
pub use wsguard_schema_validate as schema_validate;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use wsguard_redis as redis;

#[cfg(feature = "client-ip")]
#[cfg_attr(docsrs, doc(cfg(feature = "client-ip")))]
#[doc(inline)]
pub use wsguard_client_ip as client_ip;

#[cfg(feature = "jwt-auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt-auth")))]
#[doc(inline)]
pub use wsguard_jwt_auth as jwt_auth;

#[cfg(feature = "conn-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "conn-limit")))]
#[doc(inline)]
pub use wsguard_conn_limit as conn_limit;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
