//! Validation of WebSocket messages before the application sees them: size and frame-type
//! guards, bounded JSON parsing into your `serde` type or against a JSON Schema, generic
//! error frames, and per-message authorization, on the message plane of `wsguard-core`.
//!
//! After the upgrade, every message is input from the network: a deeply nested array can
//! exhaust a recursive parser, a huge string costs an allocation of its size, an unknown
//! command reaches code that never expected it, and a parser's error message echoes the
//! input back to whoever probes for reflection. And an authenticated user is not allowed
//! everything: in the seeds of this project, a user could subscribe to any session by
//! sending its id. [`ValidateMessageLayer`] checks each message, cheapest first, and only
//! lets through messages that are well-formed, of your type, and allowed for their
//! connection:
//!
//! 1. the frame type ([`Accept`], default text only): otherwise close 1003;
//! 2. the size ([`ValidateMessageLayer::max_message_size`], default 64 KiB): otherwise
//!    close 1009;
//! 3. a single linear pre-scan of the bytes, before any parsing, for the nesting depth
//!    (default 32) and the longest string (default 16 KiB): a hostile message is refused
//!    without a single allocation of its size;
//! 4. parsing into `T` with `serde_json` (`Value` by default, your type with
//!    [`typed`](ValidateMessageLayer::typed)), and with the `json-schema` feature, a JSON
//!    Schema compiled once, when the layer is built;
//! 5. the [`Authorize`] hook, given the connection's identity and the parsed message.
//!
//! An invalid message is answered with a generic error frame,
//! `{"type":"error","code":"invalid_message"}` (never serde's or jsonschema's text, which
//! can quote the input; what went wrong is logged at `debug` level by category), and
//! [`max_invalid`](ValidateMessageLayer::max_invalid) invalid messages in a row (default 5)
//! close the socket with 1007. A denied message gets `{"type":"error","code":"forbidden"}`,
//! or a 4403 close with [`OnDeny::Close`].
//!
//! The parsed value is handed to the application with the message, as its parsed form:
//! nothing is parsed twice. Take it with
//! [`take_parsed`](wsguard_core::Admitted::take_parsed) from the
//! [`Admitted`](wsguard_core::Admitted) message that `GuardedSocket::next_admitted`
//! returns.
//!
//! # Example
//!
//! The seeds' protocol: `ping`, `subscribe` and `unsubscribe` commands, and a user may only
//! subscribe to sessions they own.
//!
//! ```
//! use axum::{extract::ws::Message, routing::get, Router};
//! use futures_util::SinkExt;
//! use serde::Deserialize;
//! use wsguard_core::{axum::GuardedUpgrade, ConnectionInfo, GuardedSocket};
//! use wsguard_schema_validate::{Access, ValidateMessageLayer};
//!
//! #[derive(Debug, Clone, Deserialize)]
//! #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
//! enum Command {
//!     Ping,
//!     Subscribe { session_id: String },
//!     Unsubscribe { session_id: String },
//! }
//!
//! # async fn owner_of(session: &str) -> Option<String> { Some("alice".into()) }
//! let validate = ValidateMessageLayer::new()
//!     .typed::<Command>()
//!     .max_message_size(16 * 1024)
//!     .authorize(|conn: &ConnectionInfo, command: &Command| {
//!         // Take what the check needs; the future owns it.
//!         let user = conn.principal().map(|p| p.as_str().to_owned());
//!         let session = match command {
//!             Command::Ping => None,
//!             Command::Subscribe { session_id } | Command::Unsubscribe { session_id } => {
//!                 Some(session_id.clone())
//!             }
//!         };
//!         async move {
//!             match session {
//!                 None => Access::Allow,
//!                 Some(session) => Access::from(user.is_some() && owner_of(&session).await == user),
//!             }
//!         }
//!     });
//!
//! let limit = validate.message_size_limit();
//! let app: Router = Router::new().route(
//!     "/ws",
//!     get(move |upgrade: GuardedUpgrade| async move {
//!         upgrade
//!             .max_message_size(limit)
//!             .max_frame_size(limit)
//!             .on_upgrade(move |socket, conn| async move {
//!                 let mut socket = GuardedSocket::layered(socket, conn, &validate);
//!                 while let Some(Ok(mut msg)) = socket.next_admitted().await {
//!                     // Valid, allowed, and parsed once.
//!                     let reply = match msg.take_parsed::<Command>() {
//!                         Some(Command::Ping) => "pong",
//!                         Some(Command::Subscribe { .. }) => "subscribed",
//!                         Some(Command::Unsubscribe { .. }) => "unsubscribed",
//!                         None => continue, // ping, pong and close frames
//!                     };
//!                     if socket.send(Message::text(reply)).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             })
//!     }),
//! );
//! ```
//!
//! With `wsguard-msg-rate`, stack both in one `tower::ServiceBuilder` (the rate limit
//! first, so a flood is refused before it is parsed) and pass it to
//! `GuardedSocket::layered`.
//!
//! # Message size
//!
//! The layer sees whole messages, after tungstenite has read them. To keep oversize data
//! from ever being buffered, give the hand-off the same limit:
//! `GuardedUpgrade::max_message_size(..)` and `GuardedUpgrade::max_frame_size(..)`
//! (axum's and the raw tokio-tungstenite hand-off both have them), with
//! [`ValidateMessageLayer::message_size_limit`]. tungstenite checks a frame's length from
//! its header and fails the read of a larger one before reading its payload; the
//! `GuardedSocket` then closes the socket with 1009, as this layer does for a message over
//! its own limit. Either way the client gets 1009 and nothing over the limit is buffered.
//!
//! UTF-8 is checked by tungstenite (an invalid text frame fails the connection with 1007);
//! binary payloads, if [`Accept`] lets them through, are parsed as UTF-8 JSON.
//!
//! # Dry run
//!
//! [`ValidateMessageLayer::dry_run`]`(true)` refuses nothing: a message of the wrong frame
//! type, too large, invalid or denied by the [`Authorize`] hook is handed on to the
//! application as the raw message, **without a parsed value**
//! ([`take_parsed`](wsguard_core::Admitted::take_parsed) returns `None` for it, so an
//! application that only acts on parsed values ignores it, and one that reads the raw
//! message gets it unchecked). What enforce mode would have done is logged (`INFO`, target
//! `wsguard_schema_validate`, `mode = "dry_run"`, the reason and its category, never the
//! message or the peer) and counted with `mode="dry_run"`; no error frame is sent and no
//! socket is closed for invalid messages in a row. A message from another connection than
//! the service's own (a misconfiguration) is still closed with 1011. The option has this
//! one name, `dry_run`, on every wsguard limit.
//!
//! # Metrics
//!
//! With the `metrics` feature, through wsguard-core's counter (the label this crate uses
//! lives in one module, `telemetry.rs`). [`describe_metrics`] describes it and registers
//! every series below at zero.
//!
//! | metric | type | unit | labels | counts |
//! |---|---|---|---|---|
//! | `wsguard_rejections_total` | counter | count | `layer="schema"`, `reason` (`invalid_message`, `message_too_large`, `unsupported_data`, `forbidden`, `internal`), `mode` (`enforce`, `dry_run`) | messages refused, or in dry-run mode admitted that would have been |
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `json-schema` | [`ValidateMessageLayer::json_schema`], with the `jsonschema` crate (no HTTP or file retrieval; `regex` patterns only) |
//! | `metrics` | the counter of [Metrics](#metrics) through the `metrics` facade |
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
//! - **Type parameters.** The service is `ValidateMessage<S, T, A, F>`: the inner service
//!   first, then the layer's parameters in the layer's order. Its future is
//!   `ResponseFuture<S, M, T, A, F>`: the inner service, the message type `M`, then the
//!   same parameters in the same order.
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

mod authorize;
mod config;
mod future;
mod layer;
mod scan;
mod service;
mod telemetry;

pub use authorize::{Access, AllowAll, Authorize};
pub use config::{
    Accept, ConfigError, OnDeny, DEFAULT_MAX_DEPTH, DEFAULT_MAX_INVALID, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_STRING_LEN,
};
pub use future::ResponseFuture;
pub use layer::ValidateMessageLayer;
pub use service::ValidateMessage;
pub use telemetry::describe_metrics;
