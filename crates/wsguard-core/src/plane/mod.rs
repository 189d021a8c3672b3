//! The message plane: every inbound data frame of an upgraded socket goes through a tower
//! [`Service`](tower_service::Service).
//!
//! After the upgrade, guards work per message rather than per request. The plane's request
//! is an [`Inbound`] (the message and a cheap handle on its [`ConnectionInfo`]: client IP,
//! principal, token expiry, the handshake's extensions) and its response a [`Verdict`]: hand
//! the message to the application, answer it with a reply frame, drop it, or close the
//! socket with a [`Rejection`](crate::Rejection)'s close code. Guards of the message plane (`wsguard-msg-rate`,
//! `wsguard-schema-validate`, your own) are ordinary tower [`Layer`](tower_layer::Layer)s over such a service,
//! so tower's own layers (timeouts, concurrency limits, `ServiceBuilder`) compose with them;
//! the innermost service is usually [`Admit`], which lets every message through.
//!
//! [`GuardedSocket`] runs a socket through such a service. It wraps any
//! `Stream<Item = Result<M, E>> + Sink<M, Error = E>` of [`WsMessage`](crate::WsMessage)s (axum's `WebSocket`,
//! tokio-tungstenite's `WebSocketStream`, or another adapter of the same shape, such as the
//! connection [`hygiene`] beside it (also re-exported by `wsguard-conn-limit`), inside or
//! outside it) and is itself one:
//!
//! - every message but the peer's close frame is passed to the service: text, binary, and
//!   the ping and pong control frames too (they cost the server as much as a small message,
//!   so budgets must see them); only admitted messages reach the application, and a
//!   [`Verdict::Close`] closes the socket through the [closing handshake](crate::close)
//!   (close frame, flush, read and discard what the peer still sends within bounds, end);
//! - a ping is answered by the socket itself (tungstenite queues one pong at a time, and a
//!   newer ping replaces a pong that could not go out yet: RFC 6455 section 5.5.3), and a
//!   ping the service does not admit is not seen by the application;
//! - refusal frames ([`Verdict::Reply`]) are coalesced: at most
//!   [`MAX_REPLIES_PER_SECOND`] per connection (unless set), the others are dropped
//!   silently, so that a flood of refused messages is never answered message for message;
//! - the peer's close frame reaches the application as it is (the socket answers it);
//! - backpressure: the socket is not read while the service is not ready or a message is
//!   being decided, so a slow guard (or a rate limiter that waits) slows the client down
//!   through TCP flow control instead of buffering its messages;
//! - token lifetime: when the connection's [`TokenExpiry`](crate::TokenExpiry) passes, the
//!   socket is closed with 4440 ([`Reason::TokenExpired`](crate::Reason::TokenExpired)) by a timer, idle or not;
//! - the peer's faults: a message over the socket's own limit (which the hand-offs set, and
//!   which tungstenite enforces while the message arrives) closes the socket with 1009
//!   ([`Reason::MessageTooLarge`](crate::Reason::MessageTooLarge)), a text message that is not UTF-8 with 1007, a frame
//!   that breaks RFC 6455's framing rules with 1002 ([`Reason::ProtocolError`](crate::Reason::ProtocolError)); see
//!   [`WsError::close_reason`](crate::WsError::close_reason). The close frame goes out at once and the stream ends as soon
//!   as it is flushed (nothing more can be read). Other socket errors reach the application.
//!
//! The adapter does its work (the timers included) while the application polls it for the
//! next message, as a WebSocket loop does anyway: keep reading the socket, for example in a
//! `tokio::select!` beside the application's other sources, rather than only between long
//! pauses.
//!
//! What a guard learned about a message travels with it in the [`Inbound`]: the message's
//! parsed form ([`Inbound::set_parsed`]: a validator's typed message) and its extensions
//! (anything else). Both reach the application as part of an [`Admitted`] message through
//! [`GuardedSocket::next_admitted`], so nothing is parsed twice. Through the plain `Stream`
//! interface the application gets the bare message, and what was learned about the message
//! it got last from [`GuardedSocket::take_parsed`] and [`GuardedSocket::take_extensions`].
//!
//! The plane builds one service per connection ([`GuardedSocket::layered`] calls
//! [`Layer::layer`](tower_layer::Layer::layer) for each socket), so a guard keeps its per-connection state in the
//! service it builds and its shared state (per-user budgets) in its layer.
//!
//! # Example
//!
//! A plane that refuses binary messages with an error frame, under tower's timeout, in front
//! of an echo over axum:
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # {
//! use std::{convert::Infallible, time::Duration};
//! use axum::{extract::ws::Message, routing::get, Router};
//! use futures_util::SinkExt;
//! use tower::ServiceBuilder;
//! use wsguard_core::{axum::GuardedUpgrade, plane::{GuardedSocket, Inbound, Verdict}};
//!
//! async fn text_only(req: Inbound<Message>) -> Result<Verdict<Message>, Infallible> {
//!     Ok(match req.message() {
//!         Message::Binary(_) => {
//!             Verdict::Reply(Message::text(r#"{"type":"error","code":"text_only"}"#))
//!         }
//!         _ => Verdict::Admit(req),
//!     })
//! }
//!
//! async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
//!     upgrade.on_upgrade(|socket, conn| async move {
//!         let plane = ServiceBuilder::new()
//!             .timeout(Duration::from_secs(5))
//!             .service_fn(text_only);
//!         let mut socket = GuardedSocket::new(socket, conn, plane);
//!         while let Some(Ok(msg)) = socket.next_admitted().await {
//!             if socket.send(msg.into_message()).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! let app: Router = Router::new().route("/ws", get(ws));
//! # }
//! ```

mod connection;
mod error_frame;
pub mod hygiene;
mod message;
mod socket;
#[cfg(test)]
mod tests;

pub use crate::ConnectionInfo;
pub use connection::ConnectionBinding;
pub use error_frame::{error_code, ErrorFrame, JsonErrorFrame};
pub use hygiene::{Hygiene, HygieneSocket, Shutdown, DEFAULT_MAX_LIFETIME};
pub use message::{foreign_connection, Admit, Admitted, Inbound, Verdict};
pub use socket::{GuardedSocket, MAX_REPLIES_PER_SECOND};

pub use crate::close::{WsSocket, CLOSE_TIMEOUT};
