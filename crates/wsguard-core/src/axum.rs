//! The hand-off for axum 0.8: [`GuardedUpgrade`], and extractors for the identity types.
//!
//! [`GuardedUpgrade`] is axum's [`WebSocketUpgrade`] plus the [`Connection`] of the
//! handshake. Its [`on_upgrade`](GuardedUpgrade::on_upgrade) callback receives the socket
//! together with the connection, whose [`ConnectionScope`](crate::ConnectionScope) keeps the
//! guards of the handshake layers (connection permits, ...) alive until the callback's future
//! ends, however it ends.
//!
//! ```
//! use axum::{extract::ws::{Message, WebSocket}, routing::get, Router};
//! use wsguard_core::{axum::GuardedUpgrade, Connection};
//!
//! async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
//!     upgrade.on_upgrade(|socket, conn| echo(socket, conn))
//! }
//!
//! async fn echo(mut socket: WebSocket, conn: Connection) {
//!     tracing::info!(authenticated = conn.principal().is_some(), "socket open");
//!     while let Some(Ok(msg)) = socket.recv().await {
//!         if matches!(msg, Message::Text(_) | Message::Binary(_)) && socket.send(msg).await.is_err() {
//!             break;
//!         }
//!     }
//!     // `conn` drops here: the guards of the handshake are released.
//! }
//!
//! let app: Router = Router::new().route("/ws", get(ws));
//! ```

use std::{convert::Infallible, future::Future};

use axum::{
    extract::{
        ws::{
            rejection::WebSocketUpgradeRejection, CloseFrame, DefaultOnFailedUpgrade, Message,
            OnFailedUpgrade, WebSocket, WebSocketUpgrade,
        },
        FromRequestParts, OptionalFromRequestParts,
    },
    response::{IntoResponse, Response},
};
use http::{request::Parts, HeaderValue};

use crate::{
    handshake::{close_with, run_upgraded, DEFAULT_READ_BUFFER_SIZE},
    ClientIp, Connection, Principal, Reason, Rejection, DEFAULT_MAX_MESSAGE_SIZE,
};

/// axum's [`WebSocketUpgrade`] that hands the [`Connection`] to the socket's task.
///
/// Defaults are smaller than axum's: a 4 KiB read buffer, 64 KiB messages and frames
/// ([`DEFAULT_MAX_MESSAGE_SIZE`]).
/// See the [module docs](self) for an example.
#[derive(Debug)]
#[must_use]
pub struct GuardedUpgrade<F = DefaultOnFailedUpgrade> {
    ws: WebSocketUpgrade<F>,
    conn: Connection,
}

impl<S> FromRequestParts<S> for GuardedUpgrade
where
    S: Send + Sync,
{
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ws = WebSocketUpgrade::from_request_parts(parts, state)
            .await?
            .read_buffer_size(DEFAULT_READ_BUFFER_SIZE)
            .max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
            .max_frame_size(DEFAULT_MAX_MESSAGE_SIZE);
        let conn = Connection::from_parts(parts);
        Ok(Self { ws, conn })
    }
}

impl<F> GuardedUpgrade<F> {
    /// The connection that will be handed to the socket's task.
    pub const fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Read buffer capacity (default 4 KiB).
    pub fn read_buffer_size(self, size: usize) -> Self {
        self.map(|ws| ws.read_buffer_size(size))
    }

    /// Write buffer size, see [`WebSocketUpgrade::write_buffer_size`].
    pub fn write_buffer_size(self, size: usize) -> Self {
        self.map(|ws| ws.write_buffer_size(size))
    }

    /// Maximum write buffer size, see [`WebSocketUpgrade::max_write_buffer_size`].
    pub fn max_write_buffer_size(self, max: usize) -> Self {
        self.map(|ws| ws.max_write_buffer_size(max))
    }

    /// Largest accepted message (default 64 KiB, [`DEFAULT_MAX_MESSAGE_SIZE`]). A larger one is refused while it arrives:
    /// the bare socket yields an error, the message plane's `GuardedSocket`
    /// closes with 1009.
    pub fn max_message_size(self, max: usize) -> Self {
        self.map(|ws| ws.max_message_size(max))
    }

    /// Largest accepted frame (default 64 KiB).
    pub fn max_frame_size(self, max: usize) -> Self {
        self.map(|ws| ws.max_frame_size(max))
    }

    /// Subprotocols the server supports, see [`WebSocketUpgrade::protocols`].
    pub fn protocols<I>(self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<std::borrow::Cow<'static, str>>,
    {
        self.map(|ws| ws.protocols(protocols))
    }

    /// The subprotocol that will be selected, if any.
    pub fn selected_protocol(&self) -> Option<&HeaderValue> {
        self.ws.selected_protocol()
    }

    /// What to do when the upgrade itself fails, see [`WebSocketUpgrade::on_failed_upgrade`].
    pub fn on_failed_upgrade<C>(self, callback: C) -> GuardedUpgrade<C>
    where
        C: OnFailedUpgrade,
    {
        GuardedUpgrade {
            ws: self.ws.on_failed_upgrade(callback),
            conn: self.conn,
        }
    }

    fn map(self, f: impl FnOnce(WebSocketUpgrade<F>) -> WebSocketUpgrade<F>) -> Self {
        Self {
            ws: f(self.ws),
            conn: self.conn,
        }
    }

    /// Completes the upgrade and calls `callback` with the socket and its [`Connection`].
    ///
    /// If a handshake layer deferred a rejection (the "close" mode for browser clients), the
    /// socket is closed with the rejection's close code instead, and `callback` is never
    /// called.
    #[must_use = "to set up the WebSocket connection, this response must be returned"]
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket, Connection) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
        F: OnFailedUpgrade,
    {
        let Self { ws, conn } = self;
        if let Some(pending) = conn.pending_rejection() {
            pending.mark_delivered();
            let rejection = *pending.rejection();
            return ws.on_upgrade(move |socket| async move {
                close_with::<_, Message, _>(socket, &rejection).await;
                drop(conn);
            });
        }
        ws.on_upgrade(move |socket| run_upgraded(callback(socket, conn)))
    }
}

/// The close frame of a rejection (1008 "policy violation" if it has no close code).
pub fn close_frame(rejection: &Rejection) -> Option<CloseFrame> {
    Some(CloseFrame {
        code: rejection.close_code().unwrap_or(1008),
        reason: rejection.close_reason().into(),
    })
}

/// The rejection of the identity extractors: the layer that provides the value is missing.
///
/// Answers 500 and logs an error: this is a configuration mistake, not a client's.
#[derive(Debug, Clone, Copy)]
pub struct MissingIdentity(&'static str);

impl IntoResponse for MissingIdentity {
    fn into_response(self) -> Response {
        tracing::error!(
            missing = self.0,
            "extractor used without the wsguard layer that provides it"
        );
        Rejection::new(Reason::Internal).to_http_response()
    }
}

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
{
    type Rejection = MissingIdentity;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .copied()
            .ok_or(MissingIdentity("client ip (add wsguard-client-ip's layer)"))
    }
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
{
    type Rejection = MissingIdentity;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(MissingIdentity("principal (add an authentication layer)"))
    }
}

/// `Option<ClientIp>`: `None` when no layer resolved the client IP.
impl<S> OptionalFromRequestParts<S> for ClientIp
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Self>().copied())
    }
}

/// `Option<Principal>`: `None` for an anonymous request, on routes where authentication is
/// optional.
impl<S> OptionalFromRequestParts<S> for Principal
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
