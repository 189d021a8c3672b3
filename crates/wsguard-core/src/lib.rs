//! The shared vocabulary of the wsguard crates.
//!
//! wsguard guards WebSocket endpoints (and any long-lived HTTP stream) with small tower
//! layers. This crate is what they have in common, and what an application needs to mix
//! them with its own code:
//!
//! - [`Rejection`] and [`Reason`]: one answer type for every guard, mapped to an HTTP
//!   status before the upgrade, a WebSocket close code after it, or a gRPC status, with the
//!   typed reason in the response's extensions. [`OnRejection`] policies change the answer
//!   in one place.
//! - Identity: [`ClientIp`], [`Principal`], [`TokenExpiry`] as request extensions, and
//!   [`KeyExtractor`]s that name the bucket a request is counted in (global, client IP or
//!   IPv6 /64, principal, header, or a closure).
//! - [`Access`]: the one answer of every authorization hook (an origin predicate, a claims
//!   predicate, a per-message authorization), allow or deny.
//! - The connection scope: [`ConnectionScope`] holds guards (such as connection permits) for
//!   exactly as long as the connection lives. The hand-offs, [`axum::GuardedUpgrade`] and
//!   [`tungstenite::GuardedUpgrade`] (behind the `axum` and `tokio-tungstenite` features),
//!   carry it into the upgraded socket's task as part of a [`Connection`]. Its
//!   [`CloseHandle`] closes that socket from anywhere (a revoked token, a kicked user) with
//!   a close code of the table, through the same closing handshake as every other close.
//! - Everything else is re-exported at the root, apart from the two hand-off modules and
//!   [`guard`], which gathers what a crate writing its own guard needs (answering, counting,
//!   close mode, the closing handshake) and an application never does.
//!
//! The threat this crate's scope stops is the leaking or premature release of per-connection
//! state: with `tower::limit::ConcurrencyLimit` a permit is released when the `101
//! Switching Protocols` response goes out, long before the socket closes, so a "3
//! connections per user" limit holds nothing at all.
//!
//! # Example
//!
//! A handshake layer holds a guard in the request's scope; the hand-off moves the scope into
//! the socket's [`Connection`], and the guard is released when that connection is dropped.
//!
//! ```
//! use std::sync::{atomic::{AtomicUsize, Ordering}, Arc};
//! use wsguard_core::{Connection, ConnectionScope, Rejection, Reason};
//!
//! struct Permit(Arc<AtomicUsize>);
//! impl Drop for Permit {
//!     fn drop(&mut self) { self.0.fetch_sub(1, Ordering::SeqCst); }
//! }
//!
//! let open = Arc::new(AtomicUsize::new(0));
//! let mut req = http::Request::new(());
//!
//! // In a layer, before the upgrade:
//! open.fetch_add(1, Ordering::SeqCst);
//! ConnectionScope::of(&mut req).hold(Permit(open.clone()));
//!
//! // In the hand-off (done for you by the axum and tungstenite `GuardedUpgrade`s):
//! let (mut parts, _body) = req.into_parts();
//! let conn = Connection::from_parts(&mut parts);
//! drop(parts); // the handler returns its 101; the socket lives on
//! assert_eq!(open.load(Ordering::SeqCst), 1);
//!
//! drop(conn); // the socket's task ends, however it ends
//! assert_eq!(open.load(Ordering::SeqCst), 0);
//!
//! // Every guard answers through the same type:
//! let limited = Rejection::new(Reason::TooManyConnections);
//! assert_eq!(limited.status(), http::StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(limited.close_code(), Some(4429));
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `axum` | [`axum::GuardedUpgrade`], and axum extractors for [`ClientIp`] and [`Principal`] |
//! | `tokio-tungstenite` | [`tungstenite::GuardedUpgrade`] for raw hyper 1 + tokio-tungstenite |
//! | `metrics` | the counters and the histogram of [`guard`'s metrics table](guard#metrics) through the `metrics` facade |
//! | `plane` | the message plane: per-message tower services and the `GuardedSocket` adapter |
//! | `close` | `guard::Closing`: the closing handshake every close wsguard starts goes through (the hand-offs and the plane turn it on) |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod access;
mod close_mode;
mod connection;
mod handshake;
mod identity;
mod key;
mod message;
mod reject;
mod scope;
mod telemetry;

pub mod guard;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "close")]
mod close;

#[cfg(feature = "tokio-tungstenite")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-tungstenite")))]
pub mod tungstenite;

#[cfg(feature = "plane")]
mod plane;

pub use access::Access;
pub use connection::{Connection, ConnectionInfo};
pub use handshake::is_websocket_upgrade;
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "axum", feature = "tokio-tungstenite"))))]
pub use handshake::DEFAULT_READ_BUFFER_SIZE;
pub use identity::{ClientIp, PeerAddr, Principal, TokenExpiry};
pub use key::{
    ClientIpKey, GlobalKey, HeaderKey, InvalidPrefix, Key, KeyError, KeyExtractor, PrincipalKey,
    RequestHead,
};
pub use message::{MessageKind, WsError, WsMessage};
pub use reject::{GrpcCode, GrpcRejection, HttpRejection, OnRejection, Reason, Rejection};
pub use scope::{CloseHandle, ConnectionScope, ScopedBody};

#[cfg(feature = "close")]
#[cfg_attr(docsrs, doc(cfg(feature = "close")))]
pub use close::{WsSocket, CLOSE_TIMEOUT};

#[cfg(feature = "plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "plane")))]
pub use plane::{
    error_code, Admit, Admitted, ErrorFrame, GuardedSocket, Hygiene, HygieneSocket, Inbound,
    JsonErrorFrame, Shutdown, Verdict, DEFAULT_MAX_LIFETIME, MAX_REPLIES_PER_SECOND,
};

/// The largest message (and frame) wsguard accepts unless configured otherwise, on the
/// socket (the hand-offs give it to tungstenite, which refuses a larger one while it arrives,
/// with close 1009) and in `wsguard-schema-validate`: 64 KiB, instead of tungstenite's
/// 64 MiB messages and 16 MiB frames. One value, so that the transport and the validator
/// agree unless told otherwise.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
