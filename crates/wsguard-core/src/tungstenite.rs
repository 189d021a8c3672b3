//! The hand-off for raw hyper 1 + tokio-tungstenite, without axum.
//!
//! [`GuardedUpgrade::from_request`] checks a handshake and takes its [`Connection`];
//! [`GuardedUpgrade::on_upgrade`] answers `101 Switching Protocols` and spawns a task that
//! runs your callback with the [`WebSocketStream`] and the connection, whose
//! [`ConnectionScope`](crate::ConnectionScope) keeps the handshake layers' guards alive until
//! the callback's future ends. Only HTTP/1.1 handshakes are supported here (axum's hand-off
//! also speaks HTTP/2).
//!
//! ```no_run
//! use std::convert::Infallible;
//! use futures_util::{SinkExt, StreamExt};
//! use http_body_util::Full;
//! use hyper::{body::{Bytes, Incoming}, Request, Response};
//! use wsguard_core::tungstenite::GuardedUpgrade;
//!
//! async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let upgrade = match GuardedUpgrade::from_request(&mut req) {
//!         Ok(upgrade) => upgrade,
//!         Err(err) => return Ok(err.to_response()),
//!     };
//!     Ok(upgrade.on_upgrade(|mut socket, _conn| async move {
//!         while let Some(Ok(msg)) = socket.next().await {
//!             if (msg.is_text() || msg.is_binary()) && socket.send(msg).await.is_err() {
//!                 break;
//!             }
//!         }
//!     }))
//! }
//! ```

use std::{borrow::Cow, fmt, future::Future};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Message,
    },
    WebSocketStream,
};

use crate::{
    handshake::{close_with, run_upgraded, DEFAULT_READ_BUFFER_SIZE},
    Connection, Rejection, DEFAULT_MAX_MESSAGE_SIZE,
};

/// The socket type handed to [`GuardedUpgrade::on_upgrade`]'s callback.
pub type GuardedStream = WebSocketStream<TokioIo<Upgraded>>;

/// A checked WebSocket handshake whose socket will receive the [`Connection`].
///
/// See the [module docs](self) for an example.
#[must_use]
pub struct GuardedUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    requested: Vec<HeaderValue>,
    protocol: Option<HeaderValue>,
    config: WebSocketConfig,
    conn: Connection,
}

impl fmt::Debug for GuardedUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedUpgrade")
            .field("protocol", &self.protocol)
            .field("config", &self.config)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// Why a request is not a WebSocket handshake this hand-off can complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Not `GET`.
    MethodNotGet,
    /// Not HTTP/1.1.
    UnsupportedVersion,
    /// `Connection` does not contain `upgrade`, or `Upgrade` is not `websocket`.
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    UnsupportedWebSocketVersion,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
    /// The connection cannot be upgraded (no hyper `OnUpgrade` in the request).
    NotUpgradable,
}

impl UpgradeError {
    /// The status to answer with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedVersion | Self::UnsupportedWebSocketVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
            Self::NotAnUpgrade | Self::MissingKey => StatusCode::BAD_REQUEST,
            Self::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A response with [`status`](Self::status) and a short body; `426` answers carry
    /// `Sec-WebSocket-Version: 13` as RFC 6455 section 4.4 asks.
    pub fn to_response<B>(self) -> Response<B>
    where
        B: From<&'static str>,
    {
        let mut res = Response::new(B::from(self.message()));
        *res.status_mut() = self.status();
        if self.status() == StatusCode::UPGRADE_REQUIRED {
            res.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        res
    }

    const fn message(self) -> &'static str {
        match self {
            Self::MethodNotGet => "method not allowed",
            Self::UnsupportedVersion => "http/1.1 required",
            Self::NotAnUpgrade => "not a websocket handshake",
            Self::UnsupportedWebSocketVersion => "unsupported websocket version",
            Self::MissingKey => "missing sec-websocket-key",
            Self::NotUpgradable => "connection not upgradable",
        }
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for UpgradeError {}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl GuardedUpgrade {
    /// Checks that `req` is a WebSocket handshake and takes its [`Connection`].
    ///
    /// # Errors
    ///
    /// [`UpgradeError`] when `req` is not an HTTP/1.1 WebSocket handshake.
    pub fn from_request<B>(req: &mut Request<B>) -> Result<Self, UpgradeError> {
        if req.method() != Method::GET {
            return Err(UpgradeError::MethodNotGet);
        }
        if req.version() != Version::HTTP_11 {
            return Err(UpgradeError::UnsupportedVersion);
        }
        let headers = req.headers();
        if !header_has_token(headers, header::CONNECTION, "upgrade")
            || !header_has_token(headers, header::UPGRADE, "websocket")
        {
            return Err(UpgradeError::NotAnUpgrade);
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(UpgradeError::UnsupportedWebSocketVersion);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(UpgradeError::MissingKey)?;
        let requested = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|p| HeaderValue::from_bytes(p.trim_ascii()).ok())
            .filter(|p| !p.is_empty())
            .collect();
        let on_upgrade = req
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(UpgradeError::NotUpgradable)?;
        let conn = Connection::new(req.uri().clone(), req.extensions_mut());
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = DEFAULT_READ_BUFFER_SIZE;
        config.max_message_size = Some(DEFAULT_MAX_MESSAGE_SIZE);
        config.max_frame_size = Some(DEFAULT_MAX_MESSAGE_SIZE);
        Ok(Self {
            key,
            on_upgrade,
            requested,
            protocol: None,
            config,
            conn,
        })
    }

    /// The connection that will be handed to the socket's task.
    pub const fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Replaces the whole tungstenite configuration.
    pub const fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Read buffer capacity (default 4 KiB).
    pub const fn read_buffer_size(mut self, size: usize) -> Self {
        self.config.read_buffer_size = size;
        self
    }

    /// Largest accepted message (default 64 KiB, [`DEFAULT_MAX_MESSAGE_SIZE`]). A larger one is refused while it arrives:
    /// the bare socket yields an error, the message plane's `GuardedSocket` closes with 1009.
    pub const fn max_message_size(mut self, max: usize) -> Self {
        self.config.max_message_size = Some(max);
        self
    }

    /// Largest accepted frame (default 64 KiB).
    pub const fn max_frame_size(mut self, max: usize) -> Self {
        self.config.max_frame_size = Some(max);
        self
    }

    /// Selects the first of `protocols` (in the server's order of preference) that the
    /// client offered.
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Cow<'static, str>>,
    {
        self.protocol = protocols.into_iter().find_map(|p| {
            let p = p.into();
            self.requested
                .iter()
                .find(|r| r.as_bytes() == p.as_bytes())
                .cloned()
        });
        self
    }

    /// The subprotocol that will be selected, if any.
    pub const fn selected_protocol(&self) -> Option<&HeaderValue> {
        self.protocol.as_ref()
    }

    /// Answers `101 Switching Protocols` and spawns a tokio task that runs `callback` with
    /// the socket and its [`Connection`] once hyper hands the connection over.
    ///
    /// If a handshake layer deferred a rejection, the socket is closed with its close code
    /// instead and `callback` is never called.
    pub fn on_upgrade<B, C, Fut>(self, callback: C) -> Response<B>
    where
        B: Default,
        C: FnOnce(GuardedStream, Connection) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self {
            key,
            on_upgrade,
            protocol,
            config,
            conn,
            ..
        } = self;
        let pending = conn.pending_rejection().map(|p| {
            p.mark_delivered();
            *p.rejection()
        });
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(error = %err, "websocket upgrade failed");
                    return;
                }
            };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            match pending {
                Some(rejection) => {
                    close_with::<_, Message, _>(socket, &rejection).await;
                    drop(conn);
                }
                None => run_upgraded(callback(socket, conn)).await,
            }
        });

        let mut res = Response::new(B::default());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = res.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        res
    }
}

/// The tungstenite close frame of a rejection (1008 "policy violation" if it has no code).
pub fn close_frame(rejection: &Rejection) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(rejection.close_code().unwrap_or(1008)),
        reason: rejection.close_reason().into(),
    }
}
