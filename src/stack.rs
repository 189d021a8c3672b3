//! [`Guard`]: the recommended stack, assembled in the right order.
//!
//! The protections work alone, but their order matters when they are stacked:
//!
//! 1. on the handshake, outermost first: the **client IP** (everything after it keys on
//!    it), the **Origin** check (the cheapest refusal), **authentication** (the principal
//!    that limits key on), the **connection limit** (which counts only connections that got
//!    this far, and holds their slots for the socket's life);
//! 2. the hand-off ([`GuardedUpgrade`](crate::axum::GuardedUpgrade)), with the message size
//!    limits applied to the upgrade so oversized data is never buffered;
//! 3. on every message: connection **hygiene** innermost (idle timeout, lifetime, heartbeat,
//!    shutdown, seen on the raw socket), then the **rate limit** (a flood is refused before it
//!    is parsed), then **validation** and per-message authorization.
//!
//! [`Guard`] takes each piece in any order and puts it in its place. Every slot is
//! optional (an absent piece is tower's [`Identity`]) and takes any layer, so your own
//! authentication or limits fit the same slots. It splits into its two halves: the
//! handshake part, an ordinary tower [`Layer`] ([`Guard::handshake`]) that mixes with
//! tower-http's layers in any `ServiceBuilder`, and the socket part, a [`SocketGuard`]
//! ([`Guard::socket_guard`]) that the WebSocket handler keeps (in axum's state, say) to
//! guard each upgraded socket. A [`SocketGuard`] can also be built on its own.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "full")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use axum::{extract::{ws::Message, State}, response::Response, routing::get, Router};
//! use futures_util::SinkExt;
//! use wsguard::{
//!     axum::GuardedUpgrade,
//!     client_ip::ClientIpLayer,
//!     conn_limit::{ConnLimitLayer, Hygiene},
//!     jwt_auth::{Algorithm, JwtAuthLayer, VerifyingKey},
//!     msg_rate::{rate, Budget, MessageRateLimitLayer},
//!     origin::{AllowList, OriginGuardLayer},
//!     Guard,
//! };
//!
//! let guard = Guard::new()
//!     .client_ip(ClientIpLayer::new())
//!     .origin(OriginGuardLayer::new(AllowList::new().add_origin("https://chat.example.com")?))
//!     .auth(JwtAuthLayer::<serde_json::Value>::new(VerifyingKey::hmac(Algorithm::HS256, &[7; 32])?))
//!     .conn_limit(ConnLimitLayer::builder().per_principal(3).per_ip(20).build()?)
//!     .rate_limit(MessageRateLimitLayer::new().per_key(
//!         wsguard::PrincipalKey::default(),
//!         Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(20)),
//!     )?)
//!     .hygiene(Hygiene::new().idle_timeout(Duration::from_secs(300)))
//!     .max_message_size(64 * 1024);
//!
//! async fn ws(State(sockets): State<Sockets>, upgrade: GuardedUpgrade) -> Response {
//!     sockets.on_upgrade(upgrade, |mut socket| async move {
//!         // Only admitted messages arrive; hygiene and limits act on their own.
//!         while let Some(Ok(msg)) = socket.next_admitted().await {
//!             if socket.send(msg.into_message()).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//! // What the handler keeps: the message plane's layers, hygiene and the size limit.
//! type Sockets = wsguard::SocketGuard<MessageRateLimitLayer>;
//!
//! // The handshake layers are ordinary tower layers: here under tower-http's tracing and
//! // timeout (which bounds the handshake, not the socket), in one `ServiceBuilder`.
//! let app: Router = Router::new()
//!     .route("/ws", get(ws))
//!     .layer(
//!         tower::ServiceBuilder::new()
//!             .layer(tower_http::trace::TraceLayer::new_for_http())
//!             .layer(tower_http::timeout::TimeoutLayer::with_status_code(
//!                 http::StatusCode::REQUEST_TIMEOUT,
//!                 Duration::from_secs(10),
//!             ))
//!             .layer(guard.handshake()),
//!     )
//!     .with_state(guard.socket_guard());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "full"))]
//! # fn main() {}
//! ```

use std::fmt;

use tower_layer::{Identity, Layer, Stack};
use wsguard_core::{
    Admit, Connection, GuardedSocket, Hygiene, HygieneSocket, Inbound, Verdict, WsSocket,
};

/// The recommended stack of wsguard protections; see the [module docs](self).
///
/// Type parameters, in stack order: client IP, Origin, authentication, connection limit,
/// message rate limit, message validation. Each is tower's [`Identity`] until set. The last
/// two, with hygiene and the size limit, make its [`SocketGuard`].
#[derive(Clone)]
#[must_use]
pub struct Guard<
    Ip = Identity,
    Or = Identity,
    Auth = Identity,
    Lim = Identity,
    Rate = Identity,
    Val = Identity,
> {
    client_ip: Ip,
    origin: Or,
    auth: Auth,
    conn_limit: Lim,
    sockets: SocketGuard<Rate, Val>,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Guard {
    /// An empty stack: every slot is [`Identity`], no hygiene, the hand-off's default sizes.
    pub fn new() -> Self {
        Self {
            client_ip: Identity::new(),
            origin: Identity::new(),
            auth: Identity::new(),
            conn_limit: Identity::new(),
            sockets: SocketGuard::new(),
        }
    }
}

impl<Ip, Or, Auth, Lim, Rate, Val> fmt::Debug for Guard<Ip, Or, Auth, Lim, Rate, Val>
where
    Ip: fmt::Debug,
    Or: fmt::Debug,
    Auth: fmt::Debug,
    Lim: fmt::Debug,
    Rate: fmt::Debug,
    Val: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("client_ip", &self.client_ip)
            .field("origin", &self.origin)
            .field("auth", &self.auth)
            .field("conn_limit", &self.conn_limit)
            .field("sockets", &self.sockets)
            .finish()
    }
}

impl<Ip, Or, Auth, Lim, Rate, Val> Guard<Ip, Or, Auth, Lim, Rate, Val> {
    /// The client-IP layer (usually `wsguard::client_ip::ClientIpLayer`), outermost.
    pub fn client_ip<L>(self, layer: L) -> Guard<L, Or, Auth, Lim, Rate, Val> {
        Guard {
            client_ip: layer,
            origin: self.origin,
            auth: self.auth,
            conn_limit: self.conn_limit,
            sockets: self.sockets,
        }
    }

    /// The Origin check (usually `wsguard::origin::OriginGuardLayer`), after the client IP.
    pub fn origin<L>(self, layer: L) -> Guard<Ip, L, Auth, Lim, Rate, Val> {
        Guard {
            client_ip: self.client_ip,
            origin: layer,
            auth: self.auth,
            conn_limit: self.conn_limit,
            sockets: self.sockets,
        }
    }

    /// Authentication (usually `wsguard::jwt_auth::JwtAuthLayer`), after the Origin check.
    pub fn auth<L>(self, layer: L) -> Guard<Ip, Or, L, Lim, Rate, Val> {
        Guard {
            client_ip: self.client_ip,
            origin: self.origin,
            auth: layer,
            conn_limit: self.conn_limit,
            sockets: self.sockets,
        }
    }

    /// The connection limit (usually `wsguard::conn_limit::ConnLimitLayer`), innermost on
    /// the handshake.
    pub fn conn_limit<L>(self, layer: L) -> Guard<Ip, Or, Auth, L, Rate, Val> {
        Guard {
            client_ip: self.client_ip,
            origin: self.origin,
            auth: self.auth,
            conn_limit: layer,
            sockets: self.sockets,
        }
    }

    /// The message rate limit: see [`SocketGuard::rate_limit`].
    pub fn rate_limit<L>(self, layer: L) -> Guard<Ip, Or, Auth, Lim, L, Val> {
        Guard {
            client_ip: self.client_ip,
            origin: self.origin,
            auth: self.auth,
            conn_limit: self.conn_limit,
            sockets: self.sockets.rate_limit(layer),
        }
    }

    /// Message validation: see [`SocketGuard::validate`].
    pub fn validate<L>(self, layer: L) -> Guard<Ip, Or, Auth, Lim, Rate, L> {
        Guard {
            client_ip: self.client_ip,
            origin: self.origin,
            auth: self.auth,
            conn_limit: self.conn_limit,
            sockets: self.sockets.validate(layer),
        }
    }

    /// Connection hygiene: see [`SocketGuard::hygiene`].
    pub fn hygiene(mut self, hygiene: Hygiene) -> Self {
        self.sockets = self.sockets.hygiene(hygiene);
        self
    }

    /// The largest message: see [`SocketGuard::max_message_size`].
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.sockets = self.sockets.max_message_size(max);
        self
    }

    /// The handshake layers, stacked client IP, Origin, authentication, connection limit
    /// (outermost first). Put it in front of the WebSocket route.
    #[allow(clippy::type_complexity)]
    pub fn handshake(&self) -> Stack<Lim, Stack<Auth, Stack<Or, Ip>>>
    where
        Ip: Clone,
        Or: Clone,
        Auth: Clone,
        Lim: Clone,
    {
        Stack::new(
            self.conn_limit.clone(),
            Stack::new(
                self.auth.clone(),
                Stack::new(self.origin.clone(), self.client_ip.clone()),
            ),
        )
    }

    /// The socket half: what the WebSocket handler keeps to guard each upgraded socket.
    pub fn socket_guard(&self) -> SocketGuard<Rate, Val>
    where
        Rate: Clone,
        Val: Clone,
    {
        self.sockets.clone()
    }
}

/// What guards each upgraded socket: the message plane's layers (rate limit, then
/// validation), connection hygiene, and the message size limit given to the upgrade.
///
/// Built alone or as the second half of a [`Guard`] ([`Guard::socket_guard`]). Cheap to
/// clone when its layers are (keep one in axum's state). Type parameters: the rate limit and
/// the validation layer, each tower's [`Identity`] until set.
///
/// ```
/// # #[cfg(feature = "full")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wsguard::{
///     conn_limit::Hygiene,
///     msg_rate::{rate, Budget, MessageRateLimitLayer},
///     SocketGuard,
/// };
///
/// let sockets = SocketGuard::new()
///     .rate_limit(MessageRateLimitLayer::new().per_connection(
///         Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(20)),
///     )?)
///     .hygiene(Hygiene::new().idle_timeout(Duration::from_secs(300)))
///     .max_message_size(64 * 1024);
/// let _: SocketGuard<MessageRateLimitLayer> = sockets;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "full"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
#[must_use]
pub struct SocketGuard<Rate = Identity, Val = Identity> {
    rate_limit: Rate,
    validate: Val,
    hygiene: Option<Hygiene>,
    max_message_size: Option<usize>,
}

impl Default for SocketGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl SocketGuard {
    /// No message-plane layer, the default hygiene, the hand-off's default sizes.
    pub fn new() -> Self {
        Self {
            rate_limit: Identity::new(),
            validate: Identity::new(),
            hygiene: None,
            max_message_size: None,
        }
    }
}

impl<Rate: fmt::Debug, Val: fmt::Debug> fmt::Debug for SocketGuard<Rate, Val> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketGuard")
            .field("rate_limit", &self.rate_limit)
            .field("validate", &self.validate)
            .field("hygiene", &self.hygiene)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl<Rate, Val> SocketGuard<Rate, Val> {
    /// The message rate limit (usually `wsguard::msg_rate::MessageRateLimitLayer`), first on
    /// the message plane.
    pub fn rate_limit<L>(self, layer: L) -> SocketGuard<L, Val> {
        SocketGuard {
            rate_limit: layer,
            validate: self.validate,
            hygiene: self.hygiene,
            max_message_size: self.max_message_size,
        }
    }

    /// Message validation and per-message authorization (usually
    /// `wsguard::schema_validate::ValidateMessageLayer`), after the rate limit.
    pub fn validate<L>(self, layer: L) -> SocketGuard<Rate, L> {
        SocketGuard {
            rate_limit: self.rate_limit,
            validate: layer,
            hygiene: self.hygiene,
            max_message_size: self.max_message_size,
        }
    }

    /// Connection hygiene: idle timeout, lifetime, heartbeat, graceful shutdown. Default:
    /// [`Hygiene::new`] (sockets live at most one hour).
    pub fn hygiene(mut self, hygiene: Hygiene) -> Self {
        self.hygiene = Some(hygiene);
        self
    }

    /// The largest message the application gets (give the validation layer the same
    /// limit). Default: the hand-off's, `wsguard_core::DEFAULT_MAX_MESSAGE_SIZE` (64 KiB).
    ///
    /// The WebSocket transport gets the same limit for messages and frames: a larger message
    /// is refused while it arrives (never buffered whole), and the socket is closed with
    /// 1009.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = Some(max);
        self
    }

    /// The message-plane layers, rate limit first, then validation.
    pub fn messages(&self) -> Stack<Val, Rate>
    where
        Rate: Clone,
        Val: Clone,
    {
        Stack::new(self.validate.clone(), self.rate_limit.clone())
    }

    /// Guards an upgraded socket: hygiene on the raw socket, then the message plane.
    #[allow(clippy::type_complexity)]
    pub fn socket<S>(
        &self,
        socket: S,
        conn: Connection,
    ) -> GuardedSocket<HygieneSocket<S>, <Stack<Val, Rate> as Layer<Admit>>::Service>
    where
        S: WsSocket,
        Rate: Clone,
        Val: Clone,
        Stack<Val, Rate>: Layer<Admit>,
        <Stack<Val, Rate> as Layer<Admit>>::Service:
            tower_service::Service<Inbound<S::Message>, Response = Verdict<S::Message>>,
    {
        let hygiene = self.hygiene.clone().unwrap_or_default();
        GuardedSocket::layered(hygiene.wrap(socket), conn, &self.messages())
    }
}

#[cfg(feature = "axum")]
impl<Rate, Val> SocketGuard<Rate, Val>
where
    Rate: Clone + Send + 'static,
    Val: Clone + Send + 'static,
    Stack<Val, Rate>: Layer<Admit>,
    <Stack<Val, Rate> as Layer<Admit>>::Service: tower_service::Service<
            Inbound<axum::extract::ws::Message>,
            Response = Verdict<axum::extract::ws::Message>,
        > + Send
        + 'static,
{
    /// Completes an axum upgrade with the message size limits and calls `callback` with the
    /// guarded socket (see [`socket`](Self::socket)).
    ///
    /// If a handshake layer deferred a rejection (close mode), the socket is closed with its
    /// code and `callback` is never called.
    pub fn on_upgrade<F, C, Fut>(
        &self,
        upgrade: crate::axum::GuardedUpgrade<F>,
        callback: C,
    ) -> axum::response::Response
    where
        F: axum::extract::ws::OnFailedUpgrade,
        C: FnOnce(
                GuardedSocket<
                    HygieneSocket<axum::extract::ws::WebSocket>,
                    <Stack<Val, Rate> as Layer<Admit>>::Service,
                >,
            ) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let upgrade = match self.max_message_size {
            Some(max) => upgrade.max_message_size(max).max_frame_size(max),
            None => upgrade,
        };
        let hygiene = self.hygiene.clone().unwrap_or_default();
        let messages = self.messages();
        upgrade.on_upgrade(move |socket, conn| {
            callback(GuardedSocket::layered(
                hygiene.wrap(socket),
                conn,
                &messages,
            ))
        })
    }
}
